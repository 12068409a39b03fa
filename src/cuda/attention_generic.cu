// attention_generic.cu — the general SIMT attention path: any even head_dim, F32 or BF16
// elements, fp32 arithmetic with accurate expf/logf. It is the fallback for what the tensor-core
// kernels (attention_forward.cu, attention_backward.cu) do not cover, and the F32 path.
//
// Layout of the work: a block of kWarps warps owns kWarps consecutive rows of one (batch, head)
// — query rows for the forward and the dq pass, key rows for the dk/dv pass — and walks the
// band of the other side that those rows can see (the mask bounds it; nothing outside the band
// is read), kChunk rows at a time staged in shared memory as fp32. Inside a chunk each lane
// owns one row of the other side for the dot products (chunk rows are padded to hd + 1 floats
// so that 32 lanes reading 32 rows at one column hit 32 different banks), then each lane owns
// the columns d = lane, lane + 32, ... of the warp's accumulators.
//
// Backward runs as two passes so that nothing is accumulated with atomics: dk/dv per key row
// (summing over the query heads of the kv head's group), then dq per query row. Both recompute
// the probabilities from lse: p = exp(scale * q.k - lse), ds = p * (dout.v - D).
#include <cmath>

#include "cuda/attention_common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"

namespace sf::cuda::attention {

namespace {

constexpr int kWarps = 4;   // rows owned by one block, one per warp
constexpr int kChunk = 32;  // rows of the other side staged per step, one per lane
constexpr int kThreads = kWarps * 32;

struct GenericShape {
  int batch, q_len, kv_len, q_heads, kv_heads, group, head_dim;
  float scale;
};

GenericShape generic_shape(const AttentionDims& d) {
  return {static_cast<int>(d.batch),    static_cast<int>(d.q_len),
          static_cast<int>(d.kv_len),   static_cast<int>(d.q_heads),
          static_cast<int>(d.kv_heads), static_cast<int>(d.q_heads / d.kv_heads),
          static_cast<int>(d.head_dim), 1.0f / sqrtf(static_cast<float>(d.head_dim))};
}

// Row `row` of head `head` in batch `batch` of a [B, T, H, hd] tensor.
template <class T>
__device__ __forceinline__ const T* row_of(const T* base, int batch, int len, int heads, int row,
                                           int head, int hd) {
  return base + ((static_cast<int64_t>(batch) * len + row) * heads + head) * hd;
}
template <class T>
__device__ __forceinline__ T* row_of(T* base, int batch, int len, int heads, int row, int head,
                                     int hd) {
  return base + ((static_cast<int64_t>(batch) * len + row) * heads + head) * hd;
}

// Stages rows [first, first + kChunk) of head `head` (rows past `last` as zeros) into `dst`
// with `stride` floats per row.
template <class T>
__device__ void stage_rows(float* dst, int stride, const T* base, int batch, int len, int heads,
                           int head, int hd, int first, int last) {
  for (int e = threadIdx.x; e < kChunk * hd; e += kThreads) {
    const int r = e / hd, d = e % hd, row = first + r;
    dst[r * stride + d] =
        row <= last ? to_float(row_of(base, batch, len, heads, row, head, hd)[d]) : 0.0f;
  }
}

__device__ __forceinline__ float dot_row(const float* a, const float* b, int hd) {
  float s = 0.0f;
  for (int d = 0; d < hd; ++d) s = fmaf(a[d], b[d], s);
  return s;
}

// ---- forward: one warp per query row ------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kThreads)
    generic_forward_kernel(const T* q, const T* k, const T* v, T* out, float* lse, GenericShape s,
                           MaskGeometry mask) {
  extern __shared__ float smem[];
  const int hd = s.head_dim, padded = hd + 1;
  float* sK = smem;                  // [kChunk][hd + 1]
  float* sV = sK + kChunk * padded;  // [kChunk][hd]
  float* sQ = sV + kChunk * hd;      // [kWarps][hd]
  float* sAcc = sQ + kWarps * hd;    // [kWarps][hd]
  float* sP = sAcc + kWarps * hd;    // [kWarps][kChunk]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / s.group;
  const int t_first = blockIdx.x * kWarps, t = t_first + warp;
  const int t_last = min(t_first + kWarps, s.q_len) - 1;
  const bool active = t < s.q_len;
  float* q_row = sQ + warp * hd;
  float* acc = sAcc + warp * hd;
  float* probs = sP + warp * kChunk;
  if (active) {
    const T* src = row_of(q, b, s.q_len, s.q_heads, t, h, hd);
    for (int d = lane; d < hd; d += 32) {
      q_row[d] = to_float(src[d]);
      acc[d] = 0.0f;
    }
  }
  const int j_lo = mask.first_key(t_first), j_hi = mask.last_key(t_last, s.kv_len);
  const int my_lo = mask.first_key(t), my_hi = mask.last_key(t, s.kv_len);
  float row_max = -INFINITY, row_sum = 0.0f;
  for (int c0 = j_lo; c0 <= j_hi; c0 += kChunk) {
    __syncthreads();  // the previous chunk is consumed (and q_row is written, the first time)
    stage_rows(sK, padded, k, b, s.kv_len, s.kv_heads, kvh, hd, c0, j_hi);
    stage_rows(sV, hd, v, b, s.kv_len, s.kv_heads, kvh, hd, c0, j_hi);
    __syncthreads();
    if (!active) continue;
    const int j = c0 + lane;
    float score = -INFINITY;
    if (j >= my_lo && j <= my_hi) score = s.scale * dot_row(q_row, sK + lane * padded, hd);
    const float new_max = fmaxf(row_max, warp_max(score));
    if (new_max == -INFINITY) continue;  // nothing visible yet (warp-uniform)
    const float alpha = expf(row_max - new_max);
    const float p = expf(score - new_max);
    row_sum = row_sum * alpha + warp_sum(p);
    row_max = new_max;
    probs[lane] = p;
    __syncwarp();
    const int rows = min(kChunk, j_hi - c0 + 1);
    for (int d = lane; d < hd; d += 32) {
      float a = acc[d] * alpha;
      for (int r = 0; r < rows; ++r) a = fmaf(probs[r], sV[r * hd + d], a);
      acc[d] = a;
    }
    __syncwarp();  // probs is rewritten by the next chunk
  }
  if (!active) return;
  T* dst = row_of(out, b, s.q_len, s.q_heads, t, h, hd);
  const float inv = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
  for (int d = lane; d < hd; d += 32) dst[d] = from_float<T>(acc[d] * inv);
  if (lane == 0)
    lse[(static_cast<int64_t>(b) * s.q_heads + h) * s.q_len + t] =
        row_sum > 0.0f ? row_max + logf(row_sum) : -INFINITY;
}

// ---- backward, dk/dv pass: one warp per key row, summing over the group's query heads ----------

template <class T>
__global__ void __launch_bounds__(kThreads)
    generic_dkdv_kernel(const T* dout, const float* lse, const float* delta, const T* q, const T* k,
                        const T* v, T* dk, T* dv, int64_t dk_stride, int64_t dv_stride,
                        GenericShape s, MaskGeometry mask) {
  extern __shared__ float smem[];
  const int hd = s.head_dim, padded = hd + 1;
  float* sQ = smem;                     // [kChunk][hd + 1]
  float* sdO = sQ + kChunk * padded;    // [kChunk][hd + 1]
  float* sLse = sdO + kChunk * padded;  // [kChunk]
  float* sD = sLse + kChunk;            // [kChunk]
  float* sKrow = sD + kChunk;           // [kWarps][hd]
  float* sVrow = sKrow + kWarps * hd;   // [kWarps][hd]
  float* sdK = sVrow + kWarps * hd;     // [kWarps][hd]
  float* sdV = sdK + kWarps * hd;       // [kWarps][hd]
  float* sP = sdV + kWarps * hd;        // [kWarps][kChunk]
  float* sDS = sP + kWarps * kChunk;    // [kWarps][kChunk]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int j_first = blockIdx.x * kWarps, j = j_first + warp;
  const int j_last = min(j_first + kWarps, s.kv_len) - 1;
  const bool active = j < s.kv_len;
  float* k_row = sKrow + warp * hd;
  float* v_row = sVrow + warp * hd;
  float* dk_acc = sdK + warp * hd;
  float* dv_acc = sdV + warp * hd;
  float* probs = sP + warp * kChunk;
  float* dscores = sDS + warp * kChunk;
  if (active) {
    const T* ksrc = row_of(k, b, s.kv_len, s.kv_heads, j, kvh, hd);
    const T* vsrc = row_of(v, b, s.kv_len, s.kv_heads, j, kvh, hd);
    for (int d = lane; d < hd; d += 32) {
      k_row[d] = to_float(ksrc[d]);
      v_row[d] = to_float(vsrc[d]);
      dk_acc[d] = 0.0f;
      dv_acc[d] = 0.0f;
    }
  }
  const int t_lo = mask.first_query(j_first), t_hi = mask.last_query(j_last, s.q_len);
  for (int h = kvh * s.group; h < (kvh + 1) * s.group; ++h) {
    const int64_t stats_row = (static_cast<int64_t>(b) * s.q_heads + h) * s.q_len;
    for (int c0 = t_lo; c0 <= t_hi; c0 += kChunk) {
      __syncthreads();
      stage_rows(sQ, padded, q, b, s.q_len, s.q_heads, h, hd, c0, t_hi);
      stage_rows(sdO, padded, dout, b, s.q_len, s.q_heads, h, hd, c0, t_hi);
      if (threadIdx.x < kChunk) {
        const int t = c0 + threadIdx.x;
        sLse[threadIdx.x] = t <= t_hi ? lse[stats_row + t] : 0.0f;
        sD[threadIdx.x] = t <= t_hi ? delta[stats_row + t] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      const int t = c0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (t <= t_hi && mask.visible(t, j)) {
        const float score = s.scale * dot_row(sQ + lane * padded, k_row, hd);
        p = expf(score - sLse[lane]);
        ds = p * (dot_row(sdO + lane * padded, v_row, hd) - sD[lane]);
      }
      probs[lane] = p;
      dscores[lane] = ds;
      __syncwarp();
      const int rows = min(kChunk, t_hi - c0 + 1);
      for (int d = lane; d < hd; d += 32) {
        float a_v = dv_acc[d], a_k = dk_acc[d];
        for (int r = 0; r < rows; ++r) {
          a_v = fmaf(probs[r], sdO[r * padded + d], a_v);
          a_k = fmaf(dscores[r], sQ[r * padded + d], a_k);
        }
        dv_acc[d] = a_v;
        dk_acc[d] = a_k;
      }
      __syncwarp();
    }
  }
  if (!active) return;
  const int64_t key_row = static_cast<int64_t>(b) * s.kv_len + j;
  T* dk_dst = dk + key_row * dk_stride + kvh * hd;
  T* dv_dst = dv + key_row * dv_stride + kvh * hd;
  for (int d = lane; d < hd; d += 32) {
    dk_dst[d] = from_float<T>(dk_acc[d] * s.scale);
    dv_dst[d] = from_float<T>(dv_acc[d]);
  }
}

// ---- backward, dq pass: one warp per query row ------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kThreads)
    generic_dq_kernel(const T* dout, const float* lse, const float* delta, const T* q, const T* k,
                      const T* v, T* dq, int64_t dq_stride, GenericShape s,
                      MaskGeometry mask) {
  extern __shared__ float smem[];
  const int hd = s.head_dim, padded = hd + 1;
  float* sK = smem;                  // [kChunk][hd + 1]
  float* sV = sK + kChunk * padded;  // [kChunk][hd + 1]
  float* sQ = sV + kChunk * padded;  // [kWarps][hd]
  float* sdO = sQ + kWarps * hd;     // [kWarps][hd]
  float* sAcc = sdO + kWarps * hd;   // [kWarps][hd]
  float* sDS = sAcc + kWarps * hd;   // [kWarps][kChunk]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / s.group;
  const int t_first = blockIdx.x * kWarps, t = t_first + warp;
  const int t_last = min(t_first + kWarps, s.q_len) - 1;
  const bool active = t < s.q_len;
  float* q_row = sQ + warp * hd;
  float* do_row = sdO + warp * hd;
  float* acc = sAcc + warp * hd;
  float* dscores = sDS + warp * kChunk;
  float row_lse = 0.0f, row_delta = 0.0f;
  if (active) {
    const T* qsrc = row_of(q, b, s.q_len, s.q_heads, t, h, hd);
    const T* dosrc = row_of(dout, b, s.q_len, s.q_heads, t, h, hd);
    for (int d = lane; d < hd; d += 32) {
      q_row[d] = to_float(qsrc[d]);
      do_row[d] = to_float(dosrc[d]);
      acc[d] = 0.0f;
    }
    const int64_t stat = (static_cast<int64_t>(b) * s.q_heads + h) * s.q_len + t;
    row_lse = lse[stat];
    row_delta = delta[stat];
  }
  const int j_lo = mask.first_key(t_first), j_hi = mask.last_key(t_last, s.kv_len);
  const int my_lo = mask.first_key(t), my_hi = mask.last_key(t, s.kv_len);
  for (int c0 = j_lo; c0 <= j_hi; c0 += kChunk) {
    __syncthreads();
    stage_rows(sK, padded, k, b, s.kv_len, s.kv_heads, kvh, hd, c0, j_hi);
    stage_rows(sV, padded, v, b, s.kv_len, s.kv_heads, kvh, hd, c0, j_hi);
    __syncthreads();
    if (!active) continue;
    const int j = c0 + lane;
    float ds = 0.0f;
    if (j >= my_lo && j <= my_hi) {
      const float p = expf(s.scale * dot_row(q_row, sK + lane * padded, hd) - row_lse);
      ds = p * (dot_row(do_row, sV + lane * padded, hd) - row_delta);
    }
    dscores[lane] = ds;
    __syncwarp();
    const int rows = min(kChunk, j_hi - c0 + 1);
    for (int d = lane; d < hd; d += 32) {
      float a = acc[d];
      for (int r = 0; r < rows; ++r) a = fmaf(dscores[r], sK[r * padded + d], a);
      acc[d] = a;
    }
    __syncwarp();
  }
  if (!active) return;
  T* dst = dq + (static_cast<int64_t>(b) * s.q_len + t) * dq_stride + h * hd;
  for (int d = lane; d < hd; d += 32) dst[d] = from_float<T>(acc[d] * s.scale);
}

// Raises a kernel's dynamic shared-memory limit when it needs more than the default 48 KB.
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
}

}  // namespace

void generic_forward(DType dtype, const AttentionDims& dims, MaskGeometry mask, const void* q,
                     const void* k, const void* v, void* out, float* lse, cudaStream_t stream) {
  const GenericShape s = generic_shape(dims);
  const int hd = s.head_dim;
  const size_t smem =
      sizeof(float) * (kChunk * (hd + 1) + kChunk * hd + 2 * kWarps * hd + kWarps * kChunk);
  const dim3 grid(ceil_div(s.q_len, kWarps), s.q_heads, s.batch);
  SF_DISPATCH_FLOAT(dtype, T, {
    allow_shared_memory(generic_forward_kernel<T>, smem);
    generic_forward_kernel<T><<<grid, kThreads, smem, stream>>>(
        static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
        static_cast<T*>(out), lse, s, mask);
    SF_CUDA_LAUNCH_CHECK("generic_forward_kernel");
  });
}

void generic_backward(DType dtype, const AttentionDims& dims, MaskGeometry mask, const void* dout,
                      const float* lse, const float* delta, const void* q, const void* k,
                      const void* v, void* dq, void* dk, void* dv,
                      const AttentionGradStrides& strides, cudaStream_t stream) {
  const GenericShape s = generic_shape(dims);
  const int hd = s.head_dim;
  const size_t dkdv_smem =
      sizeof(float) * (2 * kChunk * (hd + 1) + 2 * kChunk + 4 * kWarps * hd + 2 * kWarps * kChunk);
  const size_t dq_smem =
      sizeof(float) * (2 * kChunk * (hd + 1) + 3 * kWarps * hd + kWarps * kChunk);
  SF_DISPATCH_FLOAT(dtype, T, {
    if (s.kv_len > 0) {
      allow_shared_memory(generic_dkdv_kernel<T>, dkdv_smem);
      const dim3 grid(ceil_div(s.kv_len, kWarps), s.kv_heads, s.batch);
      generic_dkdv_kernel<T><<<grid, kThreads, dkdv_smem, stream>>>(
          static_cast<const T*>(dout), lse, delta, static_cast<const T*>(q),
          static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(dk),
          static_cast<T*>(dv), strides.dk, strides.dv, s, mask);
      SF_CUDA_LAUNCH_CHECK("generic_dkdv_kernel");
    }
    allow_shared_memory(generic_dq_kernel<T>, dq_smem);
    const dim3 grid(ceil_div(s.q_len, kWarps), s.q_heads, s.batch);
    generic_dq_kernel<T><<<grid, kThreads, dq_smem, stream>>>(
        static_cast<const T*>(dout), lse, delta, static_cast<const T*>(q), static_cast<const T*>(k),
        static_cast<const T*>(v), static_cast<T*>(dq), strides.dq, s, mask);
    SF_CUDA_LAUNCH_CHECK("generic_dq_kernel");
  });
}

}  // namespace sf::cuda::attention
