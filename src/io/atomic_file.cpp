// atomic_file.cpp — temporary file + fsync + rename + directory fsync, and whole-file reads.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace sf {

namespace {

std::string system_error_text(int error_number) { return std::strerror(error_number); }

// The directory holding `path`, where the rename happens and which must be fsynced.
std::string parent_directory(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  SF_CHECK(!path_.empty(), "atomic write: empty file path");
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  // O_CLOEXEC: a child process started while we write must not inherit the descriptor.
  int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    int error_number = errno;
    fail(fmt::format("{}: cannot create temporary file {}: {}", path_, temp_path_,
                     system_error_text(error_number)));
  }
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    int error_number = errno;
    ::close(fd);
    ::unlink(temp_path_.c_str());
    fail(fmt::format("{}: cannot open a stream on temporary file {}: {}", path_, temp_path_,
                     system_error_text(error_number)));
  }
}

AtomicFileWriter::~AtomicFileWriter() { discard(); }

void AtomicFileWriter::discard() noexcept {
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
  }
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  SF_CHECK(file_ && !committed_, "{}: write after commit", path_);
  if (bytes == 0) return;
  if (std::fwrite(data, 1, bytes, file_) != bytes) {
    int error_number = errno;
    fail(fmt::format("{}: writing temporary file {} failed: {}", path_, temp_path_,
                     system_error_text(error_number)));
  }
}

void AtomicFileWriter::commit() {
  SF_CHECK(file_ && !committed_, "{}: commit twice", path_);
  // A failed fwrite made by the caller through stream() leaves only the error flag behind.
  SF_CHECK(!std::ferror(file_), "{}: writing temporary file {} failed (stream error)", path_,
           temp_path_);
  auto fail_with_errno = [&](const char* step) {
    int error_number = errno;
    fail(fmt::format("{}: {} of temporary file {} failed: {}", path_, step, temp_path_,
                     system_error_text(error_number)));
  };
  if (std::fflush(file_) != 0) fail_with_errno("flush");
  // Data must be on disk before the rename makes it visible, or a crash could expose a file
  // whose name is new but whose blocks were never written.
  if (::fsync(::fileno(file_)) != 0) fail_with_errno("fsync");
  std::FILE* file = file_;
  file_ = nullptr;
  if (std::fclose(file) != 0) fail_with_errno("close");
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int error_number = errno;
    fail(fmt::format("{}: renaming temporary file {} over it failed: {}", path_, temp_path_,
                     system_error_text(error_number)));
  }
  committed_ = true;

  // The rename lives in the directory; without this fsync a crash could bring back the old name.
  std::string directory = parent_directory(path_);
  int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    int error_number = errno;
    fail(fmt::format("{}: written, but opening its directory {} to sync it failed: {}", path_,
                     directory, system_error_text(error_number)));
  }
  int sync_result = ::fsync(dir_fd);
  int error_number = errno;
  ::close(dir_fd);
  // Some file systems cannot fsync a directory (EINVAL); there is nothing more we can do there.
  if (sync_result != 0 && error_number != EINVAL) {
    fail(fmt::format("{}: written, but syncing its directory {} failed: {}", path_, directory,
                     system_error_text(error_number)));
  }
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  AtomicFileWriter writer(path);
  write(writer.stream());
  writer.commit();
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFileWriter writer(path);
  writer.write(contents);
  writer.commit();
}

std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int error_number = errno;
    fail(fmt::format("{}: cannot open: {}", path, system_error_text(error_number)));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int error_number = errno;
    fail(fmt::format("{}: cannot stat: {}", path, system_error_text(error_number)));
  }
  SF_CHECK(!S_ISDIR(info.st_mode), "{}: is a directory, not a file", path);
  auto check_size = [&](uint64_t size) {
    SF_CHECK(size <= max_bytes, "{}: {} bytes or more, larger than the {} bytes this kind of file may have",
             path, size, max_bytes);
  };
  if (S_ISREG(info.st_mode)) check_size(static_cast<uint64_t>(info.st_size));

  // The size is a hint: read until end of file, so pipes and files that change size work too.
  std::vector<uint8_t> bytes;
  size_t size_hint = S_ISREG(info.st_mode) ? static_cast<size_t>(info.st_size) : 0;
  bytes.resize(size_hint + 1);  // +1: the read that returns 0 needs room to confirm the end
  size_t used = 0;
  for (;;) {
    if (used == bytes.size()) bytes.resize(bytes.size() + std::max<size_t>(bytes.size(), 65536));
    ssize_t got = ::read(fd, bytes.data() + used, bytes.size() - used);
    if (got < 0) {
      if (errno == EINTR) continue;
      int error_number = errno;
      fail(fmt::format("{}: read failed: {}", path, system_error_text(error_number)));
    }
    if (got == 0) break;
    used += static_cast<size_t>(got);
    check_size(used);
  }
  bytes.resize(used);
  return bytes;
}

}  // namespace sf
