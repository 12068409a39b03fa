// utf8_stream.h — Utf8Stream: turns token bytes into printable chunks that never end inside a
// UTF-8 character.
//
// A byte-level BPE token can end in the middle of a multi-byte character (an emoji often spans
// two or three GPT-2 tokens). Printing such bytes at once would show a replacement character on
// the terminal, followed by another for the rest. The stream holds back an incomplete trailing
// sequence until the bytes that complete it arrive, and flush() releases whatever is left at the
// end. Bytes that can never become valid UTF-8 (a stray continuation byte, 0xC0, 0xFF, a lead
// byte followed by a non-continuation) are passed through unchanged at once: the output is always
// exactly the concatenation of the input, only the split points move.
#pragma once

#include <string>
#include <string_view>

namespace sf {

class Utf8Stream {
 public:
  // Appends `bytes` and returns the longest ready prefix of everything not yet returned: it ends
  // at a character boundary (or after bytes that cannot be completed).
  std::string push(std::string_view bytes);
  // Returns every byte still held (an incomplete sequence at the end of the text) and empties
  // the stream.
  std::string flush();
  // Number of bytes held back, waiting for the rest of their character.
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;
};

// Number of bytes at the end of `bytes` that form the beginning of a valid UTF-8 sequence still
// missing bytes (0 when the text ends on a boundary or the tail can never become valid).
size_t utf8_incomplete_tail(std::string_view bytes);

}  // namespace sf
