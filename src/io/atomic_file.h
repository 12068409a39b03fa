// atomic_file.h — whole-file writes that are atomic on crash, and whole-file reads.
//
// A checkpoint or weights file must never be seen half written: after a crash, power loss or
// SIGKILL, `path` holds either the complete old contents or the complete new ones. We get that
// the usual POSIX way: write `path + ".tmp.<pid>"` in the same directory (rename is only atomic
// within one file system), fflush + fsync it, rename it over `path`, then fsync the directory so
// the rename itself is durable. On any error, or an exception thrown by the caller's writer, the
// temporary is removed and the old file at `path` is untouched. A process killed mid-write
// cannot clean up: its `.tmp.<pid>` file stays behind, but `path` is intact.
//
// Two writers of the same `path` from one process at the same time share the temporary name and
// are not supported; writers in different processes are (the last rename wins).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace sf {

// Writes one file atomically. Bytes go to the temporary file through write() or stream();
// commit() makes them the contents of `path`. Destroying the writer without commit() (for
// example while an exception unwinds) removes the temporary and leaves `path` as it was.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes; throws sf::Error naming the path and the system error on a short write.
  void write(const void* data, size_t bytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // The open temporary file, for callers that format into a FILE* (fmt::print, fwrite). Write
  // errors made through it are caught by commit() via ferror().
  std::FILE* stream() const { return file_; }

  // fflush + fsync the temporary, close it, rename it over `path`, fsync the directory.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void discard() noexcept;  // close and remove the temporary (no-op once committed)

  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Atomically replaces `path` with what `write` puts into the FILE*. If `write` throws, the
// exception propagates after the temporary is removed and `path` is left untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write);
// Atomically replaces `path` with `contents`.
void write_file_atomic(const std::string& path, std::string_view contents);

// Reads a whole file; throws sf::Error naming the file and the system error if it is missing,
// unreadable or not a regular file, and naming the limit if it holds more than max_bytes (so a
// small file format is never read into memory from a huge or endless file).
std::vector<uint8_t> read_file(const std::string& path,
                               uint64_t max_bytes = std::numeric_limits<uint64_t>::max());

}  // namespace sf
