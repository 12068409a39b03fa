// safetensors.cpp — the safetensors reader (parse + validate) and the atomic writer.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <unordered_set>

#include "io/atomic_file.h"

namespace sf {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

namespace {

using Json = nlohmann::json;

// Deepest valid nesting: the root object (0) holds entry objects and "__metadata__" (1), which
// hold the shape / data_offsets arrays (2). A container opened at depth 3 or more cannot be part
// of a valid header; refusing it early keeps a hostile header from building deep trees.
constexpr size_t kMaxContainerDepth = 3;

// What the parser callback learns that the parsed JSON value no longer shows.
struct HeaderScan {
  struct OpenContainer {
    bool is_object = false;
    std::unordered_set<std::string> keys;
  };
  std::vector<OpenContainer> open;
  std::vector<std::string> top_level_keys;  // in header order
};

std::string quoted(const std::string& text) {
  // JSON escaping keeps a hostile name (control bytes, quotes) from garbling the error message.
  return Json(text).dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json parse_header(const std::string& path, const uint8_t* begin, const uint8_t* end,
                  HeaderScan& scan) {
  Json::parser_callback_t callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        SF_CHECK(scan.open.size() < kMaxContainerDepth,
                 "{}: header nests JSON deeper than a safetensors header can", path);
        scan.open.push_back({event == Json::parse_event_t::object_start, {}});
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        scan.open.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        SF_CHECK(scan.open.back().keys.insert(key).second, "{}: duplicate key {} in header{}",
                 path, quoted(key),
                 scan.open.size() == 1 ? "" : " (inside an entry or __metadata__)");
        if (scan.open.size() == 1) scan.top_level_keys.push_back(key);
        break;
      }
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return Json::parse(begin, end, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    fail(fmt::format("{}: header is not valid JSON: {}", path, e.what()));
  }
}

// A JSON number that is a non-negative integer, as uint64; `what` names it in errors.
uint64_t parse_unsigned(const Json& value, const std::string& what) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) fail(fmt::format("{} is negative ({})", what, value.dump()));
  if (value.is_number_float()) fail(fmt::format("{} is not an integer ({})", what, value.dump()));
  fail(fmt::format("{} is not a number ({})", what, value.dump()));
}

struct ParsedEntry {
  std::string name;
  SafetensorsEntry entry;
  size_t header_index = 0;
};

ParsedEntry parse_entry(const std::string& path, const std::string& name, const Json& value,
                        uint64_t data_block_bytes) {
  const std::string where = fmt::format("{}: tensor {}", path, quoted(name));
  SF_CHECK(value.is_object(), "{}: entry is not a JSON object but {}", where, value.type_name());
  auto field = [&](const char* key) -> const Json& {
    auto it = value.find(key);
    SF_CHECK(it != value.end(), "{}: entry is missing \"{}\"", where, key);
    return *it;
  };

  ParsedEntry parsed;
  parsed.name = name;
  SafetensorsEntry& entry = parsed.entry;

  const Json& dtype = field("dtype");
  SF_CHECK(dtype.is_string(), "{}: \"dtype\" is not a string but {}", where, dtype.type_name());
  try {
    entry.dtype = dtype_from_name(dtype.get_ref<const std::string&>());
  } catch (const Error& e) {
    fail(fmt::format("{}: {} (supported: F32, F64, BF16, I32, U16, U32, I64)", where, e.what()));
  }

  const Json& shape = field("shape");
  SF_CHECK(shape.is_array(), "{}: \"shape\" is not an array but {}", where, shape.type_name());
  // Checked multiplication: a lying shape must not wrap around to a small, "valid" size. The
  // product with zero dimensions counted as 1 must fit too: Tensor computes strides from it, so
  // [0, 2^32, 2^32] (0 elements, as the reference accepts) would still overflow there.
  uint64_t numel = 1;
  uint64_t stride_product = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t dim;
    try {
      dim = parse_unsigned(shape[i], fmt::format("shape dimension {}", i));
    } catch (const Error& e) {
      fail(fmt::format("{}: {}", where, e.what()));
    }
    SF_CHECK(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "{}: shape dimension {} ({}) is too large", where, i, dim);
    entry.shape.push_back(static_cast<int64_t>(dim));
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel) ||
               __builtin_mul_overflow(stride_product, std::max<uint64_t>(dim, 1), &stride_product);
  }
  uint64_t nbytes = 0;
  overflow = overflow ||
             stride_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
             __builtin_mul_overflow(numel, dtype_size(entry.dtype), &nbytes);
  SF_CHECK(!overflow, "{}: shape {} overflows (element count or byte size exceeds 64 bits)", where,
           shape_str(entry.shape));

  const Json& offsets = field("data_offsets");
  SF_CHECK(offsets.is_array() && offsets.size() == 2,
           "{}: \"data_offsets\" is not an array of two integers: {}", where, offsets.dump());
  try {
    entry.data_begin = parse_unsigned(offsets[0], "data_offsets begin");
    entry.data_end = parse_unsigned(offsets[1], "data_offsets end");
  } catch (const Error& e) {
    fail(fmt::format("{}: {}", where, e.what()));
  }
  SF_CHECK(entry.data_begin <= entry.data_end, "{}: data_offsets [{}, {}] have begin > end", where,
           entry.data_begin, entry.data_end);
  SF_CHECK(entry.data_end <= data_block_bytes,
           "{}: data_offsets [{}, {}] reach past the end of the {}-byte data block (file "
           "truncated?)",
           where, entry.data_begin, entry.data_end, data_block_bytes);
  SF_CHECK(entry.data_end - entry.data_begin == nbytes,
           "{}: data_offsets [{}, {}] span {} bytes but {}{} needs {} bytes", where,
           entry.data_begin, entry.data_end, entry.data_end - entry.data_begin,
           dtype_name(entry.dtype), shape_str(entry.shape), nbytes);
  return parsed;
}

// Copies elements stored contiguously at `src` into `dst`, which may be a strided view.
void copy_into_strided(const uint8_t* src, Tensor& dst) {
  const size_t element = dtype_size(dst.dtype());
  auto* base = static_cast<uint8_t*>(dst.raw());
  const int64_t numel = dst.numel();
  const int ndim = dst.ndim();
  std::vector<int64_t> index(ndim, 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t offset = 0;
    for (int d = 0; d < ndim; ++d) offset += index[d] * dst.strides()[d];
    std::memcpy(base + offset * static_cast<int64_t>(element), src + i * element, element);
    for (int d = ndim - 1; d >= 0; --d) {  // advance the row-major index
      if (++index[d] < dst.shape()[d]) break;
      index[d] = 0;
    }
  }
}

// The header length, checked against the cap and against the file's size.
uint64_t header_length(const std::string& path, const uint8_t* first_8_bytes, uint64_t file_size) {
  SF_CHECK(file_size >= 8, "{}: file is {} bytes, too short for the 8-byte header length", path,
           file_size);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, first_8_bytes, 8);  // little-endian (static_assert above)
  SF_CHECK(header_bytes <= kSafetensorsMaxHeaderBytes,
           "{}: header length {} exceeds the {}-byte limit (not a safetensors file?)", path,
           header_bytes, kSafetensorsMaxHeaderBytes);
  SF_CHECK(header_bytes <= file_size - 8,
           "{}: header length {} reaches past the end of the {}-byte file (file truncated?)", path,
           header_bytes, file_size);
  return header_bytes;
}

// Parses and validates the header JSON (at `text`, header_bytes long) of a file of file_size.
SafetensorsHeader parse_header_entries(const std::string& path, const uint8_t* text,
                                       uint64_t header_bytes, uint64_t file_size) {
  SafetensorsHeader result;
  result.file_bytes = file_size;
  result.data_start = 8 + header_bytes;
  const uint64_t data_block_bytes = file_size - result.data_start;

  HeaderScan scan;
  Json header = parse_header(path, text, text + header_bytes, scan);
  SF_CHECK(header.is_object(), "{}: header is not a JSON object but {}", path,
           header.type_name());

  std::vector<ParsedEntry> parsed;
  parsed.reserve(scan.top_level_keys.size());
  for (const std::string& key : scan.top_level_keys) {
    const Json& value = header.at(key);
    if (key == "__metadata__") {
      SF_CHECK(value.is_object(), "{}: __metadata__ is not a JSON object but {}", path,
               value.type_name());
      for (const auto& [meta_key, meta_value] : value.items()) {
        SF_CHECK(meta_value.is_string(), "{}: __metadata__ value for {} is not a string but {}",
                 path, quoted(meta_key), meta_value.type_name());
        result.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    parsed.push_back(parse_entry(path, key, value, data_block_bytes));
    parsed.back().header_index = parsed.size() - 1;
  }

  // The byte ranges must tile the data block in offset order, as the reference requires: an
  // overlap would alias two tensors, a gap or trailing bytes mean the header and data disagree.
  std::sort(parsed.begin(), parsed.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    return std::tie(a.entry.data_begin, a.entry.data_end, a.header_index) <
           std::tie(b.entry.data_begin, b.entry.data_end, b.header_index);
  });
  uint64_t cursor = 0;
  const ParsedEntry* previous = nullptr;
  for (const ParsedEntry& p : parsed) {
    if (p.entry.data_begin < cursor) {
      fail(fmt::format("{}: tensor {} data [{}, {}) overlaps tensor {} data [{}, {})", path,
                       quoted(p.name), p.entry.data_begin, p.entry.data_end,
                       quoted(previous->name), previous->entry.data_begin,
                       previous->entry.data_end));
    }
    SF_CHECK(p.entry.data_begin == cursor,
             "{}: gap of {} unused bytes in the data block before tensor {} at offset {}", path,
             p.entry.data_begin - cursor, quoted(p.name), p.entry.data_begin);
    cursor = p.entry.data_end;
    previous = &p;
  }
  SF_CHECK(cursor == data_block_bytes,
           "{}: data block has {} trailing bytes after the last tensor (header and data disagree)",
           path, data_block_bytes - cursor);

  result.names.reserve(parsed.size());
  for (ParsedEntry& p : parsed) {
    result.names.push_back(p.name);
    result.entries.emplace(std::move(p.name), std::move(p.entry));
  }
  return result;
}

}  // namespace

SafetensorsHeader safetensors_read_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SF_CHECK(in.good(), "{}: cannot open", path);
  std::error_code ec;
  SF_CHECK(!std::filesystem::is_directory(path, ec), "{}: is a directory, not a file", path);
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  SF_CHECK(!ec, "{}: cannot read the file size ({})", path, ec.message());
  uint8_t length_bytes[8] = {};
  in.read(reinterpret_cast<char*>(length_bytes), file_size >= 8 ? 8 : 0);
  const uint64_t header_bytes = header_length(path, length_bytes, file_size);
  std::vector<uint8_t> text(header_bytes);
  in.read(reinterpret_cast<char*>(text.data()), static_cast<std::streamsize>(header_bytes));
  SF_CHECK(in.good() || header_bytes == 0, "{}: cannot read the {}-byte header", path,
           header_bytes);
  return parse_header_entries(path, text.data(), header_bytes, file_size);
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : SafetensorsFile(read_file(path), path) {}

SafetensorsFile::SafetensorsFile(std::vector<uint8_t> bytes, std::string source_name)
    : path_(std::move(source_name)), file_bytes_(std::move(bytes)) {
  const uint64_t header_bytes = header_length(path_, file_bytes_.data(), file_bytes_.size());
  header_ = parse_header_entries(path_, file_bytes_.data() + 8, header_bytes, file_bytes_.size());
}

const SafetensorsEntry& SafetensorsFile::info(const std::string& name) const {
  auto it = header_.entries.find(name);
  if (it == header_.entries.end()) {
    std::string some_names;
    for (size_t i = 0; i < header_.names.size() && i < 5; ++i) {
      if (i) some_names += ", ";
      some_names += quoted(header_.names[i]);
    }
    if (header_.names.size() > 5) some_names += ", ...";
    fail(fmt::format("{}: no tensor named {} (the file has {} tensors: {})", path_, quoted(name),
                     header_.names.size(), some_names));
  }
  return it->second;
}

std::span<const uint8_t> SafetensorsFile::bytes(const std::string& name) const {
  const SafetensorsEntry& entry = info(name);
  return {file_bytes_.data() + header_.data_start + entry.data_begin,
          static_cast<size_t>(entry.data_end - entry.data_begin)};
}

Tensor SafetensorsFile::load(const std::string& name) const {
  const SafetensorsEntry& entry = info(name);
  Tensor tensor = Tensor::zeros(entry.shape, entry.dtype);
  std::span<const uint8_t> data = bytes(name);
  if (!data.empty()) std::memcpy(tensor.raw(), data.data(), data.size());
  return tensor;
}

void SafetensorsFile::load_into(const std::string& name, Tensor& dst) const {
  const SafetensorsEntry& entry = info(name);
  SF_CHECK(dst.defined(), "{}: tensor {}: destination tensor is undefined", path_, quoted(name));
  SF_CHECK(dst.device() == Device::cpu,
           "{}: tensor {}: load_into needs a CPU destination, got {} (load() it, then copy)",
           path_, quoted(name), dst.describe());
  SF_CHECK(dst.dtype() == entry.dtype && dst.shape() == entry.shape,
           "{}: tensor {}: expected {}{}, the file has {}{}", path_, quoted(name),
           dtype_name(dst.dtype()), shape_str(dst.shape()), dtype_name(entry.dtype),
           shape_str(entry.shape));
  std::span<const uint8_t> data = bytes(name);
  if (data.empty()) return;
  if (dst.is_contiguous()) {
    std::memcpy(dst.raw(), data.data(), data.size());
  } else {
    copy_into_strided(data.data(), dst);
  }
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    SF_CHECK(name != "__metadata__", "{}: \"__metadata__\" is reserved, not a tensor name", path);
    SF_CHECK(seen.insert(name).second, "{}: tensor name {} given twice", path, quoted(name));
    SF_CHECK(tensor.defined(), "{}: tensor {} is undefined", path, quoted(name));
    SF_CHECK(tensor.device() == Device::cpu, "{}: tensor {} is {}; copy it to the CPU first", path,
             quoted(name), tensor.describe());
    SF_CHECK(tensor.is_contiguous(), "{}: tensor {} ({}) is not contiguous", path, quoted(name),
             tensor.describe());
  }

  // Compact JSON in the reference's field order; built by hand because nlohmann::json would
  // sort the keys, and the header order should match the data order for human readers.
  std::string header = "{";
  try {
    if (!metadata.empty()) header += "\"__metadata__\":" + Json(metadata).dump();
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
      if (header.size() > 1) header += ',';
      std::string shape;
      for (size_t i = 0; i < tensor.shape().size(); ++i) {
        if (i) shape += ',';
        shape += std::to_string(tensor.shape()[i]);
      }
      const uint64_t nbytes = tensor.nbytes();
      header += fmt::format(R"({}:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})",
                            Json(name).dump(), dtype_name(tensor.dtype()), shape, offset,
                            offset + nbytes);
      offset += nbytes;
    }
  } catch (const Json::exception& e) {
    fail(fmt::format("{}: a tensor name or metadata string is not valid UTF-8: {}", path,
                     e.what()));
  }
  header += '}';
  // Pad with spaces so the data block starts 8-byte aligned, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');

  AtomicFileWriter writer(path);
  const uint64_t header_bytes = header.size();
  writer.write(&header_bytes, sizeof header_bytes);  // little-endian (static_assert above)
  writer.write(header);
  for (const auto& [name, tensor] : tensors) writer.write(tensor.raw(), tensor.nbytes());
  writer.commit();
}

}  // namespace sf
