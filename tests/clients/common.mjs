// common.mjs — what the client tests share: the server's address and key from the environment
// run_client_test.sh sets, waiting for /health, plain fetch() calls of the API (the reference a
// client's result is checked against), and a time limit on the whole script.

export const baseURL = required("SF_BASE_URL");
export const apiKey = required("SF_API_KEY");
export const modelName = required("SF_MODEL_NAME");

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: run this through tests/clients/run_client_test.sh`);
    process.exit(2);
  }
  return value;
}

// Fails the script if it is still running after `seconds` (a hung client must not wait for
// CTest's limit, so that the driver still stops the server and prints its log).
export function timeLimit(seconds) {
  setTimeout(() => {
    console.error(`FAIL: still running after ${seconds} s`);
    process.exit(1);
  }, seconds * 1000).unref();
}

// Waits until the server answers /health (it listens from the moment it prints its address, but
// a loaded machine may be slow to accept).
export async function waitForHealth(seconds = 30) {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    try {
      const response = await fetch(`${baseURL}/health`);
      if (response.ok && (await response.json()).status === "ok") return;
    } catch (e) {
      // not accepting yet
    }
    if (Date.now() > until) throw new Error(`${baseURL}/health did not answer within ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// A JSON call of the API with the key, by Node's own fetch (not the client under test).
export async function call(path, body = undefined) {
  const response = await fetch(`${baseURL}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}: ${text}`);
  return path === "/metrics" ? text : JSON.parse(text);
}

// Reports a passed check on its own line (the log of `ctest --output-on-failure`).
export function pass(what) {
  console.log(`ok - ${what}`);
}
