// fuzz_util.h — what every harness of tests/fuzz shares: the rule for exceptions, a scratch
// folder per process, and writing the fuzz input into a file.
//
// The rule: a loader given bad bytes must throw sf::Error (the CLI prints its message and exits
// cleanly). Any other exception escaping it (std::bad_alloc, nlohmann::json::type_error,
// std::out_of_range, ...) is a finding: run_loader() prints it and aborts, so libFuzzer saves the
// input as a crash. Harness assertions (a promise of the API broken on some input) abort too.
//
// Scratch files live under /dev/shm when it is writable (tmpfs: the loaders' fsyncs and renames
// cost nothing there), else under $TMPDIR or /tmp, in one folder per process (removed by the
// next harness that starts once the process is gone; scripts/fuzz.sh removes it right away).
// Harnesses create their files and folders once and rewrite them on every input.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <typeinfo>

#include "core/error.h"

namespace sf::fuzz {

// Prints "sf-fuzz: <what>" and aborts: libFuzzer records the input as a crash.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\nsf-fuzz: FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Aborts with `what` unless `condition` holds (a documented promise of the API under test).
inline void require(bool condition, const std::string& what) {
  if (!condition) finding("broken promise: " + what);
}

// Runs `loader`; sf::Error is the expected outcome for bad input and is swallowed (printed when
// the environment sets SF_FUZZ_VERBOSE, to see why an input is refused), anything else is a
// finding. Returns true when the loader returned normally.
template <class Fn>
bool run_loader(const char* what, Fn&& loader) {
  try {
    loader();
    return true;
  } catch (const sf::Error& e) {
    static const bool verbose = std::getenv("SF_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "sf-fuzz: %s: sf::Error: %s\n", what, e.what());
    return false;
  } catch (const std::exception& e) {
    finding(std::string(what) + ": an exception other than sf::Error escaped: " + typeid(e).name() +
            ": " + e.what());
  } catch (...) {
    finding(std::string(what) + ": a non-std exception escaped");
  }
}

// This process's scratch folder, <base>/sf-fuzz-<pid>. libFuzzer ends with _Exit (no atexit
// handlers), so a folder outlives its process: each new one first removes those of processes
// that no longer run.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    namespace fs = std::filesystem;
    fs::path base = "/dev/shm";
    if (::access(base.c_str(), W_OK) != 0) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(base, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("sf-fuzz-", 0) != 0) continue;
      char* end = nullptr;
      const long pid = std::strtol(name.c_str() + 8, &end, 10);
      if (pid > 0 && *end == '\0' && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
        fs::remove_all(e.path(), ec);
    }
    fs::path d = base / ("sf-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// A path inside the scratch folder (parent folders created once, here).
inline std::string scratch_path(const std::string& relative) {
  const std::filesystem::path p = scratch_dir() / relative;
  std::filesystem::create_directories(p.parent_path());
  return p.string();
}

// Replaces the file's contents with `bytes` (plain write: the harness is the only writer).
inline void write_bytes(const std::string& path, const void* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) finding("harness: cannot write " + path);
  if (size && std::fwrite(data, 1, size, f) != size) finding("harness: short write to " + path);
  std::fclose(f);
}
inline void write_bytes(const std::string& path, std::string_view bytes) {
  write_bytes(path, bytes.data(), bytes.size());
}

}  // namespace sf::fuzz
