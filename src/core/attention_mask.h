// attention_mask.h — which key positions a query sees: the one value type for causal
// self-attention and for the staggering of cross-attention (spec §3), used by the kernels (the
// mask of a whole-sequence attention), the model (its self and cross masks), the decoder (the
// visible key range of a new position and the ring a cache needs), bench and info (how many
// keys a step reads, how many positions a cache keeps).
//
// A query at position i sees key positions j with
//     j <= i - shift,   and, when window > 0,   j >= i - shift - window + 1.
// Causal self-attention is {shift 0, window 0}: 0 <= j <= i. Staggered cross-attention with
// cross_window w is {shift 1, window w}: i - w <= j <= i - 1 (every j < i when w = 0), so
// position 0 sees nothing, and a query that sees no key outputs exactly zero.
#pragma once

#include <algorithm>
#include <cstdint>

namespace sf {

// Key positions [begin, end); empty when end <= begin.
struct KeyRange {
  int64_t begin = 0, end = 0;
  int64_t count() const { return end > begin ? end - begin : 0; }
  bool empty() const { return end <= begin; }
  bool contains(int64_t j) const { return j >= begin && j < end; }
};

struct AttentionMask {
  int shift = 0;
  int window = 0;  // 0: unbounded (every earlier position allowed by the shift)

  // Causal self-attention: a position sees itself and everything before it.
  static constexpr AttentionMask causal() { return {0, 0}; }
  // The staggering of cross-attention with cross_window w (0 = unbounded): position i sees the
  // memory positions i-w .. i-1, all produced at earlier positions.
  static constexpr AttentionMask staggered(int64_t cross_window) {
    return {1, static_cast<int>(cross_window)};
  }

  // The keys position i sees (positions below 0 do not exist: begin >= 0).
  KeyRange keys_visible(int64_t i) const {
    const int64_t end = i - shift + 1;
    const int64_t begin = window > 0 ? std::max<int64_t>(0, end - window) : 0;
    return {begin, std::max<int64_t>(begin, end)};
  }
  // Whether position i sees key position j.
  bool sees(int64_t i, int64_t j) const { return keys_visible(i).contains(j); }

  // Slots a key/value cache needs so that, while positions are written in order, every key a
  // query can still see is in it: `window` positions (a ring: position j in slot j % slots)
  // when the window is bounded and shorter than the context, else the whole context.
  int64_t cache_slots(int64_t context) const {
    return window > 0 ? std::min<int64_t>(window, context) : context;
  }
  // Key positions a cache of a context of `tokens` positions holds (what info reports).
  int64_t cached_positions(int64_t tokens) const { return std::min(cache_slots(tokens), tokens); }
};

}  // namespace sf
