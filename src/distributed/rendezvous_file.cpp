// rendezvous_file.cpp — the shared-file rendezvous (SF_DIST_INIT_FILE): rank 0 writes its blob
// into a file every rank can see, the others poll for it and acknowledge it, rank 0 cleans up
// (see distributed/rendezvous.h for the rules).
//
// The file is text, so a person can look at one a failed job left behind:
//   stagformer-dist-init 1
//   world_size 4
//   blob <hex bytes>
// Acknowledgements are empty files PATH.ack.RANK. Everything is polled (no inotify: it does not
// see changes made by other hosts on NFS and most cluster file systems).
#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "distributed/rendezvous.h"
#include "io/atomic_file.h"

namespace sf {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

constexpr const char* kHeader = "stagformer-dist-init 1";
constexpr std::chrono::milliseconds kPollPause{50};

std::string ack_path(const std::string& path, int rank) {
  return path + ".ack." + std::to_string(rank);
}

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

std::string to_hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (const unsigned char c : bytes) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  return hex;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Parses the file rank 0 wrote; the error names the file.
std::string parse(const std::string& path, const std::string& text, int world_size) {
  std::istringstream in(text);
  std::string header, key, hex;
  int64_t file_world = -1;
  std::getline(in, header);
  SF_CHECK(header == kHeader,
           "rendezvous: {} (SF_DIST_INIT_FILE) is not a stagformer rendezvous file (first line "
           "'{}')",
           path, header.substr(0, 80));
  in >> key >> file_world;
  SF_CHECK(in && key == "world_size", "rendezvous: {}: expected 'world_size N' on line 2", path);
  SF_CHECK(file_world == world_size,
           "rendezvous: {} was written by a rank 0 with WORLD_SIZE={} but this rank has "
           "WORLD_SIZE={}; every rank of a job needs the same WORLD_SIZE (or is the file left "
           "from another job?)",
           path, file_world, world_size);
  in >> key >> hex;
  SF_CHECK(in && key == "blob" && hex.size() % 2 == 0,
           "rendezvous: {}: expected 'blob <hex>' on line 3", path);
  std::string bytes(hex.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    const int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    SF_CHECK(hi >= 0 && lo >= 0, "rendezvous: {}: the blob is not lower-case hex", path);
    bytes[i] = static_cast<char>(hi * 16 + lo);
  }
  return bytes;
}

std::string publish(const DistEnv& env, const std::string& blob) {
  const std::string& path = env.init_file;
  SF_CHECK(!exists(path),
           "rendezvous: SF_DIST_INIT_FILE={} already exists (left by an earlier job?); other ranks "
           "could read a stale id from it: remove it, or better use a fresh path per job",
           path);
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  SF_CHECK(parent.empty() || fs::is_directory(parent, ec),
           "rendezvous: SF_DIST_INIT_FILE={}: the folder {} does not exist", path, parent.string());
  // Acknowledgements of an earlier job with this path would let us clean up too early. No rank
  // of this job can have acknowledged yet: the file did not exist.
  for (int r = 1; r < env.world_size; ++r) fs::remove(ack_path(path, r), ec);
  write_file_atomic(path, fmt::format("{}\nworld_size {}\nblob {}\n", kHeader, env.world_size,
                                      to_hex(blob)));

  const auto deadline = deadline_after(env.init_timeout_s);
  for (;;) {
    std::string missing;
    for (int r = 1; r < env.world_size; ++r)
      if (!exists(ack_path(path, r))) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    if (missing.empty()) break;
    if (Clock::now() >= deadline) {
      fs::remove(path, ec);  // nobody else may pick up an id of a job that failed
      fail(fmt::format("rendezvous: rank 0 wrote {} (SF_DIST_INIT_FILE) but rank(s) {} of "
                       "WORLD_SIZE={} did not read it within {} s; were they started with the same "
                       "SF_DIST_INIT_FILE on a file system shared with this host? "
                       "(SF_DIST_INIT_TIMEOUT sets the wait)",
                       path, missing, env.world_size, env.init_timeout_s));
    }
    std::this_thread::sleep_for(kPollPause);
  }
  // Everyone has the id: leave nothing behind for the next job.
  fs::remove(path, ec);
  for (int r = 1; r < env.world_size; ++r) fs::remove(ack_path(path, r), ec);
  return blob;
}

std::string collect(const DistEnv& env) {
  const std::string& path = env.init_file;
  const auto deadline = deadline_after(env.init_timeout_s);
  while (!exists(path)) {
    if (Clock::now() >= deadline)
      fail(fmt::format("rendezvous: rank {} waited {} s for SF_DIST_INIT_FILE={} to appear; is "
                       "rank 0 running with the same SF_DIST_INIT_FILE, on a file system shared "
                       "with this host? (SF_DIST_INIT_TIMEOUT sets the wait)",
                       env.rank, env.init_timeout_s, path));
    std::this_thread::sleep_for(kPollPause);
  }
  // A header, the world size and a hex blob of at most 1 MiB: nothing larger is one of ours.
  const std::vector<uint8_t> raw = read_file(path, 4 << 20);
  const std::string blob = parse(path, std::string(raw.begin(), raw.end()), env.world_size);
  write_file_atomic(ack_path(path, env.rank), std::string_view());
  return blob;
}

}  // namespace

std::string rendezvous_share_file(const DistEnv& env, const std::string& root_bytes) {
  if (!env.distributed()) return root_bytes;
  SF_CHECK(!env.init_file.empty(), "rendezvous: SF_DIST_INIT_FILE is not set");
  return env.rank == 0 ? publish(env, root_bytes) : collect(env);
}

}  // namespace sf
