// fuzz_rendezvous_file.cpp — fuzzes the shared-file rendezvous of data-parallel jobs
// (SF_DIST_INIT_FILE; rendezvous_share_file, distributed/rendezvous.h) from the side that reads
// the file: rank 1 of 2 finds the input as the file rank 0 wrote, parses it and acknowledges it.
// The parser itself (parse() in rendezvous_file.cpp) is not public, so the input goes through a
// real file in the scratch folder. An accepted file's blob must be what its hex says.
//
// fuzz-dict: rendezvous   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include "distributed/rendezvous.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("rendezvous/init");
  sf::fuzz::write_bytes(path, data, size);
  sf::DistEnv env;
  env.rank = 1;
  env.local_rank = 1;
  env.world_size = 2;
  env.init_file = path;
  env.init_timeout_s = 1;  // the file exists: nothing waits
  std::string blob;
  if (!sf::fuzz::run_loader("rendezvous_share_file (rank 1)",
                            [&] { blob = sf::rendezvous_share_file(env, "unused"); }))
    return 0;
  // The file spells the blob in lower-case hex: that spelling must be in it.
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : blob) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sf::fuzz::require(text.find(hex) != std::string_view::npos,
                    "the blob returned is the one the file spells in hex");
  return 0;
}
