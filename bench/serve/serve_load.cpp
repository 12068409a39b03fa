// serve_load.cpp — serve_load_bench: a load generator for `stagformer serve` (or any server of
// OpenAI's completions API). C concurrent clients each send R streamed /v1/completions requests
// one after the other, all with one fixed prompt; it measures each request's time to first
// token (TTFT: request sent -> first event carrying text) and its inter-token latencies (ITL: the
// gaps between consecutive events carrying text), and prints p50/p99 of both and the generated
// tokens per second over the wall time, as one markdown table row and as JSON.
//
// Tokens are counted from each reply's usage chunk (stream_options.include_usage), not from its
// events: the server releases text at UTF-8 character boundaries, so a token that ends inside a
// character shares an event with the next one. The server ends a reply at end-of-text, so a
// request may generate fewer than max_tokens; those are counted and reported ("ended early").
#include <httplib.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 8080;
  int clients = 1;
  int requests = 4;  // per client
  int prompt_tokens = 64;
  int max_tokens = 64;
  double temperature = 0.0;
  uint64_t seed = 1;
  int warmup = 1;  // requests sent (one at a time) before the timed ones
  std::string api_key;
  std::string json_path;  // also write the JSON here
  bool header = false;    // print the markdown table's header first
};

// What one request measured.
struct Sample {
  bool ok = false;
  std::string error;
  double ttft = 0.0;         // seconds
  std::vector<double> itl;   // seconds between text events
  int64_t tokens = 0;        // usage.completion_tokens
  int64_t events = 0;        // events carrying text
  std::string finish;        // "length", or "stop" when end-of-text came first
};

// The value below which a fraction q of the sorted samples lie, interpolated linearly between
// neighbours (numpy's default), so that p99 of a few hundred samples is not just the maximum.
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(at));
  const size_t above = std::min(below + 1, v.size() - 1);
  return v[below] + (at - static_cast<double>(below)) * (v[above] - v[below]);
}

double mean(const std::vector<double>& v) {
  return v.empty() ? std::nan("") : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

httplib::Client make_client(const Options& o) {
  httplib::Client c(o.host, o.port);
  c.set_read_timeout(3600, 0);  // a request may wait long in the queue under load
  c.set_write_timeout(60, 0);
  if (!o.api_key.empty()) c.set_bearer_token_auth(o.api_key);
  return c;
}

// Prompt ids of exactly `count` tokens, from the server's own tokenizer (/tokenize), so that every
// request prefills the same number of positions whatever the tokenizer. The text is a passage
// repeated as often as needed.
std::vector<int64_t> make_prompt(const Options& o) {
  static const std::string passage =
      "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in "
      "my purse, and nothing particular to interest me on shore, I thought I would sail about a "
      "little and see the watery part of the world. ";
  std::string text;
  std::vector<int64_t> ids;
  auto client = make_client(o);
  while (static_cast<int>(ids.size()) < o.prompt_tokens) {
    text += passage;
    auto r = client.Post("/tokenize", json{{"content", text}}.dump(), "application/json");
    if (!r || r->status != 200)
      throw std::runtime_error("POST /tokenize failed: " +
                               (r ? std::to_string(r->status) + " " + r->body : httplib::to_string(r.error())));
    ids = json::parse(r->body).at("tokens").get<std::vector<int64_t>>();
  }
  ids.resize(static_cast<size_t>(o.prompt_tokens));
  return ids;
}

// One streamed completion, timed. Server-sent events arrive in pieces of any size: bytes are
// buffered and each event ("data: ...\n\n") is handled, and timed, when its end arrives.
Sample run_request(httplib::Client& client, const std::string& body) {
  Sample s;
  std::string buffer;
  Clock::time_point start, last;
  bool seen_text = false;
  const auto on_event = [&](const std::string& payload, Clock::time_point at) {
    if (payload == "[DONE]") return;
    const json e = json::parse(payload, nullptr, false);
    if (e.is_discarded()) return;
    if (e.contains("error")) {
      s.error = e["error"].value("message", payload);
      return;
    }
    if (e.contains("usage") && e["usage"].is_object()) s.tokens = e["usage"].value("completion_tokens", 0);
    if (!e.contains("choices") || e["choices"].empty()) return;
    const json& choice = e["choices"][0];
    if (choice.contains("finish_reason") && choice["finish_reason"].is_string())
      s.finish = choice["finish_reason"].get<std::string>();
    if (choice.value("text", std::string()).empty()) return;
    ++s.events;
    if (!seen_text) s.ttft = std::chrono::duration<double>(at - start).count();
    else s.itl.push_back(std::chrono::duration<double>(at - last).count());
    seen_text = true;
    last = at;
  };
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const Clock::time_point at = Clock::now();
    buffer.append(data, size);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) on_event(event.substr(6), at);
    }
    return true;
  };
  start = Clock::now();
  const httplib::Result r = client.send(req);
  if (!r) {
    s.error = "no response: " + httplib::to_string(r.error());
  } else if (r->status != 200) {
    s.error = "HTTP " + std::to_string(r->status) + ": " + r->body;
  } else if (s.error.empty()) {
    s.ok = true;
  }
  return s;
}

// CPU seconds this process has used (user and system, every thread): the client's own share of
// the machine, which serve_load.sh subtracts to see what other work ran during a run.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

json summary(const Options& o, const std::vector<Sample>& samples, double wall) {
  std::vector<double> ttft, itl;
  int64_t tokens = 0, events = 0, failed = 0, early = 0;
  std::string first_error;
  for (const Sample& s : samples) {
    if (!s.ok) {
      ++failed;
      if (first_error.empty()) first_error = s.error;
      continue;
    }
    ttft.push_back(s.ttft * 1e3);
    for (double g : s.itl) itl.push_back(g * 1e3);
    tokens += s.tokens;
    events += s.events;
    if (s.tokens < o.max_tokens) ++early;
  }
  json j = {{"clients", o.clients},
            {"requests_per_client", o.requests},
            {"prompt_tokens", o.prompt_tokens},
            {"max_tokens", o.max_tokens},
            {"temperature", o.temperature},
            {"requests", samples.size()},
            {"failed", failed},
            {"ended_early", early},
            {"generated_tokens", tokens},
            {"text_events", events},
            {"wall_s", wall},
            {"tokens_per_s", static_cast<double>(tokens) / wall},
            {"client_cpu_s", cpu_seconds()},
            {"ttft_ms", {{"p50", percentile(ttft, 0.5)}, {"p99", percentile(ttft, 0.99)}, {"mean", mean(ttft)}}},
            {"itl_ms", {{"p50", percentile(itl, 0.5)}, {"p99", percentile(itl, 0.99)}, {"mean", mean(itl)}}}};
  if (!first_error.empty()) j["first_error"] = first_error;
  return j;
}

void print_row(const json& j, bool header) {
  if (header) {
    std::printf("| clients | requests | prompt | max_tokens | generated | ended early | failed | wall s | tokens/s | "
                "TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n");
    std::printf("| ------: | -------: | -----: | ---------: | --------: | ----------: | -----: | -----: | -------: | "
                "----------: | ----------: | ---------: | ---------: |\n");
  }
  std::printf("| %d | %lld | %d | %d | %lld | %lld | %lld | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
              j["clients"].get<int>(), j["requests"].get<long long>(), j["prompt_tokens"].get<int>(),
              j["max_tokens"].get<int>(), j["generated_tokens"].get<long long>(), j["ended_early"].get<long long>(),
              j["failed"].get<long long>(),
              j["wall_s"].get<double>(), j["tokens_per_s"].get<double>(), j["ttft_ms"]["p50"].get<double>(),
              j["ttft_ms"]["p99"].get<double>(), j["itl_ms"]["p50"].get<double>(), j["itl_ms"]["p99"].get<double>());
}

int run(const Options& o) {
  std::vector<int64_t> prompt = make_prompt(o);
  json body = {{"prompt", prompt},
               {"max_tokens", o.max_tokens},
               {"temperature", o.temperature},
               {"seed", o.seed},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  const std::string request = body.dump();
  // Warm-up: the server's first requests pay for lazily allocated buffers and cold caches.
  for (int i = 0; i < o.warmup; ++i) {
    auto client = make_client(o);
    const Sample s = run_request(client, request);
    if (!s.ok) {
      std::fprintf(stderr, "serve_load_bench: the warm-up request failed: %s\n", s.error.c_str());
      return 1;
    }
  }
  std::vector<Sample> samples(static_cast<size_t>(o.clients) * static_cast<size_t>(o.requests));
  // Every client starts at once: each waits until all threads exist.
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c)
    threads.emplace_back([&, c] {
      auto client = make_client(o);  // one client per thread (a connection per request: httplib's default)
      ++ready;
      while (!go) std::this_thread::yield();
      for (int r = 0; r < o.requests; ++r)
        samples[static_cast<size_t>(c) * static_cast<size_t>(o.requests) + static_cast<size_t>(r)] =
            run_request(client, request);
    });
  while (ready < o.clients) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  go = true;
  for (std::thread& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  const json j = summary(o, samples, wall);
  print_row(j, o.header);
  std::fprintf(stderr, "%s\n", j.dump().c_str());
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << j.dump(2) << "\n";
  }
  if (j["failed"].get<int64_t>() > 0) {
    std::fprintf(stderr, "serve_load_bench: %lld requests failed; the first: %s\n",
                 j["failed"].get<long long>(), j["first_error"].get<std::string>().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "serve_load_bench: C concurrent clients, each sending R streamed /v1/completions requests of one "
      "fixed prompt; prints TTFT and inter-token latency (p50, p99) and total generated tokens/s as a "
      "markdown row (stdout) and JSON (stderr, and --json FILE)."};
  app.add_option("--host", o.host, "server address")->capture_default_str();
  app.add_option("--port", o.port, "server port")->required();
  app.add_option("-c,--clients", o.clients, "concurrent clients")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("-r,--requests", o.requests, "requests per client, one after the other")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("-p,--prompt-tokens", o.prompt_tokens, "prompt length in tokens (the server's tokenizer)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("-n,--max-tokens", o.max_tokens, "max_tokens of every request")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--seed", o.seed, "sampling seed of every request")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed requests sent first, one at a time")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--api-key", o.api_key, "sent as 'Authorization: Bearer KEY'");
  app.add_option("--json", o.json_path, "also write the JSON summary to this file");
  app.add_flag("--header", o.header, "print the markdown table's header before the row");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_load_bench: %s\n", e.what());
    return 1;
  }
}
