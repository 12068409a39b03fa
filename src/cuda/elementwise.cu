// elementwise.cu — fill, scale, axpy, dtype conversion and the fp64 dot/sum-of-squares
// reductions of the CUDA backend (grid-stride loops, fp32 arithmetic).
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

template <class T> __global__ void fill_kernel(T* x, int64_t n, float value) {
  const T v = from_float<T>(value);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] = v;
}

template <class T> __global__ void scale_kernel(T* x, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] = from_float<T>(to_float(x[i]) * alpha);
}

template <class Y, class X> __global__ void axpy_kernel(Y* y, const X* x, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_float<Y>(to_float(y[i]) + alpha * to_float(x[i]));
}

template <class D, class S> __global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_float<D>(to_float(src[i]));
}

// Each block sums its grid-stride share in fp64 and adds it to *result with one atomic.
template <class A, class B>
__global__ void dot_kernel(const A* a, const B* b, int64_t n, double alpha, double* result) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double x = to_float(a[i]);
    sum += x * (b ? static_cast<double>(to_float(b[i])) : x);
  }
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) atomicAdd(result, alpha * sum);
}

// One block reduction per chunk, added to its tensor's result.
__global__ void sum_squares_many_kernel(const float* const* tensors, ManyLayout layout,
                                        double* results) {
  __shared__ double scratch[32];
  for_each_many_chunk(layout, [&](int k, int64_t begin, int64_t end) {
    const float* x = tensors[k];
    double sum = 0.0;
    for_each_chunk_piece(begin, end, all_aligned(16, x), [&](int64_t i, int count) {
      if (count == 4) {
        const Pack<float, 4> p = load_pack<4>(x + i);
#pragma unroll
        for (int j = 0; j < 4; ++j) sum += static_cast<double>(p.v[j]) * p.v[j];
      } else {
        sum += static_cast<double>(x[i]) * x[i];
      }
    });
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) atomicAdd(results + k, sum);
  });
}

// The per-tensor sums added in tensor order by one thread: the same total every time for the
// same per-tensor sums (the host added them in this order before).
__global__ void sum_in_order_kernel(const double* values, int count, double* total) {
  double sum = 0.0;
  for (int k = 0; k < count; ++k) sum += values[k];
  *total = sum;
}

template <class T>
__global__ void fill_many_kernel(T* const* tensors, ManyLayout layout, float value) {
  const T v = from_float<T>(value);
  for_each_many_chunk(layout, [&](int k, int64_t begin, int64_t end) {
    T* x = tensors[k];
    for_each_chunk_piece(begin, end, all_aligned(4 * sizeof(T), x), [&](int64_t i, int count) {
      if (count == 4) store_pack(x + i, Pack<T, 4>{{v, v, v, v}});
      else x[i] = v;
    });
  });
}

template <class D, class S>
__global__ void convert_many_kernel(D* const* dst, const S* const* src, ManyLayout layout) {
  for_each_many_chunk(layout, [&](int k, int64_t begin, int64_t end) {
    D* d = dst[k];
    const S* x = src[k];
    const bool vector_ok = all_aligned(4 * sizeof(D), d) && all_aligned(4 * sizeof(S), x);
    for_each_chunk_piece(begin, end, vector_ok, [&](int64_t i, int count) {
      if (count == 4) {
        const Pack<S, 4> p = load_pack<4>(x + i);
        Pack<D, 4> q;
#pragma unroll
        for (int j = 0; j < 4; ++j) q.v[j] = from_float<D>(to_float(p.v[j]));
        store_pack(d + i, q);
      } else {
        d[i] = from_float<D>(to_float(x[i]));
      }
    });
  });
}

constexpr int kThreads = 256;

}  // namespace

void fill(DType dtype, void* x, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    fill_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<T*>(x), n, value));
  SF_CUDA_LAUNCH_CHECK("fill");
}

void scale(DType dtype, void* x, int64_t n, float alpha, cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    scale_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<T*>(x), n, alpha));
  SF_CUDA_LAUNCH_CHECK("scale");
}

void axpy(DType y_dtype, void* y, DType x_dtype, const void* x, int64_t n, float alpha,
          cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(y_dtype, Y, SF_DISPATCH_FLOAT(x_dtype, X,
      axpy_kernel<Y, X><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
          static_cast<Y*>(y), static_cast<const X*>(x), n, alpha)));
  SF_CUDA_LAUNCH_CHECK("axpy");
}

void convert(DType dst_dtype, void* dst, DType src_dtype, const void* src, int64_t n,
             cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dst_dtype, D, SF_DISPATCH_FLOAT(src_dtype, S,
      convert_kernel<D, S><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
          static_cast<D*>(dst), static_cast<const S*>(src), n)));
  SF_CUDA_LAUNCH_CHECK("convert");
}

void dot(DType a_dtype, const void* a, DType b_dtype, const void* b, int64_t n, double* result,
         cudaStream_t stream, double alpha, bool accumulate) {
  if (!accumulate) SF_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
  if (n == 0) return;
  SF_DISPATCH_FLOAT(a_dtype, A, SF_DISPATCH_FLOAT(b_dtype, B,
      dot_kernel<A, B><<<blocks_for(n, kThreads, 264), kThreads, 0, stream>>>(
          static_cast<const A*>(a), static_cast<const B*>(b), n, alpha, result)));
  SF_CUDA_LAUNCH_CHECK("dot");
}

std::vector<uint64_t> many_chunk_first(const std::vector<uint64_t>& sizes) {
  std::vector<uint64_t> first(sizes.size() + 1, 0);
  for (size_t k = 0; k < sizes.size(); ++k)
    first[k + 1] = first[k] + (sizes[k] + kManyChunk - 1) / kManyChunk;
  return first;
}

void sum_squares_many(const float* const* tensors, const ManyLayout& layout, double* results,
                      double* total, cudaStream_t stream) {
  SF_CUDA_CHECK(cudaMemsetAsync(results, 0, sizeof(double) * layout.count, stream));
  if (layout.chunks > 0) {
    sum_squares_many_kernel<<<many_blocks(layout.chunks), kThreads, 0, stream>>>(tensors, layout,
                                                                                  results);
    SF_CUDA_LAUNCH_CHECK("sum_squares_many");
  }
  sum_in_order_kernel<<<1, 1, 0, stream>>>(results, layout.count, total);
  SF_CUDA_LAUNCH_CHECK("sum_in_order");
}

void fill_many(DType dtype, void* const* tensors, const ManyLayout& layout, float value,
               cudaStream_t stream) {
  if (layout.chunks == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    fill_many_kernel<T><<<many_blocks(layout.chunks), kThreads, 0, stream>>>(
                        reinterpret_cast<T* const*>(tensors), layout, value));
  SF_CUDA_LAUNCH_CHECK("fill_many");
}

void convert_many(DType dst_dtype, void* const* dst, DType src_dtype, const void* const* src,
                  const ManyLayout& layout, cudaStream_t stream) {
  if (layout.chunks == 0) return;
  SF_DISPATCH_FLOAT(dst_dtype, D, SF_DISPATCH_FLOAT(src_dtype, S,
      convert_many_kernel<D, S><<<many_blocks(layout.chunks), kThreads, 0, stream>>>(
          reinterpret_cast<D* const*>(dst), reinterpret_cast<const S* const*>(src), layout)));
  SF_CUDA_LAUNCH_CHECK("convert_many");
}

}  // namespace sf::cuda
