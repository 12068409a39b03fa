// safetensors_test.cpp — safetensors round trips, byte compatibility with the reference writer,
// hostile-input validation (every malformed case, every truncation, random header corruption),
// and crash atomicity of write_file_atomic (a throwing writer, a SIGKILLed child process).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed with everything in it at the end.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "sf_safetensors_XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    dir_ = made;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path dir_;
};

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  }
  ASSERT_EQ(std::fclose(f), 0);
}

void append_u64(std::vector<uint8_t>& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// 8-byte little-endian length + header + data, built byte by byte (not with our writer).
std::vector<uint8_t> file_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  append_u64(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <class T>
std::vector<uint8_t> le_bytes(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());  // host is little-endian
  return out;
}

Tensor random_tensor(const Shape& shape, DType dtype, Rng& rng) {
  Tensor t = Tensor::zeros(shape, dtype);
  const int64_t n = t.numel();
  if (dtype == DType::f32) {
    for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(rng.normal());
  } else if (dtype == DType::f64) {
    for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = rng.normal() * 1e3;
  } else {  // integers and bf16: every bit pattern, so bit-exactness is really tested
    auto* p = static_cast<uint8_t*>(t.raw());
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng.next_u64());
  }
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// The file must be rejected with an sf::Error that starts with its path and contains `phrase`.
void expect_rejected(const ScratchDir& dir, const std::vector<uint8_t>& bytes,
                     const std::string& phrase) {
  const std::string path = dir.file("bad.safetensors");
  write_plain(path, bytes);
  std::string message = error_of([&] { SafetensorsFile file(path); });
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  EXPECT_NE(message.find(phrase), std::string::npos)
      << "expected \"" << phrase << "\" in: " << message;
}

void expect_header_rejected(const ScratchDir& dir, const std::string& header,
                            const std::vector<uint8_t>& data, const std::string& phrase) {
  SCOPED_TRACE(header);
  expect_rejected(dir, file_bytes(header, data), phrase);
}

// ---- round trips -----------------------------------------------------------------------------

TEST(Safetensors, RoundTripIsBitExactForEveryDtypeAndShape) {
  ScratchDir dir;
  Rng rng(1234);
  // Names deliberately out of alphabetical order: the file must keep the given order.
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"z.f32", random_tensor({3, 5}, DType::f32, rng)},
      {"a.f64", random_tensor({2, 3, 4}, DType::f64, rng)},
      {"m.bf16", random_tensor({7}, DType::bf16, rng)},
      {"b.i32", random_tensor({4, 2}, DType::i32, rng)},
      {"y.u16", random_tensor({9}, DType::u16, rng)},
      {"c.u32", random_tensor({3, 3}, DType::u32, rng)},
      {"x.i64", random_tensor({5}, DType::i64, rng)},
      {"scalar", random_tensor({}, DType::f32, rng)},
      {"empty", random_tensor({0, 4}, DType::f32, rng)},
      {"empty.i64", random_tensor({0}, DType::i64, rng)},
      {"after.empty", random_tensor({2, 1, 3}, DType::f32, rng)},
      {"name with \"quotes\", \\ and ünïcødé", random_tensor({2}, DType::u16, rng)},
  };
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"step", "12345"}, {"multi\nline", "\"quoted\" ✓"}, {"empty", ""}};
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, tensors, metadata);

  SafetensorsFile file(path);
  ASSERT_EQ(file.names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(file.names()[i], name);
    EXPECT_TRUE(file.has(name));
    EXPECT_EQ(file.info(name).dtype, expected.dtype());
    EXPECT_EQ(file.info(name).shape, expected.shape());
    Tensor loaded = file.load(name);
    EXPECT_TRUE(same_bits(loaded, expected)) << loaded.describe() << " vs " << expected.describe();
    EXPECT_EQ(file.bytes(name).size(), expected.nbytes());
  }
  EXPECT_FALSE(file.has("missing"));
  EXPECT_EQ(file.metadata(), metadata);
  // A value check independent of memcmp: the 0-d scalar and one float survive exactly.
  EXPECT_EQ(file.load("scalar").data<float>()[0], tensors[7].second.data<float>()[0]);
  EXPECT_EQ(file.load("z.f32").data<float>()[14], tensors[0].second.data<float>()[14]);

  // The header is padded with spaces to a multiple of 8 and the data block follows it.
  std::vector<uint8_t> raw = read_file(path);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, raw.data(), 8);
  EXPECT_EQ(header_bytes % 8, 0u);
  size_t data_bytes = 0;
  for (const auto& [name, t] : tensors) data_bytes += t.nbytes();
  EXPECT_EQ(raw.size(), 8 + header_bytes + data_bytes);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});  // no temp left
}

TEST(Safetensors, EmptyFileAndOverwrite) {
  ScratchDir dir;
  const std::string path = dir.file("w.safetensors");
  write_safetensors(path, {});
  SafetensorsFile empty(path);
  EXPECT_TRUE(empty.names().empty());
  EXPECT_TRUE(empty.metadata().empty());

  Rng rng(7);
  Tensor t = random_tensor({4, 4}, DType::f32, rng);
  write_safetensors(path, {{"w", t}});  // replaces the previous file
  SafetensorsFile file(path);
  ASSERT_EQ(file.names(), std::vector<std::string>{"w"});
  EXPECT_TRUE(same_bits(file.load("w"), t));
}

TEST(Safetensors, LoadIntoChecksShapeAndDtypeAndFillsStridedViews) {
  ScratchDir dir;
  Rng rng(99);
  Tensor w = random_tensor({4, 3}, DType::f32, rng);
  const std::string path = dir.file("w.safetensors");
  write_safetensors(path, {{"layer.w", w}});
  SafetensorsFile file(path);

  Tensor dst = Tensor::zeros({4, 3}, DType::f32);
  file.load_into("layer.w", dst);
  EXPECT_TRUE(same_bits(dst, w));

  // Into columns [2, 5) of a [4, 6] tensor: a non-contiguous view; other columns stay zero.
  Tensor big = Tensor::zeros({4, 6}, DType::f32);
  Tensor columns = big.slice(1, 2, 3);
  ASSERT_FALSE(columns.is_contiguous());
  file.load_into("layer.w", columns);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) {
      float expected = (c >= 2 && c < 5) ? w.data<float>()[r * 3 + (c - 2)] : 0.0f;
      EXPECT_EQ(big.data<float>()[r * 6 + c], expected) << r << "," << c;
    }

  Tensor wrong_shape = Tensor::zeros({3, 4}, DType::f32);
  std::string message = error_of([&] { file.load_into("layer.w", wrong_shape); });
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  EXPECT_NE(message.find("\"layer.w\""), std::string::npos) << message;
  EXPECT_NE(message.find("expected F32[3, 4], the file has F32[4, 3]"), std::string::npos)
      << message;

  Tensor wrong_dtype = Tensor::zeros({4, 3}, DType::f64);
  message = error_of([&] { file.load_into("layer.w", wrong_dtype); });
  EXPECT_NE(message.find("expected F64[4, 3], the file has F32[4, 3]"), std::string::npos)
      << message;

  message = error_of([&] { file.load("layer.v"); });
  EXPECT_EQ(message.rfind(path + ": no tensor named \"layer.v\"", 0), 0u) << message;
}

TEST(Safetensors, WriterRejectsBadInput) {
  ScratchDir dir;
  const std::string path = dir.file("out.safetensors");
  Tensor t = Tensor::zeros({2, 3}, DType::f32);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{"a", t}, {"a", t}}); }).find("given twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{"__metadata__", t}}); }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{"a", t.slice(1, 0, 2)}}); })
                .find("not contiguous"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{"a", Tensor()}}); }).find("undefined"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{std::string("bad\xff"), t}}); })
                .find("not valid UTF-8"),
            std::string::npos);
  EXPECT_TRUE(dir.entries().empty());  // nothing written, no temporary left
}

// ---- compatibility with files written by Python's `safetensors` --------------------------------

TEST(Safetensors, ReadsAndWritesTheReferenceLayoutByteForByte) {
  ScratchDir dir;
  // safetensors.torch.save_file({"attn.0": torch.arange(6.).reshape(1, 2, 3)}, path): compact
  // JSON, 64 bytes (already a multiple of 8, so no padding), then six little-endian floats.
  {
    const std::string header =
        R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
    ASSERT_EQ(header.size(), 64u);
    std::vector<uint8_t> expected = file_bytes(header, le_bytes<float>({0, 1, 2, 3, 4, 5}));
    const std::string path = dir.file("python1.safetensors");
    write_plain(path, expected);
    SafetensorsFile file(path);
    ASSERT_EQ(file.names(), std::vector<std::string>{"attn.0"});
    Tensor t = file.load("attn.0");
    ASSERT_EQ(t.shape(), (Shape{1, 2, 3}));
    for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(i));
    const std::string ours = dir.file("ours1.safetensors");
    write_safetensors(ours, {{"attn.0", t}});
    EXPECT_EQ(read_file(ours), expected);
  }
  // Same with a 65-byte header: the reference pads it with 7 spaces to 72.
  {
    const std::string header =
        std::string(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})") +
        "       ";
    ASSERT_EQ(header.size(), 72u);
    std::vector<uint8_t> expected =
        file_bytes(header, le_bytes<float>({0.5f, -1.25f, 3.0f, 1e-3f, -7.0f, 42.0f}));
    const std::string path = dir.file("python2.safetensors");
    write_plain(path, expected);
    SafetensorsFile file(path);
    Tensor t = file.load("attn0");
    EXPECT_EQ(t.data<float>()[1], -1.25f);
    EXPECT_EQ(t.data<float>()[5], 42.0f);
    const std::string ours = dir.file("ours2.safetensors");
    write_safetensors(ours, {{"attn0", t}});
    EXPECT_EQ(read_file(ours), expected);
  }
  // save_file({"b": int32 [1, 2, 3], "a": float32 [[1, 2], [3, 4]]}, path, metadata={"format":
  // "pt"}): "__metadata__" first, tensors sorted by descending dtype alignment then name
  // (F32 "a" before I32 "b"), 143 bytes of JSON + 1 space.
  {
    const std::string header =
        std::string(R"({"__metadata__":{"format":"pt"},)") +
        R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)" +
        R"("b":{"dtype":"I32","shape":[3],"data_offsets":[16,28]}} )";
    ASSERT_EQ(header.size(), 144u);
    std::vector<uint8_t> data = le_bytes<float>({1, 2, 3, 4});
    std::vector<uint8_t> ints = le_bytes<int32_t>({1, -2, 300000});
    data.insert(data.end(), ints.begin(), ints.end());
    std::vector<uint8_t> expected = file_bytes(header, data);
    const std::string path = dir.file("python3.safetensors");
    write_plain(path, expected);
    SafetensorsFile file(path);
    EXPECT_EQ(file.names(), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
    Tensor b = file.load("b");
    EXPECT_EQ(b.dtype(), DType::i32);
    EXPECT_EQ(b.data<int32_t>()[1], -2);
    EXPECT_EQ(b.data<int32_t>()[2], 300000);
    EXPECT_EQ(file.load("a").data<float>()[3], 4.0f);
    const std::string ours = dir.file("ours3.safetensors");
    write_safetensors(ours, {{"a", file.load("a")}, {"b", b}}, {{"format", "pt"}});
    EXPECT_EQ(read_file(ours), expected);
  }
  // Header order need not be data order, nor padded (an older writer): the reader sorts by
  // offset and names() follows the data.
  {
    const std::string header =
        R"({"second":{"dtype":"U16","shape":[2],"data_offsets":[8,12]},)"
        R"("first":{"shape":[2],"data_offsets":[0,8],"dtype":"I32"}})";
    std::vector<uint8_t> data = le_bytes<int32_t>({-5, 6});
    std::vector<uint8_t> shorts = le_bytes<uint16_t>({65535, 7});
    data.insert(data.end(), shorts.begin(), shorts.end());
    const std::string path = dir.file("unordered.safetensors");
    write_plain(path, file_bytes(header, data));
    SafetensorsFile file(path);
    EXPECT_EQ(file.names(), (std::vector<std::string>{"first", "second"}));
    EXPECT_EQ(file.load("first").data<int32_t>()[0], -5);
    EXPECT_EQ(file.load("second").data<uint16_t>()[0], 65535);
  }
}

// ---- validation ------------------------------------------------------------------------------

TEST(Safetensors, RejectsEveryMalformedHeader) {
  ScratchDir dir;
  const std::vector<uint8_t> eight = le_bytes<float>({1.5f, -2.5f});  // 8 data bytes
  const std::vector<uint8_t> twelve = le_bytes<float>({1.5f, -2.5f, 4.0f});

  // Sizes and lengths.
  expect_rejected(dir, {1, 2, 3, 4, 5}, "too short for the 8-byte header length");
  expect_rejected(dir, {}, "too short for the 8-byte header length");
  {
    std::vector<uint8_t> bytes;
    append_u64(bytes, 1000);
    bytes.push_back('{');
    bytes.push_back('}');
    expect_rejected(dir, bytes, "reaches past the end of the 10-byte file");
    bytes.clear();
    append_u64(bytes, uint64_t{1} << 62);  // a lying length must not be allocated
    expect_rejected(dir, bytes, "exceeds the 100000000-byte limit");
    bytes.clear();
    append_u64(bytes, ~uint64_t{0});
    expect_rejected(dir, bytes, "exceeds the 100000000-byte limit");
  }

  // JSON syntax and top-level type.
  expect_header_rejected(dir, R"({"a":)", {}, "not valid JSON");
  expect_header_rejected(dir, "", {}, "not valid JSON");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32"}} trailing)", {}, "not valid JSON");
  expect_header_rejected(dir, "{\"\xff\xfe\":{}}", {}, "not valid JSON");  // invalid UTF-8
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})",
                         {}, "not valid JSON");  // number overflow
  expect_header_rejected(dir, "[1,2]", {}, "header is not a JSON object but array");
  expect_header_rejected(dir, "\"text\"", {}, "header is not a JSON object but string");
  expect_header_rejected(dir, R"({"a":{"shape":[[[1]]]}})", {}, "nests JSON deeper");

  // Entry structure and JSON types.
  expect_header_rejected(dir, R"({"a":5})", {}, "tensor \"a\": entry is not a JSON object");
  expect_header_rejected(dir, R"({"a":[]})", {}, "entry is not a JSON object but array");
  expect_header_rejected(dir, R"({"a":{"shape":[2],"data_offsets":[0,8]}})", eight,
                         "missing \"dtype\"");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", eight,
                         "missing \"shape\"");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2]}})", eight,
                         "missing \"data_offsets\"");
  expect_header_rejected(dir, R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", eight,
                         "\"dtype\" is not a string");
  expect_header_rejected(dir, R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})",
                         {1, 2, 3, 4}, "unknown dtype 'F16'");
  expect_header_rejected(dir, R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", eight,
                         "unknown dtype 'f32'");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", eight,
                         "\"shape\" is not an array");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":{"0":2},"data_offsets":[0,8]}})",
                         eight, "\"shape\" is not an array");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":8}})", eight,
                         "\"data_offsets\" is not an array of two integers");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})",
                         eight, "\"data_offsets\" is not an array of two integers");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}})",
                         eight, "data_offsets begin is not a number");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})",
                         eight, "data_offsets end is not an integer");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,8]}})",
                         eight, "data_offsets begin is negative");

  // Shape values.
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight,
                         "shape dimension 0 is negative");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[1,2.5],"data_offsets":[0,8]}})",
                         eight, "shape dimension 1 is not an integer");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}})",
                         eight, "shape dimension 0 is not a number");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[null],"data_offsets":[0,8]}})",
                         eight, "shape dimension 0 is not a number");
  expect_header_rejected(
      dir, R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}})", eight,
      "is not an integer");  // beyond uint64: JSON parses it as a float
  expect_header_rejected(
      dir, R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", eight,
      "is too large");
  // Products that wrap around 2^64: 2^32 * 2^32 * 16 elements, and 2^62 F32 elements = 2^64
  // bytes. The data_offsets pretend the wrapped size is 0, which must not fool the check.
  expect_header_rejected(
      dir,
      R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", {},
      "overflows");
  expect_header_rejected(
      dir, R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", {},
      "overflows");
  expect_header_rejected(
      dir, R"({"a":{"dtype":"U16","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", {},
      "overflows");  // 0 elements, but the strides of such a shape would overflow
  expect_header_rejected(
      dir, R"({"a":{"dtype":"U16","shape":[0,4294967296,2147483648],"data_offsets":[0,0]}})", {},
      "overflows");  // 2^63: fits uint64, not the int64 that shapes and strides use

  // Offsets against the data block.
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight,
                         "have begin > end");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         {1, 2, 3, 4}, "reach past the end of the 4-byte data block");
  expect_header_rejected(
      dir,
      R"({"a":{"dtype":"F32","shape":[2],)"
      R"("data_offsets":[18446744073709551608,18446744073709551615]}})",
      eight, "reach past the end");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", twelve,
                         "span 12 bytes but F32[2] needs 8 bytes");
  expect_header_rejected(dir, R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", eight,
                         "span 8 bytes but F64[2] needs 16 bytes");
  expect_header_rejected(dir,
                         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         twelve, "tensor \"b\" data [4, 12) overlaps tensor \"a\" data [0, 8)");
  expect_header_rejected(dir,
                         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         eight, "overlaps");  // two names for the same bytes
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight,
                         "gap of 4 unused bytes");
  expect_header_rejected(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", twelve,
                         "4 trailing bytes");
  expect_header_rejected(dir, R"({})", eight, "8 trailing bytes");

  // Metadata.
  expect_header_rejected(dir, R"({"__metadata__":["pt"]})", {},
                         "__metadata__ is not a JSON object");
  expect_header_rejected(dir, R"({"__metadata__":{"format":"pt","step":12}})", {},
                         "__metadata__ value for \"step\" is not a string but number");
  expect_header_rejected(dir, R"({"__metadata__":{"nested":{"x":"y"}}})", {},
                         "__metadata__ value for \"nested\" is not a string but object");

  // Duplicate keys, which nlohmann::json alone would merge silently.
  expect_header_rejected(dir,
                         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         eight, "duplicate key \"a\" in header");
  expect_header_rejected(dir,
                         R"({"a":{"dtype":"F32","dtype":"F64","shape":[2],"data_offsets":[0,8]}})",
                         eight, "duplicate key \"dtype\"");
  expect_header_rejected(dir, R"({"__metadata__":{"k":"1","k":"2"}})", {}, "duplicate key \"k\"");
  expect_header_rejected(dir, R"({"__metadata__":{},"__metadata__":{}})", {},
                         "duplicate key \"__metadata__\"");

  // A missing file names itself too.
  const std::string missing = dir.file("does-not-exist.safetensors");
  std::string message = error_of([&] { SafetensorsFile file(missing); });
  EXPECT_EQ(message.rfind(missing + ": cannot open", 0), 0u) << message;
  EXPECT_NE(message.find("No such file"), std::string::npos) << message;
  message = error_of([&] { SafetensorsFile file(dir.file("")); });  // a directory
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
}

// A small valid file with several dtypes, metadata, a scalar and an empty tensor.
std::vector<uint8_t> small_valid_file(const ScratchDir& dir) {
  Rng rng(2024);
  const std::string path = dir.file("small.safetensors");
  write_safetensors(path,
                    {{"w", random_tensor({2, 3}, DType::f32, rng)},
                     {"ids", random_tensor({3}, DType::i32, rng)},
                     {"empty", random_tensor({0, 2}, DType::f64, rng)},
                     {"s", random_tensor({}, DType::bf16, rng)},
                     {"d", random_tensor({2}, DType::f64, rng)}},
                    {{"format", "pt"}});
  return read_file(path);
}

TEST(Safetensors, EveryTruncationIsAnError) {
  ScratchDir dir;
  const std::vector<uint8_t> valid = small_valid_file(dir);
  ASSERT_NO_THROW(SafetensorsFile(valid, "valid"));
  ASSERT_GT(valid.size(), 100u);
  const std::string path = dir.file("truncated.safetensors");
  for (size_t length = 0; length < valid.size(); ++length) {
    SCOPED_TRACE(length);
    write_plain(path, std::vector<uint8_t>(valid.begin(), valid.begin() + length));
    std::string message = error_of([&] { SafetensorsFile file(path); });
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  }
  // One byte too many is an error as well (trailing data).
  std::vector<uint8_t> longer = valid;
  longer.push_back(0);
  EXPECT_NE(error_of([&] { SafetensorsFile file(longer, "longer"); }).find("trailing bytes"),
            std::string::npos);
}

TEST(Safetensors, RandomHeaderCorruptionNeverCrashes) {
  ScratchDir dir;
  const std::vector<uint8_t> valid = small_valid_file(dir);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, valid.data(), 8);
  const size_t header_end = 8 + header_bytes;
  // Bytes that change JSON structure and numbers, which random bytes alone rarely hit.
  const std::string interesting = "{}[]\":,-.0123456789eE \\ntfu";
  Rng rng(31337);
  int rejected = 0, accepted = 0;
  for (int trial = 0; trial < 600; ++trial) {
    std::vector<uint8_t> bytes = valid;
    const int mutations = 1 + static_cast<int>(rng.below(4));
    for (int m = 0; m < mutations; ++m) {
      // Mostly the JSON text, sometimes the length prefix.
      size_t at = rng.below(10) == 0 ? rng.below(8) : 8 + rng.below(header_bytes);
      bytes[at] = rng.below(2) ? interesting[rng.below(interesting.size())]
                               : static_cast<uint8_t>(rng.next_u64());
    }
    if (rng.below(8) == 0) bytes.resize(header_end + rng.below(valid.size() - header_end));
    try {
      SafetensorsFile file(bytes, "mutant");
      // Accepted: everything it claims must be loadable and self-consistent.
      uint64_t mutant_header_bytes = 0;
      std::memcpy(&mutant_header_bytes, bytes.data(), 8);
      for (const std::string& name : file.names()) {
        Tensor t = file.load(name);
        ASSERT_EQ(t.nbytes(), file.bytes(name).size());
        ASSERT_LE(file.info(name).data_end, bytes.size() - 8 - mutant_header_bytes);
      }
      ++accepted;
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind("mutant: ", 0), 0u) << e.what();
      ++rejected;
    }
  }
  // Most mutations break something; a validator that accepted everything would fail here.
  EXPECT_GT(rejected, 300);
  EXPECT_EQ(accepted + rejected, 600);
}

// ---- atomic writes ---------------------------------------------------------------------------

TEST(AtomicFile, ReplacesContentsAndLeavesNoTemporary) {
  ScratchDir dir;
  const std::string path = dir.file("state.json");
  write_file_atomic(path, std::string_view("first version"));
  std::vector<uint8_t> bytes = read_file(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "first version");
  write_file_atomic(path, [](std::FILE* f) { std::fputs("second", f); });
  bytes = read_file(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "second");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"state.json"});
}

TEST(AtomicFile, ThrowingWriterLeavesOldFileAndNoTemporary) {
  ScratchDir dir;
  Rng rng(5);
  const std::string path = dir.file("model.safetensors");
  Tensor old_tensor = random_tensor({64, 8}, DType::f32, rng);
  write_safetensors(path, {{"w", old_tensor}});
  const std::vector<uint8_t> old_bytes = read_file(path);

  EXPECT_THROW(write_file_atomic(path,
                                 [](std::FILE* f) {
                                   std::vector<uint8_t> junk(100000, 0xAB);
                                   std::fwrite(junk.data(), 1, junk.size(), f);
                                   throw std::runtime_error("writer failed midway");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_file(path), old_bytes);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});

  {  // The class form: destroyed without commit() is an abort too.
    AtomicFileWriter writer(path);
    writer.write(std::string_view("partial"));
    EXPECT_TRUE(fs::exists(writer.temp_path()));
  }
  EXPECT_EQ(read_file(path), old_bytes);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(same_bits(SafetensorsFile(path).load("w"), old_tensor));
}

TEST(AtomicFile, ErrorsNameThePathAndTheSystemError) {
  ScratchDir dir;
  const std::string path = dir.file("no-such-dir/out.bin");
  std::string message = error_of([&] { write_file_atomic(path, std::string_view("x")); });
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  message = error_of([&] { read_file(dir.file("absent.bin")); });
  EXPECT_EQ(message.rfind(dir.file("absent.bin") + ": cannot open", 0), 0u) << message;
}

TEST(AtomicFile, SigkilledWriterLeavesOldFileLoadable) {
  ScratchDir dir;
  Rng rng(77);
  const std::string path = dir.file("checkpoint.safetensors");
  Tensor old_tensor = random_tensor({128, 64}, DType::f32, rng);
  write_safetensors(path, {{"w", old_tensor}}, {{"step", "100"}});

  constexpr size_t kChunk = 1 << 20;
  constexpr int kChunksBeforeKill = 8;  // of a 64 MiB file
  std::fflush(nullptr);                 // nothing buffered may be written twice by the child
  pid_t child = ::fork();
  ASSERT_GE(child, 0) << "fork failed";
  if (child == 0) {
    // Child: start replacing the checkpoint, then die the hardest way mid-write.
    try {
      write_file_atomic(path, [&](std::FILE* f) {
        std::vector<uint8_t> chunk(kChunk, 0x5A);
        for (int i = 0; i < 64; ++i) {
          std::fwrite(chunk.data(), 1, chunk.size(), f);
          if (i + 1 == kChunksBeforeKill) {
            std::fflush(f);  // the partial temporary is really on its way to disk
            ::raise(SIGKILL);
          }
        }
      });
    } catch (...) {
    }
    ::_exit(3);  // not reached unless SIGKILL failed
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited normally with status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  // The child got midway: its temporary exists with the bytes written before the kill...
  const std::string temp = path + ".tmp." + std::to_string(child);
  ASSERT_TRUE(fs::exists(temp));
  EXPECT_EQ(fs::file_size(temp), kChunk * kChunksBeforeKill);
  // ...and the checkpoint at `path` is still the complete old one.
  SafetensorsFile file(path);
  EXPECT_TRUE(same_bits(file.load("w"), old_tensor));
  EXPECT_EQ(file.metadata().at("step"), "100");

  // A later writer (another pid) is not disturbed by the stale temporary.
  Tensor new_tensor = random_tensor({4}, DType::f32, rng);
  write_safetensors(path, {{"w", new_tensor}}, {{"step", "200"}});
  EXPECT_TRUE(same_bits(SafetensorsFile(path).load("w"), new_tensor));
  fs::remove(temp);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"checkpoint.safetensors"});
}

}  // namespace
}  // namespace sf
