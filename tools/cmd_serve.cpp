// cmd_serve.cpp — `stagformer serve`: a model behind the OpenAI-compatible HTTP API
// (src/serve/, docs/serving.md). SIGTERM or SIGINT drains the running requests and exits.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cli_common.h"
#include "commands.h"
#include "model_run_options.h"
#include "core/error.h"
#include "infer/decode_schedule.h"
#include "infer/generator.h"
#include "serve/engine.h"
#include "serve/http_server.h"

namespace sf::cli {

namespace {

struct ServeArgs {
  ModelRunArgs model;
  std::string decode = "staggered", model_name;
  serve::ServerOptions server;
  // (The engine's defaults, so that --help shows them.)
  int64_t slots = serve::EngineOptions{}.slots, queue_limit = serve::EngineOptions{}.queue_limit,
          prefill_tokens = serve::EngineOptions{}.prefill_tokens;
  int64_t ctx = 0;
  bool ctx_given = false;  // --ctx on the command line (else the model's max_seq_len)
};

void run(ServeArgs& a) {
  // SIGTERM and SIGINT go to one thread that stops the server (a handler may not): blocked
  // first, before any thread (OpenMP's, the engine's, the server's) starts, so every thread
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (a.server.api_key.empty())
    if (const char* key = std::getenv("STAGFORMER_API_KEY")) a.server.api_key = key;
  SF_CHECK(a.server.port >= 0 && a.server.port <= 65535, "--port must be in [0, 65535], got {}", a.server.port);
  SF_CHECK(a.server.request_timeout_s > 0, "--timeout must be > 0 seconds, got {}", a.server.request_timeout_s);
  // Before the model loads (it may take a while); the upper limit needs the model (the engine).
  SF_CHECK(!a.ctx_given || a.ctx > 0, "--ctx must be > 0 tokens, got {}", a.ctx);
  ModelToRun running = load_model_to_run(a.model);
  const ThreadChoice& threads = running.threads;
  LoadedModel& loaded = running.loaded;
  const DecodeMode mode = decode_mode_from_string(a.decode);
  (void)DecodeSchedule(loaded.config, mode);  // a mode the model cannot run: one clear error
  a.server.model_name = a.model_name.empty() ? a.model.model_path : a.model_name;

  serve::EngineOptions engine_options{a.slots, a.queue_limit, mode};
  if (a.ctx_given) engine_options.context = a.ctx;
  engine_options.prefill_tokens = a.prefill_tokens;
  serve::Engine engine(*loaded.model, *loaded.tokenizer, engine_options);
  serve::HttpServer server(engine, a.server);
  const int port = server.bind();
  std::fprintf(stderr,
               "serve: %s on http://%s:%d (%lld slots of %lld tokens, decoder %.1f MiB, decode %s, %s, "
               "threads %s)%s; Ctrl-C or SIGTERM drains the requests and stops\n",
               a.server.model_name.c_str(), a.server.host.c_str(), port, static_cast<long long>(a.slots),
               static_cast<long long>(engine.context()), static_cast<double>(engine.decoder_bytes()) / (1 << 20),
               a.decode.c_str(), a.model.device.c_str(),
               threads.note.empty() ? std::to_string(threads.threads).c_str() : threads.note.c_str(),
               a.server.api_key.empty() ? "" : ", API key required");
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    std::fprintf(stderr, "serve: %s: finishing the running requests\n", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  });
  server.serve();
  // serve() returned: stopped by the signal thread (it is done), or the listener failed.
  if (stopper.joinable()) {
    pthread_kill(stopper.native_handle(), SIGTERM);  // (a no-op once it has run)
    stopper.join();
  }
  std::fprintf(stderr, "serve: stopped\n");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve a model over an OpenAI-compatible HTTP API: POST /v1/completions and "
      "/v1/chat/completions (streamed with \"stream\": true), GET /v1/models, /health, /metrics, "
      "POST /tokenize and /detokenize. Requests share --slots sequences decoded together. "
      "docs/serving.md has the details.");
  add_model_run_options(cmd, a->model);
  cmd->add_option("--host", a->server.host, "address to listen on (127.0.0.1: this machine only)")
      ->capture_default_str();
  cmd->add_option("--port", a->server.port, "port to listen on (0: any free port, printed)")->capture_default_str();
  cmd->add_option("--slots", a->slots, "requests decoded together (the decoder's batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  CLI::Option* ctx = cmd->add_option(
      "--ctx", a->ctx,
      "tokens each slot may hold, prompt and reply (default: the model's max_seq_len, the most "
      "it may be): the decoder's memory is allocated for it; longer requests get 400");
  cmd->add_option("--prefill-tokens", a->prefill_tokens,
                  "prompt tokens prefilled per turn while other requests decode (at least one "
                  "request a turn): bounds the pause new arrivals put in the running streams")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--queue", a->queue_limit, "requests that may wait for a slot; more get 503")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  cmd->add_option("--timeout", a->server.request_timeout_s, "seconds a request may run before it ends (504)")
      ->capture_default_str();
  cmd->add_option("--max-body", a->server.max_body_bytes, "largest request body in bytes (413 beyond)")
      ->capture_default_str();
  cmd->add_option("--api-key", a->server.api_key,
                  "require 'Authorization: Bearer KEY' on every endpoint but /health and the page at / (default: "
                  "$STAGFORMER_API_KEY, else none)");
  cmd->add_option("--name", a->model_name, "the model's name in /v1/models and responses (default: MODEL)");
  cmd->add_option("--decode", a->decode, "staggered, sequential or recurrent (shared-weight models)")
      ->capture_default_str()
      ->check(CLI::IsMember({"staggered", "sequential", "recurrent"}));
  cmd->callback([a, ctx] {
    a->ctx_given = ctx->count() > 0;
    run(*a);
  });
}

}  // namespace sf::cli
