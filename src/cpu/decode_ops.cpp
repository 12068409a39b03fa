// decode_ops.cpp — CPU kernels for incremental decoding: RoPE at per-row positions, KV-cache
// writes (one row per sequence, or a prefill's range of positions), and one-query-per-sequence attention over a (possibly ring) cache.
//
// Every output element is computed by one thread in a fixed order, so results do not depend on
// the number of threads: the concurrent and sequential decode schedules give bit-identical
// logits.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

namespace sf::cpu {

template <class T>
void rope_at(T* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim,
             double theta) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for if (rows * heads * head_dim > 16384)
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t m = 0; m < half; ++m) {
      const double freq = std::pow(theta, -2.0 * static_cast<double>(m) / static_cast<double>(head_dim));
      const double angle = static_cast<double>(positions[n]) * freq;
      const double c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        T* pair = x + (n * heads + h) * head_dim + 2 * m;
        const double a = pair[0], b = pair[1];
        pair[0] = static_cast<T>(a * c - b * s);
        pair[1] = static_cast<T>(a * s + b * c);
      }
    }
  }
}

template <class T>
void kv_cache_write(T* cache, const T* rows, const int32_t* slots, int64_t batch, int64_t capacity,
                    int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(cache + (b * capacity + slots[b]) * width, rows + b * width, sizeof(T) * width);
}

template <class T>
void kv_cache_write_range(T* cache, const T* rows, int64_t sequence, int64_t first_position,
                          int64_t n, int64_t capacity, int64_t width) {
  // A ring keeps the last `capacity` positions: earlier rows would be overwritten anyway.
  const int64_t skip = n > capacity ? n - capacity : 0;
  for (int64_t r = skip; r < n; ++r) {
    const int64_t slot = (first_position + r) % capacity;
    std::memcpy(cache + (sequence * capacity + slot) * width, rows + r * width, sizeof(T) * width);
  }
}

template <class T>
void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache,
                      const int32_t* key_begin, const int32_t* key_end, int64_t batch,
                      int64_t q_heads, int64_t kv_heads, int64_t capacity, int64_t head_dim) {
  const int64_t group = q_heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
#pragma omp parallel if (batch * q_heads * capacity * head_dim > 65536)
  {
    std::vector<double> scores, acc(static_cast<size_t>(head_dim));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < q_heads; ++h) {
        T* o = out + (b * q_heads + h) * head_dim;
        const T* qh = q + (b * q_heads + h) * head_dim;
        const int64_t kvh = h / group;
        const int64_t begin = key_begin[b], end = key_end[b];
        if (end <= begin) {
          for (int64_t d = 0; d < head_dim; ++d) o[d] = T(0);
          continue;
        }
        scores.resize(static_cast<size_t>(end - begin));
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = begin; j < end; ++j) {
          const T* kj = k_cache + ((b * capacity + j % capacity) * kv_heads + kvh) * head_dim;
          double dot = 0.0;
          for (int64_t d = 0; d < head_dim; ++d) dot += static_cast<double>(qh[d]) * kj[d];
          scores[j - begin] = dot * scale;
          max_score = std::max(max_score, scores[j - begin]);
        }
        double sum = 0.0;
        for (double& s : scores) {
          s = std::exp(s - max_score);
          sum += s;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = begin; j < end; ++j) {
          const T* vj = v_cache + ((b * capacity + j % capacity) * kv_heads + kvh) * head_dim;
          const double p = scores[j - begin] / sum;
          for (int64_t d = 0; d < head_dim; ++d) acc[d] += p * vj[d];
        }
        for (int64_t d = 0; d < head_dim; ++d) o[d] = static_cast<T>(acc[d]);
      }
    }
  }
}

#define SF_INSTANTIATE(T)                                                                      \
  template void rope_at<T>(T*, const int32_t*, int64_t, int64_t, int64_t, double);            \
  template void kv_cache_write<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t);   \
  template void kv_cache_write_range<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t,      \
                                        int64_t);                                             \
  template void attention_decode<T>(T*, const T*, const T*, const T*, const int32_t*,         \
                                    const int32_t*, int64_t, int64_t, int64_t, int64_t, int64_t);
SF_INSTANTIATE(float)
SF_INSTANTIATE(double)
#undef SF_INSTANTIATE

}  // namespace sf::cpu
