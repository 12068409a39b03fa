// http_server.cpp — the routes of `stagformer serve` (http_server.h) on cpp-httplib.
#include "serve/http_server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "infer/generator.h"
#include "serve/api_error.h"
#include "serve/chat_template.h"
#include "serve/engine.h"
#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/web_page.h"

namespace sf::serve {

using nlohmann::json;

namespace {

// A connection's read and write timeouts, and how long stop() waits for the running streams to
// be written out (a client that stopped reading: one write timeout, and then some).
constexpr int kSocketTimeoutS = 30;
constexpr int kStreamsWrittenWaitS = 2 * kSocketTimeoutS;

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(to_json_text(body), "application/json");
}
void send_error(httplib::Response& res, const ApiError& e) { send_json(res, error_body(e), e.status()); }

uint64_t random_u64() {
  static std::mutex m;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard lock(m);
  return rng();
}

std::string response_id(Endpoint endpoint) {
  return fmt::format("{}-{:016x}", endpoint == Endpoint::chat ? "chatcmpl" : "cmpl", random_u64());
}

// A streamed reply's server-sent events, from the engine's thread to the connection's.
class EventChannel {
 public:
  void push(std::string event) {
    {
      std::lock_guard lock(m_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
  }
  void close() {
    {
      std::lock_guard lock(m_);
      closed_ = true;
    }
    cv_.notify_all();
  }
  // Waits up to `wait` for events; returns them (empty on a timeout) and whether more may come.
  std::pair<std::string, bool> take(std::chrono::milliseconds wait) {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, wait, [&] { return closed_ || !events_.empty(); });
    std::string out;
    for (std::string& e : events_) out += e;
    events_.clear();
    return {out, !closed_};
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::string> events_;
  bool closed_ = false;
};

// The status a request that did not end normally answers with.
ApiError abnormal_end(const std::string& finish, const std::string& error) {
  if (finish == "timeout") return ApiError(504, "the request ran past the server's time limit", "", "server_error", "timeout");
  if (finish == "cancelled") return ApiError(499, "the request was cancelled", "", "server_error", "cancelled");
  return ApiError(500, "decoding failed: " + error, "", "server_error");
}

}  // namespace

HttpServer::HttpServer(Engine& engine, ServerOptions options)
    : engine_(engine), options_(std::move(options)), server_(std::make_unique<httplib::Server>()) {
  started_ = static_cast<int64_t>(std::time(nullptr));
  routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  // httplib listens with a backlog of 5 connections waiting to be accepted (its compiled-in
  // default). Clients that connect together (a burst of requests: 16 streaming clients whose
  // replies end at the same moment start their next requests at once) overflow it, and a
  // connection dropped from a full queue is delayed, or reset where the system aborts on
  // overflow. The listening socket gets the system's limit instead (a second listen() sets a
  // socket's backlog).
  int listening = -1;
  server_->set_socket_options([&listening](socket_t sock) {
    httplib::default_socket_options(sock);
    listening = static_cast<int>(sock);
  });
  const int port = options_.port == 0 ? server_->bind_to_any_port(options_.host)
                                      : (server_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  // (The option callback captured a local: httplib keeps it, so put its own back.)
  server_->set_socket_options(httplib::default_socket_options);
  SF_CHECK(port > 0, "serve: cannot listen on {}:{} (in use, or not an address of this machine)",
           options_.host, options_.port);
  if (listening >= 0) ::listen(listening, SOMAXCONN);
  return port;
}

void HttpServer::serve() {
  serving_ = true;
  if (!stop_requested_) server_->listen_after_bind();
  serving_ = false;
}

void HttpServer::stop() {
  engine_.drain();
  {
    // Every event is in its stream's channel now; the connections' threads write them out. A
    // client that does not read is bounded by the write timeout, after which its write fails.
    std::unique_lock lock(streams_mutex_);
    streams_done_.wait_for(lock, std::chrono::seconds(kStreamsWrittenWaitS), [&] { return open_streams_ == 0; });
  }
  stop_requested_ = true;
  // httplib's stop() does nothing until the listener runs: repeated until serve() has returned
  // (a stop() right after the serving thread started would otherwise be lost).
  while (serving_) {
    server_->stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void HttpServer::routes() {
  httplib::Server& s = *server_;
  const int threads = options_.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(options_.max_body_bytes);
  s.set_read_timeout(kSocketTimeoutS, 0);
  s.set_write_timeout(kSocketTimeoutS, 0);
  // Errors httplib answers itself (no such route, a body over the limit) as OpenAI error objects.
  const size_t max_body = options_.max_body_bytes;
  s.set_error_handler([max_body](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = fmt::format("HTTP {}", res.status);
    if (res.status == 404) message = fmt::format("no such endpoint: {} {}", req.method, req.path);
    if (res.status == 413) message = fmt::format("the request body is larger than the limit of {} bytes", max_body);
    if (res.status == 405) message = fmt::format("{} is not allowed on {}", req.method, req.path);
    res.set_content(to_json_text(error_body(ApiError(res.status, message))), "application/json");
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "internal error: " + what, "", "server_error"));
  });
  const std::string key = options_.api_key;
  s.set_pre_routing_handler([key](const httplib::Request& req, httplib::Response& res) {
    // Public: /health, and the page at / (it holds no data, and a browser cannot send a header
    // when it navigates; the API calls the page makes carry the key typed into it).
    const bool page = req.path == "/" && (req.method == "GET" || req.method == "HEAD");
    if (key.empty() || req.path == "/health" || page) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + key) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "",
                             "invalid_request_error", "invalid_api_key"));
    // Answered before httplib reads the body: on a reused connection the unread body would be
    // taken for the start of the next request, so the client is told to open a new one.
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  });

  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = web_page_html();
    // The page loads nothing from elsewhere; the policy makes the browser hold it to that.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'");
    res.set_header("Cache-Control", "no-cache");  // a restarted server's page replaces the old one
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats st = engine_.stats();
    send_json(res, {{"status", "ok"}, {"slots", st.slots}, {"slots_busy", st.busy_slots}, {"queued", st.queued}});
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, {{"object", "list"},
                    {"data", json::array({{{"id", options_.model_name}, {"object", "model"},
                                           {"created", started_}, {"owned_by", "stagformer"}}})}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats st = engine_.stats();
    std::string text;
    auto metric = [&](const char* name, const char* type, const char* help, double value) {
      text += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
    };
    metric("stagformer_requests_total", "counter", "Requests accepted into the queue.", static_cast<double>(st.requests));
    metric("stagformer_prompt_tokens_total", "counter", "Prompt tokens prefilled.", static_cast<double>(st.prompt_tokens));
    metric("stagformer_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(st.generated_tokens));
    metric("stagformer_decode_seconds_total", "counter", "Seconds spent in prefills and decode steps.", st.decode_seconds);
    metric("stagformer_generated_tokens_per_second", "gauge", "Generated tokens per second of decoding, all slots together.",
           st.decode_seconds > 0 ? static_cast<double>(st.generated_tokens) / st.decode_seconds : 0.0);
    metric("stagformer_queue_depth", "gauge", "Requests waiting for a slot.", static_cast<double>(st.queued));
    metric("stagformer_slots_busy", "gauge", "Slots decoding a request.", static_cast<double>(st.busy_slots));
    metric("stagformer_slots", "gauge", "Slots (sequences decoded together).", static_cast<double>(st.slots));
    res.set_content(text, "text/plain; version=0.0.4");
  });
  s.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      const json body = parse_json_object(req.body);
      if (!body.contains("content") || !body["content"].is_string())
        throw bad_field("content", "'content' is required: the text to tokenize");
      send_json(res, {{"tokens", engine_.tokenizer().encode_with_special(body["content"].get<std::string>())}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  s.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      const json body = parse_json_object(req.body);
      if (!body.contains("tokens") || !body["tokens"].is_array())
        throw bad_field("tokens", "'tokens' is required: an array of token ids");
      std::vector<int32_t> ids;
      const int32_t vocab = engine_.tokenizer().vocab_size();
      for (const json& t : body["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab)
          throw bad_field("tokens", fmt::format("token id {} is outside the vocabulary [0, {})", t.dump(), vocab));
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      send_json(res, {{"content", engine_.tokenizer().decode(ids)}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  for (const Endpoint endpoint : {Endpoint::completions, Endpoint::chat}) {
    const char* path = endpoint == Endpoint::chat ? "/v1/chat/completions" : "/v1/completions";
    s.Post(path, [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      try {
        generate(endpoint, req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    });
  }
}

void HttpServer::generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  const Tokenizer& tokenizer = engine_.tokenizer();
  GenerationRequest g;
  EngineRequest er;
  std::string prompt_param = "prompt";
  if (endpoint == Endpoint::completions) {
    const CompletionRequest r = parse_completion_request(req.body);
    g = r.generation;
    er.prompt = r.prompt_is_ids ? r.prompt_ids : prompt_encode(tokenizer, r.prompt_text);
  } else {
    const ChatRequest r = parse_chat_request(req.body);
    g = r.generation;
    er.prompt = prompt_encode(tokenizer, chat_prompt(r.messages));
    for (const std::string& stop : chat_template_stops()) g.stop.push_back(stop);
    er.drop_leading_space = true;
    prompt_param = "messages";
  }
  for (size_t i = 0; i < er.prompt.size(); ++i)
    if (er.prompt[i] >= tokenizer.vocab_size())
      throw bad_field(prompt_param, fmt::format("token id {} at position {} is outside the vocabulary [0, {})",
                                                er.prompt[i], i, tokenizer.vocab_size()));
  check_fits_context(static_cast<int64_t>(er.prompt.size()), g.max_tokens,
                     engine_.context(), prompt_param);
  er.max_tokens = g.max_tokens;
  er.sampling = SamplingOptions{g.sampling.temperature, g.sampling.top_k, g.sampling.top_p,
                                g.sampling.seed ? *g.sampling.seed : random_u64()};
  er.stop = g.stop;
  er.deadline = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(options_.request_timeout_s));
  const ResponseHeader header{response_id(endpoint), static_cast<int64_t>(std::time(nullptr)), options_.model_name};

  if (!g.stream) {
    struct Whole {
      std::string text, finish, error;
      Usage usage;
      std::promise<void> done;
    };
    auto whole = std::make_shared<Whole>();
    EngineSink sink{[whole](const std::string& text) { whole->text += text; },
                    [whole](const std::string& finish, const Usage& usage, const std::string& error) {
                      whole->finish = finish;
                      whole->usage = usage;
                      whole->error = error;
                      whole->done.set_value();
                    }};
    engine_.submit(std::move(er), std::move(sink));  // (a full queue: 503)
    whole->done.get_future().wait();
    if (whole->finish != "stop" && whole->finish != "length") throw abnormal_end(whole->finish, whole->error);
    send_json(res, completion_body(endpoint, header, whole->text, whole->finish, whole->usage));
    return;
  }

  auto channel = std::make_shared<EventChannel>();
  if (endpoint == Endpoint::chat) channel->push(sse_event(completion_chunk(endpoint, header, "", std::nullopt, true)));
  const bool include_usage = g.include_usage;
  EngineSink sink{[channel, endpoint, header](const std::string& text) {
                    channel->push(sse_event(completion_chunk(endpoint, header, text, std::nullopt)));
                  },
                  [channel, endpoint, header, include_usage](const std::string& finish, const Usage& usage,
                                                             const std::string& error) {
                    if (finish == "stop" || finish == "length") {
                      channel->push(sse_event(completion_chunk(endpoint, header, "", finish)));
                      if (include_usage) channel->push(sse_event(usage_chunk(endpoint, header, usage)));
                    } else {
                      channel->push(sse_event(error_body(abnormal_end(finish, error))));
                    }
                    channel->push(kSseDone);
                    channel->close();
                  }};
  std::shared_ptr<RequestHandle> handle = engine_.submit(std::move(er), std::move(sink));  // (503 before any event)
  res.set_header("Cache-Control", "no-cache");
  {
    std::lock_guard lock(streams_mutex_);
    ++open_streams_;
  }
  res.set_chunked_content_provider(
      "text/event-stream",
      [channel, handle](size_t, httplib::DataSink& out) {
        auto [events, more] = channel->take(std::chrono::milliseconds(500));
        // A client that went away: its request is cancelled, which frees its slot (said on
        // stderr: the operator sees why a stream ended early).
        const bool written = events.empty() || out.write(events.data(), events.size());
        if (!written || !out.is_writable()) {
          std::fprintf(stderr, "serve: a stream's client is gone (%s); its request is cancelled\n",
                       written ? "its socket is not writable" : "a write failed");
          handle->cancel();
          return false;
        }
        if (!more) out.done();
        return true;
      },
      [this, handle](bool success) {  // (when the response is destroyed: written out or not)
        if (!success) handle->cancel();
        {
          std::lock_guard lock(streams_mutex_);
          --open_streams_;
        }
        streams_done_.notify_all();
      });
}

}  // namespace sf::serve
