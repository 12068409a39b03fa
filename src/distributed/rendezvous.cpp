// rendezvous.cpp — the launch environment of a data-parallel job (reading and validation) and
// the choice between the TCP and the shared-file rendezvous. The exchanges themselves live in
// rendezvous_tcp.cpp and rendezvous_file.cpp.
#include "distributed/rendezvous.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "core/error.h"

namespace sf {

namespace {

// Collects every problem so that one error names all bad variables at once.
class EnvReader {
 public:
  explicit EnvReader(const EnvLookup& lookup) : lookup_(lookup) {}

  // The variable's value; nullopt when unset or empty (an empty variable counts as unset, as
  // `export RANK=` usually means "not given").
  std::optional<std::string> text(const char* name) const {
    const char* value = lookup_(name);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  }

  // An integer in [min, max]; nullopt (after noting the problem) when malformed or out of range.
  std::optional<int> integer(const char* name, int min, int max, const char* meaning) {
    const auto value = text(name);
    if (!value) return std::nullopt;
    long long parsed = 0;
    const char* end = value->data() + value->size();
    const auto [ptr, ec] = std::from_chars(value->data(), end, parsed);
    if (ec != std::errc() || ptr != end) {
      problem(fmt::format("{}='{}' is not an integer ({})", name, *value, meaning));
      return std::nullopt;
    }
    if (parsed < min || parsed > max) {
      problem(fmt::format("{}={} is out of range [{}, {}] ({})", name, parsed, min, max, meaning));
      return std::nullopt;
    }
    return static_cast<int>(parsed);
  }

  // A positive number of seconds; `fallback` when unset.
  double seconds(const char* name, double fallback) {
    const auto value = text(name);
    if (!value) return fallback;
    char* end = nullptr;
    const double parsed = std::strtod(value->c_str(), &end);
    if (end != value->c_str() + value->size() || !std::isfinite(parsed) || parsed <= 0) {
      problem(fmt::format("{}='{}' is not a positive number of seconds", name, *value));
      return fallback;
    }
    return parsed;
  }

  void problem(const std::string& what) { problems_ += "\n  - " + what; }
  const std::string& problems() const { return problems_; }

 private:
  const EnvLookup& lookup_;
  std::string problems_;
};

}  // namespace

DistEnv dist_env_parse(const EnvLookup& lookup) {
  EnvReader env(lookup);
  DistEnv out;
  constexpr int kMaxWorld = 1 << 16;
  out.world_size = env.integer("WORLD_SIZE", 1, kMaxWorld, "processes in the job").value_or(1);
  out.init_timeout_s = env.seconds("SF_DIST_INIT_TIMEOUT", out.init_timeout_s);
  out.op_timeout_s = env.seconds("SF_DIST_TIMEOUT", out.op_timeout_s);
  out.init_file = env.text("SF_DIST_INIT_FILE").value_or("");
  const auto local_rank =
      env.integer("LOCAL_RANK", 0, kMaxWorld - 1, "this process's GPU on its host");
  out.local_rank = local_rank.value_or(0);

  if (!env.text("WORLD_SIZE")) {
    // One process. A RANK other than 0 without WORLD_SIZE is a half-configured launch: running
    // on as a lone rank 0 would silently train alone and write files.
    const auto rank = env.text("RANK");
    if (rank && *rank != "0")
      env.problem(fmt::format("RANK={} is set but WORLD_SIZE is not (set both, or neither for "
                              "one process)", *rank));
  } else if (out.world_size > 1) {
    if (!env.text("RANK"))
      env.problem(fmt::format("RANK is not set (this process's rank, 0..{}, with WORLD_SIZE={})",
                              out.world_size - 1, out.world_size));
    else if (const auto rank = env.integer("RANK", 0, kMaxWorld - 1, "this process's rank")) {
      if (*rank >= out.world_size)
        env.problem(fmt::format("RANK={} is not below WORLD_SIZE={}", *rank, out.world_size));
      out.rank = *rank;
    }
    if (!local_rank && !env.text("LOCAL_RANK"))
      env.problem("LOCAL_RANK is not set (this process's GPU on its host; scripts/launch.sh and "
                  "torchrun set it)");
    if (out.init_file.empty()) {
      const auto addr = env.text("MASTER_ADDR");
      if (!addr)
        env.problem("MASTER_ADDR is not set (rank 0's host name or address; or set "
                    "SF_DIST_INIT_FILE for a rendezvous through a shared file)");
      out.master_addr = addr.value_or("");
      if (!env.text("MASTER_PORT"))
        env.problem("MASTER_PORT is not set (a free TCP port on rank 0's host, e.g. 29500)");
      else
        out.master_port = env.integer("MASTER_PORT", 1, 65535, "a TCP port").value_or(0);
    }
  } else {
    // WORLD_SIZE=1: a RANK, if given, must be 0.
    const auto rank = env.integer("RANK", 0, kMaxWorld - 1, "this process's rank");
    if (rank && *rank != 0)
      env.problem(fmt::format("RANK={} is not below WORLD_SIZE=1", *rank));
  }
  if (!env.problems().empty())
    fail("invalid data-parallel environment (see docs/data-parallel.md):" + env.problems());
  return out;
}

DistEnv dist_env_from_process() {
  return dist_env_parse([](const char* name) { return std::getenv(name); });
}

std::string dist_env_describe(const DistEnv& env) {
  const std::string where = env.init_file.empty()
                                ? fmt::format("tcp://{}:{}", env.master_addr, env.master_port)
                                : "file " + env.init_file;
  return fmt::format("rank {} of {} (local rank {}), rendezvous {}", env.rank, env.world_size,
                     env.local_rank, where);
}

std::string rendezvous_share(const DistEnv& env, const std::string& root_bytes) {
  if (!env.distributed()) return root_bytes;
  return env.init_file.empty() ? rendezvous_share_tcp(env, root_bytes)
                               : rendezvous_share_file(env, root_bytes);
}

}  // namespace sf
