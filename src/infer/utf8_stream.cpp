// utf8_stream.cpp — holding back incomplete trailing UTF-8 sequences (see utf8_stream.h).
#include "infer/utf8_stream.h"

#include <cstdint>

namespace sf {

namespace {

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Length of the sequence a lead byte starts (RFC 3629: 0xC2..0xF4), or 0 if it starts none.
size_t sequence_length(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// The allowed range of the byte after `lead` (RFC 3629 table): it excludes overlong forms,
// UTF-16 surrogates (0xED 0xA0..) and code points above U+10FFFF (0xF4 0x90..).
bool valid_second_byte(uint8_t lead, uint8_t second) {
  switch (lead) {
    case 0xE0: return second >= 0xA0 && second <= 0xBF;
    case 0xED: return second >= 0x80 && second <= 0x9F;
    case 0xF0: return second >= 0x90 && second <= 0xBF;
    case 0xF4: return second >= 0x80 && second <= 0x8F;
    default: return is_continuation(second);
  }
}

}  // namespace

size_t utf8_incomplete_tail(std::string_view bytes) {
  // A sequence is at most 4 bytes, so an incomplete one starts within the last 3.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const uint8_t b = static_cast<uint8_t>(bytes[n - back]);
    if (is_continuation(b)) continue;
    const size_t need = sequence_length(b);
    if (need <= back) return 0;  // ASCII, invalid lead, or a complete sequence
    // A lead byte missing `need - back` bytes: hold it only if what follows it can still be
    // part of a valid sequence.
    if (back >= 2 && !valid_second_byte(b, static_cast<uint8_t>(bytes[n - back + 1]))) return 0;
    return back;
  }
  return 0;  // only continuation bytes at the end: no lead byte can complete them
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  const size_t hold = utf8_incomplete_tail(pending_);
  std::string ready = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return ready;
}

std::string Utf8Stream::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace sf
