// json_input.cpp — bounded-depth JSON parsing and range-checked field access (json_input.h).
#include "io/json_input.h"

#include <cmath>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sf {

using Json = nlohmann::json;

Json json_parse(std::string_view text, const std::string& source, int max_depth) {
  // The callback sees every container as it opens, before anything below it is parsed: the
  // parse stops at the first one too deep, so no deep tree is ever built or printed.
  Json::parser_callback_t limit_depth = [&](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= max_depth)
      fail(fmt::format("{}: JSON nested deeper than {} levels", source, max_depth));
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), limit_depth, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    // Parse errors, and numbers too large for a double (1e400: out_of_range.406).
    fail(fmt::format("{}: not valid JSON ({})", source, e.what()));
  }
}

Json json_read_file(const std::string& path, uint64_t max_bytes, int max_depth) {
  const std::vector<uint8_t> bytes = read_file(path, max_bytes);
  return json_parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                    path, max_depth);
}

std::string json_excerpt(const Json& value, size_t max_chars) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > max_chars) {
    text.resize(max_chars);
    // Do not end inside a UTF-8 sequence: drop continuation bytes and their lead byte.
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
    if (!text.empty() && (static_cast<unsigned char>(text.back()) & 0x80)) text.pop_back();
    text += "...";
  }
  return text;
}

const Json& json_member(const Json& object, const char* key, const std::string& where) {
  SF_CHECK(object.is_object(), "{}: expected a JSON object, got {}", where, json_excerpt(object));
  const auto it = object.find(key);
  SF_CHECK(it != object.end(), "{}: field '{}' is missing", where, key);
  return *it;
}

int64_t json_int(const Json& value, const std::string& where, int64_t min, int64_t max) {
  auto out_of_range = [&] {
    return fmt::format("{}: expected an integer in [{}, {}], got {}", where, min, max,
                       json_excerpt(value));
  };
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (max < 0 || v > static_cast<uint64_t>(max)) fail(out_of_range());
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v < min || v > max) fail(out_of_range());
    return v;
  }
  if (value.is_number_float()) {
    // 1e12 or 768.0 where an integer belongs: refused rather than converted, since a float
    // there is a mistake (and casting 1e20 to int64 would be undefined behaviour).
    fail(fmt::format("{}: expected an integer in [{}, {}], got the floating-point number {}",
                     where, min, max, json_excerpt(value)));
  }
  fail(out_of_range());
}

uint64_t json_uint64(const Json& value, const std::string& where) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  fail(fmt::format("{}: expected a non-negative integer, got {}", where, json_excerpt(value)));
}

double json_finite(const Json& value, const std::string& where) {
  SF_CHECK(value.is_number() && std::isfinite(value.get<double>()),
           "{}: expected a finite number, got {}", where, json_excerpt(value));
  return value.get<double>();
}

const std::string& json_string(const Json& value, const std::string& where) {
  SF_CHECK(value.is_string(), "{}: expected a string, got {}", where, json_excerpt(value));
  return value.get_ref<const std::string&>();
}

bool json_bool(const Json& value, const std::string& where) {
  SF_CHECK(value.is_boolean(), "{}: expected true or false, got {}", where, json_excerpt(value));
  return value.get<bool>();
}

}  // namespace sf
