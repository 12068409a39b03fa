// kernels.h — the CPU kernels behind CpuBackend, as plain templated functions.
//
// T is float (the reference) or double (finite-difference checks). Each function has the
// contract of the Backend method of the same name (core/backend.h); shapes have been checked by
// CpuBackend before the call, so kernels take raw pointers and sizes. One file per layer:
// embedding.cpp, rmsnorm.cpp, rope.cpp, attention.cpp, swiglu.cpp, cross_entropy.cpp, adamw.cpp.
#pragma once

#include <cstdint>

#include "core/backend.h"

namespace sf::cpu {

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t rows, int64_t vocab,
                       int64_t dim);
template <class T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t rows,
                        int64_t vocab, int64_t dim);

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t rows, int64_t dim,
                     double eps);
template <class T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd,
                      int64_t rows, int64_t dim);

// x: [batch, seq, heads, head_dim]; sign = +1 forward rotation, -1 inverse (backward).
template <class T>
void rope_rotate(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, double theta,
                 int64_t position_offset, int sign);

struct AttentionShape {
  int64_t batch, q_len, kv_len, q_heads, kv_heads, head_dim;
};
template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, AttentionShape s,
                       AttentionMask mask);
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q,
                        const T* k, const T* v, AttentionShape s, AttentionMask mask);

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n);
template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n);

template <class T>
int64_t cross_entropy_forward(T* losses, const T* logits, const int32_t* targets, int64_t rows,
                              int64_t vocab);
template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, int64_t rows,
                            int64_t vocab, double scale);

// out [rows, N] = alpha * x [rows, K] @ w [N, K]^T + beta * out, for small `rows` (linear_small.cpp);
// thread-count independent results.
template <class T>
void linear_small(T* out, const T* x, const T* w, int64_t rows, int64_t out_features,
                  int64_t in_features, double alpha, double beta);
// Several independent such products in one parallel region (Backend::linear_many); each
// element is computed exactly as linear_small computes it.
template <class T>
struct SmallProduct {
  T* out;
  const T* x;
  const T* w;
  int64_t rows, out_features, in_features;
  double alpha, beta;
};
template <class T>
void linear_small_many(const SmallProduct<T>* products, int64_t count);

// Incremental decoding (decode_ops.cpp). x: [rows, heads, head_dim]; caches [B, C, ...].
template <class T>
void rope_at(T* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t head_dim,
             double theta);
template <class T>
void kv_cache_write(T* cache, const T* rows, const int32_t* slots, int64_t batch, int64_t capacity,
                    int64_t width);
// Rows [n, width] as positions first .. first + n - 1 of sequence `sequence` into cache
// [B, capacity, width], position j in slot j % capacity (the last `capacity` positions only).
template <class T>
void kv_cache_write_range(T* cache, const T* rows, int64_t sequence, int64_t first_position,
                          int64_t n, int64_t capacity, int64_t width);
template <class T>
void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache,
                      const int32_t* key_begin, const int32_t* key_end, int64_t batch,
                      int64_t q_heads, int64_t kv_heads, int64_t capacity, int64_t head_dim);

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step);

}  // namespace sf::cpu
