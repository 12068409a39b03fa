// openai_client_test.mjs — the official `openai` npm package (tests/clients/package.json pins it)
// against `stagformer serve`: what an application written for OpenAI's API sees. A completion,
// the same completion streamed (at temperature 0 the streamed text equals the whole text, and the
// usage chunk equals the whole usage), a streamed chat whose pieces concatenate to the whole
// chat reply, /v1/models, and OpenAI's error objects turned by the package into its own errors
// (a wrong key, a field out of range). Run by run_client_test.sh.
import assert from "node:assert/strict";
import OpenAI from "openai";

import { apiKey, baseURL, modelName, pass, timeLimit, waitForHealth } from "./common.mjs";

timeLimit(90);
await waitForHealth();
// No retries: a failed request must fail the test, not be repeated until it passes.
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

// ---- /v1/models ----
const models = await client.models.list();
assert.deepEqual(models.data.map((m) => m.id), [modelName]);
pass("models.list() names the served model");

// ---- a completion, whole ----
const prompt = "The server streams each token";
const params = { model: modelName, prompt, max_tokens: 24, temperature: 0 };
const whole = await client.completions.create(params);
assert.equal(whole.object, "text_completion");
assert.equal(whole.model, modelName);
assert.equal(whole.choices.length, 1);
const text = whole.choices[0].text;
const finish = whole.choices[0].finish_reason;
assert.ok(text.length > 0, "the completion's text is empty");
assert.ok(["stop", "length"].includes(finish), `finish_reason ${finish}`);
// A byte-level model: one prompt token per UTF-8 byte.
assert.equal(whole.usage.prompt_tokens, Buffer.byteLength(prompt));
assert.ok(whole.usage.completion_tokens >= 1 && whole.usage.completion_tokens <= 24);
if (finish === "length") assert.equal(whole.usage.completion_tokens, 24);
assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);
pass(`completions.create(): ${whole.usage.completion_tokens} tokens, finish_reason ${finish}`);

// ---- the same completion, streamed: the same text, finish_reason and usage ----
const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
let streamed = "";
let chunks = 0;
let streamedFinish = null;
let streamedUsage = null;
for await (const chunk of stream) {
  assert.equal(chunk.object, "text_completion");
  if (chunk.choices.length > 0) {
    streamed += chunk.choices[0].text;
    chunks += chunk.choices[0].text ? 1 : 0;
    streamedFinish = chunk.choices[0].finish_reason ?? streamedFinish;
  }
  if (chunk.usage) streamedUsage = chunk.usage;
}
assert.ok(chunks >= 2, `the completion came in ${chunks} text chunk(s), not streamed`);
assert.equal(streamed, text, "at temperature 0 the streamed text differs from the whole text");
assert.equal(streamedFinish, finish);
assert.deepEqual(streamedUsage, whole.usage);
pass(`completions.create({stream: true}): ${chunks} chunks, the same text, finish_reason and usage`);

// ---- a chat, streamed: the pieces concatenate to the whole reply ----
const chatParams = {
  model: modelName,
  messages: [
    { role: "system", content: "You answer briefly." },
    { role: "user", content: "Where is the whale?" },
  ],
  max_tokens: 24,
  temperature: 0,
};
const chatStream = await client.chat.completions.create({ ...chatParams, stream: true, stream_options: { include_usage: true } });
const pieces = [];
let role = null;
let chatFinish = null;
let chatUsage = null;
for await (const chunk of chatStream) {
  assert.equal(chunk.object, "chat.completion.chunk");
  const choice = chunk.choices[0];
  if (choice) {
    role = choice.delta.role ?? role;
    if (choice.delta.content) pieces.push(choice.delta.content);
    chatFinish = choice.finish_reason ?? chatFinish;
  }
  if (chunk.usage) chatUsage = chunk.usage;
}
assert.equal(role, "assistant");
assert.ok(pieces.length >= 2, `the chat reply came in ${pieces.length} piece(s), not streamed`);
assert.ok(["stop", "length"].includes(chatFinish), `finish_reason ${chatFinish}`);
assert.ok(chatUsage && chatUsage.completion_tokens >= 1 && chatUsage.prompt_tokens > 0, "no usage chunk");
const chatWhole = await client.chat.completions.create(chatParams);
assert.equal(chatWhole.object, "chat.completion");
assert.equal(chatWhole.choices[0].message.role, "assistant");
assert.equal(pieces.join(""), chatWhole.choices[0].message.content, "the streamed chat pieces differ from the whole reply");
assert.equal(chatFinish, chatWhole.choices[0].finish_reason);
assert.deepEqual(chatUsage, chatWhole.usage);
pass(`chat.completions.create({stream: true}): ${pieces.length} pieces concatenate to the whole reply`);

// ---- errors, as the package's own error classes ----
const stranger = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "wrong-key", maxRetries: 0 });
await assert.rejects(stranger.completions.create(params), (e) => {
  assert.ok(e instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${e}`);
  assert.equal(e.status, 401, e.message);
  assert.equal(e.code, "invalid_api_key", e.message);
  return true;
});
await assert.rejects(client.completions.create({ ...params, max_tokens: 5000 }), (e) => {
  assert.ok(e instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${e}`);
  assert.equal(e.status, 400, e.message);
  assert.equal(e.param, "max_tokens", e.message);
  return true;
});
pass("a wrong key is an AuthenticationError (401), max_tokens beyond the context a BadRequestError naming it");
console.log("openai package: all checks passed");
