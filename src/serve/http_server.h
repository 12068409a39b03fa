// http_server.h — `stagformer serve`'s HTTP API over the engine (engine.h), on cpp-httplib:
// OpenAI's POST /v1/completions and /v1/chat/completions (whole or streamed as server-sent
// events), GET /v1/models, GET /health, GET /metrics (Prometheus text), POST /tokenize and
// /detokenize (llama.cpp's shapes: {"content"} <-> {"tokens"}), and GET / — a page to try the
// model in a browser (web_page.h).
//
// Every error is OpenAI's error object with a 4xx/5xx status (api_error.h): a malformed or
// oversized body, an unknown path, a missing or wrong API key (401; every endpoint but
// /health and the page at /), a full queue (503). A streamed request whose client goes away is
// cancelled, which frees its slot.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "serve/openai_response.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace sf::serve {

class Engine;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (bind() says which)
  std::string api_key;              // "": none
  size_t max_body_bytes = 1 << 20;  // larger bodies get 413
  double request_timeout_s = 600;   // a request still running after this ends ("timeout")
  std::string model_name = "stagformer";  // what /v1/models and the responses call the model
  int threads = 64;                 // connections served at once
};

class HttpServer {
 public:
  HttpServer(Engine& engine, ServerOptions options);
  ~HttpServer();

  // Binds host:port; returns the port. Throws sf::Error naming host:port when it cannot.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void serve();
  // Stops accepting requests: the engine drains the running ones, their streams are written
  // out (httplib cuts a stream short once its listener closes), then the listener closes and
  // serve() returns (also when serve() had not started listening yet).
  void stop();

 private:
  void routes();
  // POST /v1/completions or /v1/chat/completions; throws ApiError for what the client can fix.
  void generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  Engine& engine_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int64_t started_ = 0;  // Unix seconds
  std::atomic<bool> serving_{false}, stop_requested_{false};
  // Streamed responses not yet written out (their content providers' releasers count down).
  std::mutex streams_mutex_;
  std::condition_variable streams_done_;
  int open_streams_ = 0;
};

}  // namespace sf::serve
