// safetensors.h — reading and writing the safetensors format, with hostile-input validation.
//
// Layout: an 8-byte little-endian header length N, N bytes of a JSON object
//   {"__metadata__": {"key": "value", ...},                        (optional, strings only)
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// then the data block; offsets are bytes relative to the start of the data block, elements are
// little-endian and row-major. This is the format of Hugging Face's `safetensors` package, so a
// PyTorch user opens our weights with `safetensors.torch.load_file` and we open theirs.
//
// Reading validates everything a damaged or malicious file could get wrong, as strictly as the
// reference implementation: every failure is an sf::Error whose message starts with the file
// path, never a crash, an out-of-bounds read or an allocation larger than the file. In
// particular the tensors' byte ranges must tile the data block exactly (no overlaps, no gaps,
// no trailing bytes), duplicate JSON keys are rejected (the reference's JSON parser would keep
// one silently; we refuse to guess which), and the header is capped at 100 MB.
//
// Memory: the reader loads the whole file into memory once and copies each tensor out of it on
// load(). That is fine for the model sizes we train; a memory-mapped reader can replace it behind
// the same interface if checkpoints ever outgrow RAM.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace sf {

// Header limit of the reference implementation: a larger header is refused before it is parsed.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor's header entry. Offsets are bytes relative to the start of the data block.
struct SafetensorsEntry {
  DType dtype = DType::f32;
  Shape shape;
  uint64_t data_begin = 0;
  uint64_t data_end = 0;
};

// A validated safetensors header: the tensors' entries (every check of SafetensorsFile, which
// needs only the header and the file size) without the data.
struct SafetensorsHeader {
  uint64_t file_bytes = 0;
  uint64_t data_start = 0;  // 8 + header length
  // Tensor names in the order their data lies in the file (zero-byte tensors at one offset keep
  // their header order).
  std::vector<std::string> names;
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty if the file has none)
};

// Reads and validates only the header of `path` (its first 8 + N bytes) and checks it against
// the file's size: for looking at a large weights file without reading it.
SafetensorsHeader safetensors_read_header(const std::string& path);

// A validated safetensors file held in memory.
class SafetensorsFile {
 public:
  // Reads and validates `path`; throws sf::Error starting with the path on any problem.
  explicit SafetensorsFile(const std::string& path);
  // Validates bytes already in memory; `source_name` stands for the path in error messages.
  SafetensorsFile(std::vector<uint8_t> bytes, std::string source_name);

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  // Tensor names in the order their data lies in the file (for files we write: the order given
  // to write_safetensors). Zero-byte tensors at one offset keep their header order.
  const std::vector<std::string>& names() const { return header_.names; }
  bool has(const std::string& name) const { return header_.entries.count(name) != 0; }
  // Throws sf::Error naming the tensor and the file if there is no such tensor.
  const SafetensorsEntry& info(const std::string& name) const;
  // The "__metadata__" map (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  // The tensor's raw little-endian bytes inside the loaded file.
  std::span<const uint8_t> bytes(const std::string& name) const;
  // A new contiguous CPU tensor holding a copy of the data.
  Tensor load(const std::string& name) const;
  // Copies the tensor into `dst` (a CPU tensor, contiguous or a strided view) whose dtype and
  // shape must match exactly; the error names the tensor, the file, and both dtypes and shapes.
  void load_into(const std::string& name, Tensor& dst) const;

 private:
  std::string path_;
  std::vector<uint8_t> file_bytes_;
  SafetensorsHeader header_;
};

// Writes `tensors` (defined, contiguous CPU tensors; unique names other than "__metadata__") in
// the given order, with `metadata` as "__metadata__" when it is not empty. The file is replaced
// atomically (io/atomic_file.h). The header is compact JSON with "__metadata__" first, padded
// with spaces to a multiple of 8 bytes, exactly as the reference implementation writes it; the
// data of each tensor follows the previous one with no padding.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sf
