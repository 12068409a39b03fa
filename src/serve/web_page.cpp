// web_page.cpp — the page served at GET / (web_page.h): HTML, CSS and JavaScript in one raw
// string, so there is no build step and nothing to install beside the binary.
//
// What the script does, and why:
// - It calls POST /v1/completions with "stream": true through fetch() and reads the body as
//   server-sent events itself: EventSource can only GET and cannot send the Authorization
//   header. "stream_options": {"include_usage": true} asks for the usage chunk, whose
//   completion_tokens is the exact count behind the final tokens/s (while the reply streams,
//   the count of text chunks stands in for it: about one token each).
// - Stop aborts the fetch; the server sees the connection close and cancels the request, which
//   frees its slot (docs/serving.md, "A client that goes away").
// - The API key typed into the page goes into the Authorization header of its API calls. The
//   page itself is public (like /health): a browser cannot send a header when it navigates.
// - A 64-bit seed is written into the JSON text digit for digit: a JavaScript number is exact
//   only up to 2^53.
// - Every piece of text from the model or the server is set as textContent, never as HTML.
#include "serve/web_page.h"

namespace sf::serve {

namespace {

constexpr std::string_view kPage = R"sfpage(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stagformer serve</title>
<style>
  :root { color-scheme: light dark; --accent: #2563eb; --muted: #6b7280; --border: #9ca3af80; }
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 54rem; margin: 1.5rem auto; padding: 0 1rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  header p { margin: 0 0 1rem; color: var(--muted); }
  label { display: block; font-size: .85rem; color: var(--muted); }
  textarea, input { font: inherit; box-sizing: border-box; width: 100%; padding: .35rem .45rem;
                    border: 1px solid var(--border); border-radius: 4px; background: transparent; color: inherit; }
  textarea { min-height: 6rem; resize: vertical; }
  .settings { display: grid; grid-template-columns: repeat(auto-fit, minmax(7.5rem, 1fr)); gap: .6rem; margin: .7rem 0; }
  .buttons { display: flex; gap: .6rem; }
  button { font: inherit; padding: .4rem 1.3rem; border-radius: 4px; border: 1px solid var(--accent); cursor: pointer; }
  #send { background: var(--accent); color: #fff; }
  #stop { background: transparent; color: inherit; }
  button:disabled { opacity: .45; cursor: default; }
  #output { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, monospace; min-height: 8rem;
            border: 1px solid var(--border); border-radius: 4px; padding: .6rem; margin-top: 1rem; }
  #echo { color: var(--muted); }
  #stats { font-size: .85rem; color: var(--muted); margin-top: .4rem; min-height: 1.3em; font-variant-numeric: tabular-nums; }
  #stats.error { color: #dc2626; }
</style>
</head>
<body>
<header>
  <h1>stagformer serve</h1>
  <p>Model: <span id="model">…</span>. The reply streams from <code>POST /v1/completions</code>; Ctrl+Enter sends.</p>
</header>
<form id="form">
  <label for="prompt">Prompt</label>
  <textarea id="prompt" name="prompt" placeholder="Call me Ishmael." autofocus></textarea>
  <div class="settings">
    <div><label for="max_tokens">max_tokens</label><input id="max_tokens" type="number" min="1" step="1" value="64"></div>
    <div><label for="temperature">temperature</label><input id="temperature" type="number" min="0" max="2" step="0.05" value="0.8"></div>
    <div><label for="top_k">top_k (0: off)</label><input id="top_k" type="number" min="0" step="1" value="40"></div>
    <div><label for="top_p">top_p</label><input id="top_p" type="number" min="0" max="1" step="0.01" value="0.95"></div>
    <div><label for="seed">seed</label><input id="seed" type="text" inputmode="numeric" placeholder="random"></div>
    <div><label for="api_key">API key</label><input id="api_key" type="password" autocomplete="off" placeholder="if required"></div>
  </div>
  <div class="buttons">
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" disabled>Stop</button>
  </div>
</form>
<div id="output" aria-live="polite"><span id="echo"></span><span id="completion"></span></div>
<div id="stats" role="status"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let running = null;  // the AbortController of the request in flight; null when idle

function apiHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

function showStats(text, isError = false) {
  $("stats").textContent = text;
  $("stats").classList.toggle("error", isError);
}

// The model's name; a 401 says the server wants a key.
async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: apiHeaders() });
    if (response.status === 401) {
      $("model").textContent = "? (this server needs an API key)";
      return;
    }
    $("model").textContent = (await response.json()).data[0].id;
  } catch (e) {
    $("model").textContent = "? (the server does not answer)";
  }
}

// The request body: the fields left empty are left out (the server's defaults apply).
function requestBody() {
  const request = { prompt: $("prompt").value, stream: true, stream_options: { include_usage: true } };
  for (const field of ["max_tokens", "temperature", "top_k", "top_p"]) {
    const value = $(field).value.trim();
    if (value !== "") request[field] = Number(value);
  }
  let body = JSON.stringify(request);
  const seed = $("seed").value.trim();
  if (seed !== "") {
    if (!/^-?[0-9]+$/.test(seed)) throw new Error("the seed must be an integer");
    body = body.slice(0, -1) + ',"seed":' + seed + "}";
  }
  return body;
}

const seconds = (ms) => (ms / 1000).toFixed(2);

// Text chunks, finish_reason and usage from one event's data; throws on an error event.
function onEvent(data, state) {
  if (data === "[DONE]") {
    state.done = true;
    return;
  }
  const event = JSON.parse(data);
  if (event.error) throw new Error(event.error.message);
  const choice = event.choices && event.choices[0];
  if (choice && choice.text) {
    $("completion").append(choice.text);
    state.chunks += 1;
    if (state.first === null) state.first = performance.now();
  }
  if (choice && choice.finish_reason) state.finish = choice.finish_reason;
  if (event.usage) state.usage = event.usage;
}

function liveStats(state) {
  const elapsed = performance.now() - state.start;
  const rate = state.chunks / (elapsed / 1000);
  showStats(`${state.chunks} chunks in ${seconds(elapsed)} s: ≈ ${rate.toFixed(1)} tokens/s`);
}

function finalStats(state) {
  const elapsed = performance.now() - state.start;
  const tokens = state.usage ? state.usage.completion_tokens : state.chunks;
  const parts = [`${tokens} tokens in ${seconds(elapsed)} s: ${(tokens / (elapsed / 1000)).toFixed(1)} tokens/s`];
  if (state.first !== null) parts.push(`first text after ${Math.round(state.first - state.start)} ms`);
  if (state.usage) parts.push(`prompt ${state.usage.prompt_tokens} tokens`);
  parts.push(`finish_reason: ${state.finish}`);
  showStats(parts.join(" · "));
}

async function send(submitEvent) {
  submitEvent.preventDefault();
  if (running) return;
  let body;
  try {
    body = requestBody();
  } catch (e) {
    showStats(e.message, true);
    return;
  }
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("echo").textContent = $("prompt").value;
  $("completion").textContent = "";
  showStats("waiting for the first token…");
  const state = { start: performance.now(), first: null, chunks: 0, finish: null, usage: null, done: false };
  try {
    const response = await fetch("/v1/completions", { method: "POST", headers: apiHeaders(), body, signal: running.signal });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message += ": " + (await response.json()).error.message; } catch (e) {}
      throw new Error(message);
    }
    // Server-sent events: blocks separated by a blank line, each with "data: ..." lines.
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value.replace(/\r/g, "");
      let cut;
      while ((cut = pending.indexOf("\n\n")) >= 0) {
        const block = pending.slice(0, cut);
        pending = pending.slice(cut + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
                          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) onEvent(data, state);
      }
      if (!state.done) liveStats(state);
    }
    if (!state.done) throw new Error("the stream ended before data: [DONE]");
    finalStats(state);
  } catch (e) {
    if (e.name === "AbortError") {
      const elapsed = performance.now() - state.start;
      showStats(`stopped after ${state.chunks} chunks in ${seconds(elapsed)} s: ≈ ${(state.chunks / (elapsed / 1000)).toFixed(1)} tokens/s`);
    } else {
      showStats(e.message, true);
    }
  } finally {
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("form").addEventListener("submit", send);
$("stop").addEventListener("click", () => { if (running) running.abort(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
});
$("api_key").addEventListener("change", loadModel);
loadModel();
</script>
</body>
</html>
)sfpage";

}  // namespace

std::string_view web_page_html() { return kPage; }

}  // namespace sf::serve
