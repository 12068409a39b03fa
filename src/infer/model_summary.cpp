// model_summary.cpp — cache sizes, decode depth, safetensors header summary.
#include "infer/model_summary.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::json;

KvCacheSize kv_cache_size(const ModelConfig& c) {
  KvCacheSize size;
  size.self_values_per_token = c.n_stacks * c.layers_per_stack * 2 * c.kv_dim();
  size.cross_values_per_position = (c.n_stacks - 1) * c.layers_per_stack * 2 * c.kv_dim();
  size.cross_window = c.cross_window;
  return size;
}

DecodeDepth decode_depth(const ModelConfig& c) {
  return DecodeDepth{c.total_layers(), c.total_layers(), c.layers_per_stack};
}

SafetensorsHeaderSummary safetensors_header_read(const std::string& path) {
  SafetensorsHeaderSummary summary;
  std::error_code ec;
  summary.file_bytes = fs::file_size(path, ec);
  SF_CHECK(!ec, "{}: cannot read the file size ({})", path, ec.message());
  std::ifstream in(path, std::ios::binary);
  SF_CHECK(in.good(), "{}: cannot open", path);
  SF_CHECK(summary.file_bytes >= 8, "{}: {} bytes is too short for a safetensors file", path,
           summary.file_bytes);
  uint8_t length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  SF_CHECK(header_bytes <= kSafetensorsMaxHeaderBytes,
           "{}: header length {} exceeds the {}-byte limit", path, header_bytes,
           kSafetensorsMaxHeaderBytes);
  SF_CHECK(8 + header_bytes <= summary.file_bytes,
           "{}: header length {} reaches past the end of the {}-byte file", path, header_bytes,
           summary.file_bytes);
  std::string text(header_bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_bytes));
  SF_CHECK(in.good(), "{}: cannot read the {}-byte header", path, header_bytes);
  const json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  SF_CHECK(!header.is_discarded() && header.is_object(), "{}: the header is not a JSON object",
           path);

  const uint64_t data_bytes = summary.file_bytes - 8 - header_bytes;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      SF_CHECK(entry.is_object(), "{}: __metadata__ is not an object", path);
      for (const auto& [key, value] : entry.items()) {
        SF_CHECK(value.is_string(), "{}: __metadata__ value of '{}' is not a string", path, key);
        summary.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    SF_CHECK(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string() &&
                 entry.contains("shape") && entry["shape"].is_array() &&
                 entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                 entry["data_offsets"].size() == 2,
             "{}: tensor '{}' lacks a dtype, shape or data_offsets", path, name);
    DType dtype;
    try {
      dtype = dtype_from_name(entry["dtype"].get<std::string>());
    } catch (const Error& e) {
      fail(fmt::format("{}: tensor '{}': {}", path, name, e.what()));
    }
    int64_t elements = 1;
    for (const json& d : entry["shape"]) {
      SF_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= (1ull << 40),
               "{}: tensor '{}' has an invalid shape {}", path, name, entry["shape"].dump());
      elements *= d.get<int64_t>();
      SF_CHECK(elements <= (int64_t{1} << 50), "{}: tensor '{}' has an impossible shape {}", path,
               name, entry["shape"].dump());
    }
    const json& offsets = entry["data_offsets"];
    SF_CHECK(offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(),
             "{}: tensor '{}' has invalid data_offsets {}", path, name, offsets.dump());
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    SF_CHECK(begin <= end && end <= data_bytes &&
                 end - begin == static_cast<uint64_t>(elements) * dtype_size(dtype),
             "{}: tensor '{}': data_offsets {} do not match its {} {} values within the {}-byte "
             "data block",
             path, name, offsets.dump(), elements, dtype_name(dtype), data_bytes);
    summary.tensors += 1;
    summary.elements_by_dtype[std::string(dtype_name(dtype))] += elements;
  }
  return summary;
}

int64_t run_latest_checkpoint_step(const std::string& run_dir) {
  const fs::path latest = fs::path(run_dir) / "checkpoints" / "latest.json";
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec) || !fs::exists(latest, ec)) return -1;
  std::ifstream in(latest);
  SF_CHECK(in.good(), "{}: cannot open", latest.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const json j = json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  SF_CHECK(!j.is_discarded() && j.is_object() && j.contains("step") &&
               j["step"].is_number_integer() && j["step"].get<int64_t>() >= 0,
           "{}: expected a JSON object with a non-negative integer 'step'", latest.string());
  return j["step"].get<int64_t>();
}

}  // namespace sf
