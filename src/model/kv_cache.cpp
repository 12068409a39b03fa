// kv_cache.cpp — KvCache allocation and row views; StepIndices fill and upload.
#include "model/kv_cache.h"

#include <new>

#include "core/error.h"

namespace sf {

namespace {

AttentionMask cross_mask_of(const ModelConfig& c) { return AttentionMask::staggered(c.cross_window); }

std::string bytes_text(int64_t bytes) {
  return fmt::format("{:.2f} GiB ({} bytes)", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0),
                     bytes);
}

}  // namespace

int64_t KvCache::bytes_for(const ModelConfig& c, DType dtype, int64_t batch, int64_t context) {
  const int64_t row = 2 * c.kv_dim() * static_cast<int64_t>(dtype_size(dtype));  // K and V
  const int64_t self = c.n_stacks * batch * AttentionMask::causal().cache_slots(context);
  const int64_t cross = (c.n_stacks - 1) * batch * cross_mask_of(c).cache_slots(context);
  return c.layers_per_stack * row * (self + cross);
}

KvCache::KvCache(Backend& backend, const ModelConfig& c, DType dtype, int64_t batch, int64_t context)
    : batch_(batch),
      stacks_(c.n_stacks),
      self_mask_(AttentionMask::causal()),
      cross_mask_(cross_mask_of(c)),
      self_slots_(self_mask_.cache_slots(context)),
      cross_slots_(cross_mask_.cache_slots(context)) {
  SF_CHECK(batch >= 1 && context >= 1, "KvCache: batch {} and context {} must be >= 1", batch,
           context);
  const int64_t p = c.n_stacks, hd = c.head_dim(), Hkv = c.n_kv_heads;
  const int64_t asked = bytes_for(c, dtype, batch, context);
  try {
    for (int64_t l = 0; l < c.layers_per_stack; ++l) {
      self_.push_back({backend.zeros({p * batch, self_slots_, Hkv, hd}, dtype),
                       backend.zeros({p * batch, self_slots_, Hkv, hd}, dtype)});
      if (p > 1)
        cross_.push_back({backend.zeros({(p - 1) * batch, cross_slots_, Hkv, hd}, dtype),
                          backend.zeros({(p - 1) * batch, cross_slots_, Hkv, hd}, dtype)});
    }
  } catch (const std::bad_alloc&) {
    fail(fmt::format("the key/value caches for {} sequences of {} positions need {} of {} memory, "
                     "which is not available: use fewer sequences or a shorter context",
                     batch, context, bytes_text(asked), device_name(backend.device())));
  } catch (const Error& e) {
    fail(fmt::format("the key/value caches for {} sequences of {} positions need {} of {} memory: "
                     "{}; use fewer sequences or a shorter context",
                     batch, context, bytes_text(asked), device_name(backend.device()), e.what()));
  }
  bytes_ = asked;
}

LayerKv KvCache::self(int64_t layer, int64_t first, int64_t count) const {
  SF_CHECK(layer >= 0 && layer < static_cast<int64_t>(self_.size()) && first >= 0 &&
               count >= 1 && first + count <= stacks_,
           "KvCache::self: layer {}, stacks [{}, {}) of {}", layer, first, first + count, stacks_);
  const LayerKv& kv = self_[layer];
  return {kv.k.slice(0, first * batch_, count * batch_), kv.v.slice(0, first * batch_, count * batch_)};
}

LayerKv KvCache::cross(int64_t layer, int64_t first, int64_t count) const {
  SF_CHECK(layer >= 0 && layer < static_cast<int64_t>(cross_.size()) && first >= 1 &&
               count >= 1 && first + count <= stacks_,
           "KvCache::cross: layer {}, stacks [{}, {}) of {} (cross caches exist for stacks >= 1)",
           layer, first, first + count, stacks_);
  const LayerKv& kv = cross_[layer];
  const int64_t row = (first - 1) * batch_, rows = count * batch_;
  return {kv.k.slice(0, row, rows), kv.v.slice(0, row, rows)};
}

StepIndices::StepIndices(Backend& backend, const KvCache& cache)
    : batch_(cache.batch()),
      stacks_(cache.stacks()),
      width_(cache.batch()),
      self_mask_(cache.self_mask()),
      cross_mask_(cache.cross_mask()),
      self_slots_(cache.self_slots()),
      cross_slots_(cache.cross_slots()) {
  host_ = Tensor::zeros({kFields, stacks_ * batch_}, DType::i32);
  device_ = backend.zeros({kFields, stacks_ * batch_}, DType::i32);
}

void StepIndices::set_width(int64_t n) {
  SF_CHECK(n >= 1 && n <= batch_, "StepIndices::set_width: {} sequences of {}", n, batch_);
  width_ = n;
}

void StepIndices::set(int64_t b, int32_t token_id, int64_t i) {
  SF_CHECK(b >= 0 && b < width_, "StepIndices::set: sequence {} of a step of {}", b, width_);
  SF_CHECK(i >= 1 && i < self_slots_, "StepIndices::set: position {} outside a context of {}", i,
           self_slots_);
  const KeyRange self = self_mask_.keys_visible(i), cross = cross_mask_.keys_visible(i);
  const int64_t values[kFields] = {token_id,        i,           i % self_slots_,
                                   self.begin,      self.end,    i - 1,
                                   (i - 1) % cross_slots_,      cross.begin, cross.end};
  int32_t* h = host_.data<int32_t>();
  // (the rows of a step of width n are the first p * n of each field's p * B)
  const int64_t columns = stacks_ * batch_;
  for (int f = 0; f < kFields; ++f)
    for (int64_t s = 0; s < stacks_; ++s) h[f * columns + s * width_ + b] = static_cast<int32_t>(values[f]);
}

void StepIndices::upload(Backend& backend) { backend.copy(device_, host_); }

Tensor StepIndices::rows(Field f, int64_t first, int64_t count) const {
  SF_CHECK(f >= 0 && f < kFields && first >= 0 && count >= 1 && first + count <= stacks_,
           "StepIndices::rows: field {}, stacks [{}, {}) of {}", static_cast<int>(f), first,
           first + count, stacks_);
  return device_.select(f).slice(0, first * width_, count * width_);
}

}  // namespace sf
