// browser_page_test.mjs — the page at / in a real browser: Debian's Chromium, headless, driven
// by puppeteer-core (tests/clients/package.json pins it). The page loads without the API key
// and finds out that the server wants one; with the key typed in, a prompt sent with a seed
// streams its reply into the page (text arriving at several moments, not all at once) and the
// text shown equals what the API gives for the same request; the statistics line shows tokens/s;
// Stop cuts a long reply and the server frees its slot. The page must load nothing from another
// site and throw no script error. A screenshot goes to $SF_ARTIFACTS/serve-page.png.
// Run by run_client_test.sh.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

import { apiKey, baseURL, call, modelName, pass, timeLimit, waitForHealth } from "./common.mjs";

timeLimit(90);
await waitForHealth();

const browser = await puppeteer.launch({
  executablePath: process.env.SF_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 30_000,
  // --no-sandbox: Chromium's sandbox cannot start as root or in most containers, and the page
  // comes from this test's own server. /dev/shm is small in containers.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--no-default-browser-check"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 760 });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`script error: ${e.message}`));
  page.on("console", (m) => {
    // The one expected complaint: /v1/models answering 401 before the key is typed in.
    const expected = m.text().includes("401") && (m.location().url || "").endsWith("/v1/models");
    if (m.type() === "error" && !expected) problems.push(`console error: ${m.text()}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(`${baseURL}/`)) problems.push(`a request to another site: ${r.url()}`);
  });
  const byId = (id) => page.$eval(`#${id}`, (e) => e.textContent);
  const idle = () => page.waitForFunction(() => !document.getElementById("send").disabled, { timeout: 60_000 });
  const setField = async (id, value) => {
    await page.$eval(`#${id}`, (e) => { e.value = ""; });
    await page.type(`#${id}`, String(value));
  };

  // ---- the page loads without the key, and says the server wants one ----
  const response = await page.goto(`${baseURL}/`, { waitUntil: "load" });
  assert.equal(response.status(), 200);
  assert.equal(response.headers()["content-type"], "text/html; charset=utf-8");
  await page.waitForFunction(() => document.getElementById("model").textContent.includes("API key"), { timeout: 10_000 });
  pass("GET / loads without the key; the page says the server needs one");

  // ---- the key typed in: the model's name appears (the field's change event) ----
  await page.type("#api_key", apiKey);
  await page.click("#prompt");
  await page.waitForFunction((name) => document.getElementById("model").textContent === name, { timeout: 10_000 }, modelName);
  pass(`with the key the page names the model '${modelName}'`);

  // ---- a seeded request streams into the page; the text equals the API's for that request ----
  // 192 tokens: about half a second of the tiny model on a CPU, so that a browser starved of the
  // CPU for a moment (a busy CI machine) still sees the reply arrive in pieces (48 tokens, about
  // 0.1 s, once arrived all at one moment).
  const request = { prompt: "Call me", max_tokens: 192, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 };
  await page.type("#prompt", request.prompt);
  for (const field of ["max_tokens", "temperature", "top_k", "top_p", "seed"]) await setField(field, request[field]);
  // Count the moments text arrives: a page that showed the reply only at its end would have one.
  await page.evaluate(() => {
    window.arrivals = 0;
    new MutationObserver(() => { window.arrivals += 1; }).observe(document.getElementById("completion"), { childList: true });
  });
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("completion").textContent.length > 0, { timeout: 30_000 });
  pass("streamed text appears in the page");
  await idle();
  const shown = await byId("completion");
  const stats = await byId("stats");
  const arrivals = await page.evaluate(() => window.arrivals);
  const reference = await call("/v1/completions", request);
  assert.equal(shown, reference.choices[0].text, "the page shows other text than the API gives for the same request");
  assert.equal(await byId("echo"), request.prompt);
  assert.ok(arrivals >= 2, `the reply arrived at ${arrivals} moment(s): not streamed`);
  assert.match(stats, new RegExp(`^${reference.usage.completion_tokens} tokens in [0-9.]+ s: [0-9.]+ tokens/s`), stats);
  assert.match(stats, new RegExp(`finish_reason: ${reference.choices[0].finish_reason}$`), stats);
  pass(`the page's text (${shown.length} characters, arriving at ${arrivals} moments) equals the API's; stats: ${stats}`);

  if (process.env.SF_ARTIFACTS) {
    mkdirSync(process.env.SF_ARTIFACTS, { recursive: true });
    const file = path.resolve(process.env.SF_ARTIFACTS, "serve-page.png");
    await page.screenshot({ path: file, fullPage: true });
    console.log(`screenshot: ${file}`);
  }

  // ---- Stop cuts a long reply, and the server frees the slot ----
  // Greedy decoding of this barely trained model runs to max_tokens (seconds on one thread).
  const generated = async () => Number((await call("/metrics")).match(/^stagformer_generated_tokens_total (\S+)$/m)[1]);
  const before = await generated();
  await setField("max_tokens", 1000);
  await setField("temperature", 0);
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("completion").textContent.length >= 5, { timeout: 30_000 });
  await page.click("#stop");
  await idle();
  const stopped = await byId("stats");
  assert.match(stopped, /^stopped after [0-9]+ chunks/, `Stop did not stop the reply: ${stopped}`);
  let health = await call("/health");
  for (let i = 0; i < 100 && health.slots_busy > 0; ++i) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    health = await call("/health");
  }
  assert.equal(health.slots_busy, 0, "the stopped request still holds its slot after 10 s");
  const cut = (await generated()) - before;
  assert.ok(cut < 1000, `the stopped request ran to its end (${cut} tokens)`);
  pass(`Stop: ${stopped}; the server cancelled the request after ${cut} of 1000 tokens and freed its slot`);

  assert.deepEqual(problems, [], "the page misbehaved");
  pass("no script error, no request to another site");
} finally {
  await browser.close();
}
console.log("headless Chromium: all checks passed");
