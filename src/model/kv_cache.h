// kv_cache.h — the state incremental decoding keeps on the device: the key/value caches of every
// attention sub-block (KvCache), and the per-row indices of one decode step (StepIndices).
//
// Rows: the caches of all stacks of one layer are one tensor whose row blocks are the stacks'
// (stack s, sequence b at row s * B + b; the cross caches of stacks 1..p-1 at row (s-1) * B + b),
// so the stacks a decode step runs together read and write their caches as one row range.
// Slots: position j of a cache lives in slot j % slots, the number of slots being what the
// attention mask needs (AttentionMask::cache_slots): the whole context for self-attention, a
// ring of cross_window slots for windowed cross-attention.
#pragma once

#include <cstdint>
#include <vector>

#include "core/attention_mask.h"
#include "core/backend.h"
#include "model/config.h"

namespace sf {

// One attention sub-block's cache rows: K and V, [rows, slots, Hkv, hd], keys after RoPE.
struct LayerKv {
  Tensor k, v;
};

class KvCache {
 public:
  // Caches for `batch` sequences of up to `context` positions, dtype `dtype`, on `backend`.
  // Allocation failure is an error naming the bytes asked.
  KvCache(Backend& backend, const ModelConfig& config, DType dtype, int64_t batch, int64_t context);

  int64_t batch() const { return batch_; }
  int64_t stacks() const { return stacks_; }
  const AttentionMask& self_mask() const { return self_mask_; }
  const AttentionMask& cross_mask() const { return cross_mask_; }
  int64_t self_slots() const { return self_slots_; }
  int64_t cross_slots() const { return cross_slots_; }
  // Layer l's self-attention cache rows of stacks [first, first + count).
  LayerKv self(int64_t layer, int64_t first_stack, int64_t count) const;
  // Layer l's cross-attention cache rows of stacks [first, first + count), first >= 1.
  LayerKv cross(int64_t layer, int64_t first_stack, int64_t count) const;
  int64_t bytes() const { return bytes_; }

  // Bytes the caches of `config` take for `batch` sequences of `context` positions.
  static int64_t bytes_for(const ModelConfig& config, DType dtype, int64_t batch, int64_t context);

 private:
  int64_t batch_, stacks_;
  AttentionMask self_mask_, cross_mask_;
  int64_t self_slots_, cross_slots_;
  std::vector<LayerKv> self_, cross_;  // per layer: [p*B, ...], [(p-1)*B, ...]
  int64_t bytes_ = 0;
};

// The per-row indices of one decode step for p*n rows, the step running the first n (its width,
// at most B) of the caches' B sequences (row s * n + b: stack s, sequence b; every stack's block
// holds the same values, so a step's row range of any stacks reads its own slice): the token,
// its position i, where its self-attention key goes and which keys it sees, and the memory
// position i - 1 that stacks >= 1 append to their cross caches before attending to i - w .. i - 1.
// Filled on the host, sequence by sequence, then uploaded in one copy.
class StepIndices {
 public:
  enum Field {
    token,            // the sequence's new token x_i
    position,         // i: queries and self-attention keys are rotated here
    self_slot,        // i % self slots
    self_begin,       // self-attention keys [begin, end)
    self_end,
    memory_position,  // i - 1: the memory row appended this step (keys rotated here)
    cross_slot,       // (i - 1) % cross slots
    cross_begin,      // cross-attention keys [begin, end)
    cross_end,
    kFields
  };

  // Width B (every sequence) until set_width().
  StepIndices(Backend& backend, const KvCache& cache);

  // The step's width n: it runs sequences 0..n-1 (1 <= n <= B). The values set before are
  // forgotten: every sequence of the step is set again.
  void set_width(int64_t n);
  int64_t width() const { return width_; }
  // Sequence b (< width) feeds `token` at `position` (>= 1) this step.
  void set(int64_t sequence, int32_t token, int64_t position);
  // Copies the host values to the backend (one copy).
  void upload(Backend& backend);
  // Field f of the rows of stacks [first, first + count): I32 [count * width] on the backend.
  Tensor rows(Field f, int64_t first_stack, int64_t count) const;

 private:
  int64_t batch_, stacks_, width_;
  AttentionMask self_mask_, cross_mask_;
  int64_t self_slots_, cross_slots_;
  Tensor host_, device_;  // I32 [kFields, p * B]
};

}  // namespace sf
