// json_input.h — JSON that arrives from outside (config.json, tokenizer.json, checkpoint state,
// metrics.jsonl lines, --set values, rendezvous messages): parsing and field access that fail
// only with sf::Error, naming the source and the field.
//
// Why not nlohmann::json directly: its parser accepts any nesting depth, and printing or
// walking a deeply nested value recurses (a few hundred thousand '[' overflow the stack in an
// error message); it throws its own exception types (a number like 1e400, invalid UTF-8 when
// dumped); and get<int64_t>() of a float such as 1e20 is a conversion with undefined behaviour.
// Here every parse bounds the depth while parsing (no deep tree is ever built), every library
// exception becomes an sf::Error, and integers are range-checked before conversion.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sf {

// The deepest nesting any of our formats needs is 3 (metrics lines, checkpoint state); 16 leaves
// room for user metadata without letting a hostile file nest deeply.
inline constexpr int kJsonMaxDepth = 16;

// The size limit of our small JSON files (tokenizer.json, checkpoint state, latest.json): they
// hold a few fields; a larger file is not one of them.
inline constexpr uint64_t kJsonSmallFileBytes = 1 << 20;

// Parses `text`. `source` names it in errors ("run/config.json", "metrics.jsonl line 4").
// Throws sf::Error on invalid JSON, numbers out of range, or nesting deeper than max_depth.
nlohmann::json json_parse(std::string_view text, const std::string& source,
                          int max_depth = kJsonMaxDepth);

// Reads a whole file of at most max_bytes and parses it; errors name the path.
nlohmann::json json_read_file(const std::string& path, uint64_t max_bytes,
                              int max_depth = kJsonMaxDepth);

// At most max_chars of the value's JSON text, for error messages (invalid UTF-8 replaced;
// "..." when cut). Safe on any value json_parse returned.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 60);

// Field access. `where` is the prefix of error messages, e.g. "run/state.json: field 'step'".
// Each throws sf::Error "<where>: expected ..., got <excerpt>".
const nlohmann::json& json_member(const nlohmann::json& object, const char* key,
                                  const std::string& where);  // object with key present
// A JSON integer in [min, max]. Numbers written as floats (768.0, 1e12, 2.5) are refused: in
// our files they are always a mistake, and converting one out of range would be undefined.
int64_t json_int(const nlohmann::json& value, const std::string& where, int64_t min,
                 int64_t max);
uint64_t json_uint64(const nlohmann::json& value, const std::string& where);  // any unsigned
double json_finite(const nlohmann::json& value, const std::string& where);   // finite number
const std::string& json_string(const nlohmann::json& value, const std::string& where);
bool json_bool(const nlohmann::json& value, const std::string& where);

}  // namespace sf
