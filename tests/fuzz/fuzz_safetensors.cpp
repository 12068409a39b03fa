// fuzz_safetensors.cpp — fuzzes the safetensors weights reader (io/safetensors.h): the input is
// a whole .safetensors file, validated from memory by SafetensorsFile(bytes, name); when it is
// accepted, every tensor is loaded (load, load_into a matching tensor, bytes) and checked against
// its header entry.
//
// fuzz-dict: json safetensors   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <cstring>

#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sf::fuzz::run_loader("SafetensorsFile", [&] {
    const sf::SafetensorsFile file(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    uint64_t total = 0;
    for (const std::string& name : file.names()) {
      const sf::SafetensorsEntry& entry = file.info(name);
      const std::span<const uint8_t> bytes = file.bytes(name);
      const sf::Tensor tensor = file.load(name);
      sf::fuzz::require(tensor.shape() == entry.shape && tensor.dtype() == entry.dtype,
                        "load() gives the header's shape and dtype");
      sf::fuzz::require(
          bytes.size() == entry.data_end - entry.data_begin && tensor.nbytes() == bytes.size(),
          "a tensor's bytes span its data_offsets");
      sf::fuzz::require(bytes.empty() || std::memcmp(tensor.raw(), bytes.data(), bytes.size()) == 0,
                        "load() copies the tensor's bytes");
      sf::Tensor into = sf::Tensor::zeros(entry.shape, entry.dtype);
      file.load_into(name, into);
      total += bytes.size();
    }
    sf::fuzz::require(total + 8 <= size, "the tensors fit in the file");
  });
  return 0;
}
