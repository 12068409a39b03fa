// cpu_backend_decode.cpp — the CpuBackend's decoding operations: several small linear layers in
// one parallel region, RoPE at per-row positions, key/value cache writes (per step and a
// prefill's range), and attention of one query per sequence over its cache. The kernels are in
// linear_small.cpp and decode_ops.cpp.
#include <algorithm>

#include "cpu/cpu_backend.h"
#include "cpu/cpu_checks.h"
#include "cpu/kernels.h"

namespace sf {

using namespace cpu;  // the argument checks of cpu_checks.h

void CpuBackend::linear_many(const std::vector<LinearTask>& given) {
  if (given.empty()) return;
  const std::vector<LinearTask> tasks = materialize_inputs(given);  // norms and gates first
  bool small = true;
  for (const LinearTask& t : tasks) {
    check_float(t.x, "linear_many");
    check_float(t.w, "linear_many");
    check_float(t.out, "linear_many");
    SF_CHECK(t.x.ndim() == 2 && t.w.ndim() == 2 && t.out.ndim() == 2 &&
                 t.x.dtype() == t.out.dtype() && t.w.dtype() == t.out.dtype() &&
                 t.x.dim(1) == t.w.dim(1) && t.out.dim(0) == t.x.dim(0) &&
                 t.out.dim(1) == t.w.dim(0),
             "linear_many: out {} = x {} @ w {}^T does not conform", t.out.describe(),
             t.x.describe(), t.w.describe());
    SF_CHECK(t.out.dtype() == tasks[0].out.dtype(), "linear_many: tasks of dtypes {} and {}",
             t.out.describe(), tasks[0].out.describe());
    small = small && t.x.dim(0) <= kSmallRows;
  }
  if (!small) {  // prefill-sized products: OpenBLAS, one after the other
    Backend::linear_many(tasks);
    return;
  }
  dispatch(tasks[0].out, [&](auto z) {
    using T = decltype(z);
    std::vector<SmallProduct<T>> products;
    products.reserve(tasks.size());
    for (const LinearTask& t : tasks)
      products.push_back({t.out.data<T>(), t.x.data<T>(), t.w.data<T>(), t.x.dim(0), t.w.dim(0),
                          t.w.dim(1), 1.0, t.accumulate ? 1.0 : 0.0});
    linear_small_many<T>(products.data(), static_cast<int64_t>(products.size()));
  });
}

void CpuBackend::rope_at(Tensor& x, const Tensor& positions, double theta) {
  check_float(x, "rope_at");
  SF_CHECK(x.ndim() == 3 && x.dim(2) % 2 == 0, "rope_at: expected [N, H, even head_dim], got {}",
           x.describe());
  check_indices(positions, x.dim(0), "rope_at");
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    cpu::rope_at<T>(x.data<T>(), positions.data<int32_t>(), x.dim(0), x.dim(1), x.dim(2), theta);
  });
}

void CpuBackend::kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) {
  check_float(cache, "kv_cache_write");
  check_float(rows, "kv_cache_write");
  const int64_t B = cache.dim(0), C = cache.dim(1), W = cache.numel() / std::max<int64_t>(B * C, 1);
  SF_CHECK(rows.dtype() == cache.dtype() && rows.numel() == B * W,
           "kv_cache_write: rows {} do not fit cache {}", rows.describe(), cache.describe());
  check_indices(slots, B, "kv_cache_write");
  const int32_t* s = slots.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    SF_CHECK(s[b] >= 0 && s[b] < C, "kv_cache_write: slot {} outside the cache of {} for sequence {}",
             s[b], C, b);
  dispatch(cache, [&](auto z) {
    using T = decltype(z);
    cpu::kv_cache_write<T>(cache.data<T>(), rows.data<T>(), s, B, C, W);
  });
}

void CpuBackend::kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                                      int64_t first_position) {
  check_float(cache, "kv_cache_write_range");
  check_float(rows, "kv_cache_write_range");
  const int64_t W = check_kv_cache_write_range(cache, rows, sequence, first_position);
  dispatch(cache, [&](auto z) {
    using T = decltype(z);
    cpu::kv_cache_write_range<T>(cache.data<T>(), rows.data<T>(), sequence, first_position,
                                 rows.dim(0), cache.dim(1), W);
  });
}

void CpuBackend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                  const Tensor& v_cache, const Tensor& key_begin,
                                  const Tensor& key_end) {
  check_same(out, q, "attention_decode");
  check_same(k_cache, v_cache, "attention_decode");
  SF_CHECK(q.ndim() == 3 && k_cache.ndim() == 4 && q.dtype() == k_cache.dtype(),
           "attention_decode: q {} and cache {} must be [B, Hq, hd] and [B, C, Hkv, hd]",
           q.describe(), k_cache.describe());
  const int64_t B = q.dim(0), Hq = q.dim(1), hd = q.dim(2), C = k_cache.dim(1), Hkv = k_cache.dim(2);
  SF_CHECK(k_cache.dim(0) == B && k_cache.dim(3) == hd && Hkv > 0 && Hq % Hkv == 0,
           "attention_decode: q {} does not match cache {}", q.describe(), k_cache.describe());
  check_indices(key_begin, B, "attention_decode");
  check_indices(key_end, B, "attention_decode");
  const int32_t* kb = key_begin.data<int32_t>();
  const int32_t* ke = key_end.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    SF_CHECK(kb[b] >= 0 && ke[b] - kb[b] <= C,
             "attention_decode: key range [{}, {}) of sequence {} does not fit a cache of {}", kb[b],
             ke[b], b, C);
  dispatch(q, [&](auto z) {
    using T = decltype(z);
    cpu::attention_decode<T>(out.data<T>(), q.data<T>(), k_cache.data<T>(), v_cache.data<T>(), kb,
                             ke, B, Hq, Hkv, C, hd);
  });
}


}  // namespace sf
