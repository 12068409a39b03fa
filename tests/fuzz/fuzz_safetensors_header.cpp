// fuzz_safetensors_header.cpp — fuzzes the header-only safetensors readers that
// `stagformer info` uses: safetensors_read_header(path) (io/safetensors.h) and the summary built
// on it, safetensors_header_read(path) (infer/model_summary.h). The input is a whole
// .safetensors file, written to one scratch file per process. Differential check against the
// full reader, SafetensorsFile(bytes) (the header reader makes "every check of SafetensorsFile
// which needs only the header and the file size"): both accept or both refuse the same file, and
// agree on the names, entries and metadata; the summary agrees with them.
//
// fuzz-dict: json safetensors   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <map>
#include <optional>

#include "fuzz_util.h"
#include "infer/model_summary.h"
#include "io/safetensors.h"

namespace {

bool same_entry(const sf::SafetensorsEntry& a, const sf::SafetensorsEntry& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.data_begin == b.data_begin &&
         a.data_end == b.data_end;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("header.safetensors");
  sf::fuzz::write_bytes(path, data, size);

  sf::SafetensorsHeader header;
  const bool header_ok = sf::fuzz::run_loader("safetensors_read_header",
                                              [&] { header = sf::safetensors_read_header(path); });
  sf::SafetensorsHeaderSummary summary;
  const bool summary_ok = sf::fuzz::run_loader(
      "safetensors_header_read", [&] { summary = sf::safetensors_header_read(path); });
  sf::fuzz::require(header_ok == summary_ok,
                    "safetensors_header_read accepts exactly what safetensors_read_header accepts");

  std::optional<sf::SafetensorsFile> file;
  sf::fuzz::run_loader("SafetensorsFile",
                       [&] { file.emplace(std::vector<uint8_t>(data, data + size), path); });
  sf::fuzz::require(header_ok == file.has_value(),
                    header_ok ? "safetensors_read_header accepts a file SafetensorsFile refuses"
                              : "safetensors_read_header refuses a file SafetensorsFile accepts");
  if (!header_ok) return 0;

  sf::fuzz::require(header.file_bytes == size, "file_bytes is the file's size");
  sf::fuzz::require(header.names == file->names(), "both readers list the same names in order");
  sf::fuzz::require(header.metadata == file->metadata(), "both readers give the same metadata");
  sf::fuzz::require(header.entries.size() == header.names.size(), "one entry per name");
  std::map<std::string, int64_t> elements;
  for (const std::string& name : header.names) {
    const auto it = header.entries.find(name);
    sf::fuzz::require(it != header.entries.end() && same_entry(it->second, file->info(name)),
                      "both readers give the same entry for each tensor");
    elements[std::string(sf::dtype_name(it->second.dtype))] += sf::shape_numel(it->second.shape);
  }
  sf::fuzz::require(summary.file_bytes == size, "the summary's file_bytes is the file's size");
  sf::fuzz::require(summary.tensors == static_cast<int64_t>(header.names.size()),
                    "the summary counts every tensor");
  sf::fuzz::require(summary.metadata == header.metadata, "the summary keeps the metadata");
  sf::fuzz::require(summary.elements_by_dtype == elements,
                    "the summary counts the elements of each dtype");
  return 0;
}
