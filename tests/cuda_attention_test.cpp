// cuda_attention_test.cpp — the CUDA attention kernels (cuda/attention_kernels.h) against the
// CPU reference (sf::CpuBackend in fp64) on random inputs: forward (out, lse) and backward
// (dq, dk, dv), F32 and BF16, every mask kind (causal; shifted by one with windows 0, 1, 2, 3,
// 100), grouped-query heads, odd and tiny lengths, q_len != kv_len, head_dim 4 .. 256. BF16 with
// head_dim 64 or 128 takes the tensor-core kernels — every variant the dispatchers pick: for
// head_dim 64 the Hopper (wgmma) kernels on compute capability 9.0 and, on the same machine, the
// mma.sync kernels other GPUs run (forward with 128- or (window <= 128) 64-query blocks,
// backward with 8 warps or, grouped heads, 4); head_dim 128 the mma.sync kernels — everything
// else the SIMT path. Outputs and the backward workspace are poisoned with NaN first, so an
// element the kernels never write fails.
//
// Skips cleanly where there is no CUDA device. With SF_ATTENTION_BENCH=1 in the environment the
// Benchmark test also times the kernels on training-sized shapes and prints TFLOP/s
// (SF_ATTENTION_BENCH_ONLY=substring picks shapes by name).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <ostream>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/tensor.h"
#include "cpu/cpu_backend.h"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_check.h"

namespace sf {
namespace {

// F32: the GPU computes in fp32 what the reference computes in fp64; dot products and sums of
// up to ~1000 terms lose ~1e-6 relative, far under 1e-5.
constexpr double kF32Tolerance = 1e-5;
// BF16: inputs are identical (the reference runs on the bf16-rounded values), but the kernels
// round their outputs to bf16 and feed the tensor cores bf16 operands made from fp32
// intermediates (P for P*V and P^T*dout, dS for dS*K and dS^T*Q). bf16 keeps 8 significant
// bits: each such rounding is up to 2^-9 ~ 2e-3 relative (about 4e-3 for the two-level error of
// an output that is itself rounded from a product of rounded operands), so 1e-2 is the bound.
constexpr double kBf16Tolerance = 1e-2;
// lse is fp32 in both dtypes and computed from exactly the reference's inputs.
constexpr double kLseF32Tolerance = 1e-5;
constexpr double kLseBf16Tolerance = 1e-4;

bool have_cuda_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    SF_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 16)));
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // All bits set: NaN in F32 and in BF16.
  void poison() { SF_CUDA_CHECK(cudaMemset(ptr, 0xff, std::max<size_t>(bytes, 16))); }
};

size_t element_size(DType dtype) { return dtype == DType::bf16 ? 2 : 4; }

// Host values -> device buffer of `dtype` (values are already representable in it).
std::unique_ptr<DeviceBuffer> upload(const std::vector<float>& values, DType dtype) {
  auto buffer = std::make_unique<DeviceBuffer>(values.size() * element_size(dtype));
  if (dtype == DType::bf16) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = float_to_bf16(values[i]);
    SF_CUDA_CHECK(cudaMemcpy(buffer->ptr, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
  } else {
    SF_CUDA_CHECK(
        cudaMemcpy(buffer->ptr, values.data(), values.size() * 4, cudaMemcpyHostToDevice));
  }
  return buffer;
}

std::unique_ptr<DeviceBuffer> poisoned(size_t elements, DType dtype) {
  auto buffer = std::make_unique<DeviceBuffer>(elements * element_size(dtype));
  buffer->poison();
  return buffer;
}

std::vector<double> download(const DeviceBuffer& buffer, size_t elements, DType dtype) {
  std::vector<double> out(elements);
  if (dtype == DType::bf16) {
    std::vector<uint16_t> bits(elements);
    SF_CUDA_CHECK(cudaMemcpy(bits.data(), buffer.ptr, elements * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < elements; ++i) out[i] = bf16_to_float(bits[i]);
  } else {
    std::vector<float> values(elements);
    SF_CUDA_CHECK(cudaMemcpy(values.data(), buffer.ptr, elements * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < elements; ++i) out[i] = values[i];
  }
  return out;
}

// Standard normal values, rounded to bf16 when the test runs in bf16.
std::vector<float> random_values(size_t n, DType dtype, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) {
    x = normal(rng);
    if (dtype == DType::bf16) x = bf16_to_float(float_to_bf16(x));
  }
  return v;
}

Tensor f64_tensor(const Shape& shape, const std::vector<float>& values) {
  Tensor t = Tensor::zeros(shape, DType::f64);
  double* d = t.data<double>();
  for (size_t i = 0; i < values.size(); ++i) d[i] = values[i];
  return t;
}

std::vector<double> values_of(const Tensor& t) {
  const double* d = t.data<double>();
  return std::vector<double>(d, d + t.numel());
}

// ||got - want|| / ||want||; where the reference is all zero, the largest |got| (so it must be
// exactly zero too). NaN anywhere gives NaN, which fails every EXPECT_LT.
double relative_error(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0.0, norm = 0.0, largest = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return std::numeric_limits<double>::quiet_NaN();
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
    largest = std::max(largest, std::fabs(got[i]));
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : largest;
}

// Largest |got - want| / max(1, |want|) over lse entries; -inf must match -inf exactly.
double lse_error(const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i]) || std::isnan(got[i])) {
      if (got[i] != want[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::fabs(got[i] - want[i]) / std::max(1.0, std::fabs(want[i])));
  }
  return worst;
}

struct Case {
  const char* name;
  int64_t batch, q_len, kv_len, q_heads, kv_heads, head_dim;
  int shift, window;
};

struct Param {
  Case c;
  DType dtype;
};

// GoogleTest (and ctest's listing) prints a parameter with this, not its bytes.
void PrintTo(const Param& p, std::ostream* os) {
  *os << p.c.name << (p.dtype == DType::bf16 ? " bf16" : " f32");
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(info.param.c.name) + (info.param.dtype == DType::bf16 ? "_bf16" : "_f32");
}

const Case kCases[] = {
    {"t1_causal", 1, 1, 1, 1, 1, 4, 0, 0},
    {"t1_shift_sees_nothing", 1, 1, 1, 2, 1, 4, 1, 0},
    {"t5_causal_gqa", 2, 5, 5, 4, 2, 8, 0, 0},
    {"t5_shift_w0", 2, 5, 5, 4, 2, 8, 1, 0},
    {"t5_shift_w1", 2, 5, 5, 4, 2, 8, 1, 1},
    {"t5_shift_w2", 2, 5, 5, 4, 2, 8, 1, 2},
    {"t5_shift_w3", 2, 5, 5, 4, 2, 8, 1, 3},
    {"t5_shift_w100", 2, 5, 5, 4, 2, 8, 1, 100},
    {"t7_causal_hd4", 1, 7, 7, 3, 1, 4, 0, 0},
    {"t7_shift_w2_hd6", 1, 7, 7, 3, 3, 6, 1, 2},
    {"t16_causal", 2, 16, 16, 2, 2, 8, 0, 0},
    {"t16_shift_w3", 2, 16, 16, 2, 2, 8, 1, 3},
    {"t33_hd34_shift_w0", 1, 33, 33, 2, 1, 34, 1, 0},
    {"t33_hd64_causal", 1, 33, 33, 4, 1, 64, 0, 0},
    {"t33_hd64_shift_w0", 1, 33, 33, 4, 1, 64, 1, 0},
    {"t33_hd64_shift_w1", 1, 33, 33, 4, 2, 64, 1, 1},
    {"t33_hd64_shift_w2", 1, 33, 33, 4, 2, 64, 1, 2},
    {"t33_hd64_shift_w3", 1, 33, 33, 4, 4, 64, 1, 3},
    {"t33_hd64_shift_w100", 1, 33, 33, 4, 1, 64, 1, 100},
    {"t33_hd128_causal", 1, 33, 33, 2, 2, 128, 0, 0},
    {"t33_hd128_shift_w3", 1, 33, 33, 2, 1, 128, 1, 3},
    {"t200_hd64_causal_gqa", 2, 200, 200, 6, 2, 64, 0, 0},
    {"t200_hd64_shift_w100", 2, 200, 200, 6, 2, 64, 1, 100},
    {"t200_hd128_shift_w70", 1, 200, 200, 2, 1, 128, 1, 70},
    {"t130_hd96_causal", 1, 130, 130, 2, 1, 96, 0, 0},
    {"t40_hd256_shift_w0", 1, 40, 40, 2, 2, 256, 1, 0},
    {"q40_k33_hd64_shift", 1, 40, 33, 2, 1, 64, 1, 0},
    {"q40_k33_hd64_w5", 1, 40, 33, 2, 1, 64, 1, 5},
    {"q20_k70_hd64_causal", 1, 20, 70, 2, 2, 64, 0, 0},
    {"q20_k70_hd8_causal", 1, 20, 70, 2, 2, 8, 0, 0},
    {"t1024_hd64_causal", 1, 1024, 1024, 2, 1, 64, 0, 0},
    {"t1024_hd64_shift_w100", 1, 1024, 1024, 2, 1, 64, 1, 100},
    {"t1024_hd128_shift_w0", 1, 1024, 1024, 2, 2, 128, 1, 0},
    {"t1024_hd8_causal", 1, 1024, 1024, 1, 1, 8, 0, 0},
};

std::vector<Param> all_params() {
  std::vector<Param> params;
  for (const Case& c : kCases)
    for (DType dtype : {DType::f32, DType::bf16}) params.push_back({c, dtype});
  return params;
}

cuda::AttentionDims dims_of(const Case& c) {
  return {c.batch, c.q_len, c.kv_len, c.q_heads, c.kv_heads, c.head_dim};
}

class CudaAttentionTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(CudaAttentionTest, MatchesCpuReference) {
  const Case& c = GetParam().c;
  const DType dtype = GetParam().dtype;
  const double tol = dtype == DType::bf16 ? kBf16Tolerance : kF32Tolerance;
  const double lse_tol = dtype == DType::bf16 ? kLseBf16Tolerance : kLseF32Tolerance;
  std::mt19937_64 rng(std::hash<std::string>{}(param_name({GetParam(), 0})));

  const Shape q_shape{c.batch, c.q_len, c.q_heads, c.head_dim};
  const Shape kv_shape{c.batch, c.kv_len, c.kv_heads, c.head_dim};
  const Shape lse_shape{c.batch, c.q_heads, c.q_len};
  const size_t nq = shape_numel(q_shape), nkv = shape_numel(kv_shape), nl = shape_numel(lse_shape);
  const std::vector<float> q = random_values(nq, dtype, rng), k = random_values(nkv, dtype, rng),
                           v = random_values(nkv, dtype, rng), dout = random_values(nq, dtype, rng);

  // Reference, fp64 on the same (rounded) inputs.
  CpuBackend cpu;
  const AttentionMask mask{c.shift, c.window};
  const Tensor rq = f64_tensor(q_shape, q), rk = f64_tensor(kv_shape, k),
               rv = f64_tensor(kv_shape, v), rdout = f64_tensor(q_shape, dout);
  Tensor rout = Tensor::zeros(q_shape, DType::f64), rlse = Tensor::zeros(lse_shape, DType::f64);
  cpu.attention_forward(rout, rlse, rq, rk, rv, mask);
  Tensor rdq = Tensor::zeros(q_shape, DType::f64), rdk = Tensor::zeros(kv_shape, DType::f64),
         rdv = Tensor::zeros(kv_shape, DType::f64);
  cpu.attention_backward(rdq, rdk, rdv, rdout, rout, rlse, rq, rk, rv, mask);

  // BF16 head_dim 64 on an H100 or H200 runs twice: with the Hopper (wgmma) kernels and with the
  // mma.sync ones that other GPUs run.
  const auto dims = dims_of(c);
  auto dq_in = upload(q, dtype), dk_in = upload(k, dtype), dv_in = upload(v, dtype),
       ddout = upload(dout, dtype);
  const bool both_kernels =
      dtype == DType::bf16 && c.head_dim == 64 && cuda::wgmma_attention_active();
  for (const bool wgmma : both_kernels ? std::vector<bool>{true, false} : std::vector<bool>{true}) {
    cuda::set_wgmma_attention(wgmma);
    const char* kernel = both_kernels ? (wgmma ? "wgmma" : "mma.sync") : "";
    // GPU forward, twice into fresh poisoned buffers: the results must also be bitwise
    // identical (a race would show as a difference).
    auto out = poisoned(nq, dtype);
    auto lse = poisoned(nl, DType::f32);
    cuda::attention_forward(dtype, dims, c.shift, c.window, dq_in->ptr, dk_in->ptr, dv_in->ptr,
                            out->ptr, static_cast<float*>(lse->ptr), nullptr);
    SF_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> got_out = download(*out, nq, dtype);
    const std::vector<double> got_lse = download(*lse, nl, DType::f32);
    EXPECT_LT(relative_error(got_out, values_of(rout)), tol) << "out " << kernel;
    EXPECT_LT(lse_error(got_lse, values_of(rlse)), lse_tol) << "lse " << kernel;
    {
      auto out2 = poisoned(nq, dtype);
      auto lse2 = poisoned(nl, DType::f32);
      cuda::attention_forward(dtype, dims, c.shift, c.window, dq_in->ptr, dk_in->ptr, dv_in->ptr,
                              out2->ptr, static_cast<float*>(lse2->ptr), nullptr);
      SF_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(download(*out2, nq, dtype), got_out) << "forward not deterministic " << kernel;
      EXPECT_EQ(download(*lse2, nl, DType::f32), got_lse) << "forward not deterministic " << kernel;
    }

    // GPU backward from the GPU forward's out and lse.
    auto dq = poisoned(nq, dtype), dk = poisoned(nkv, dtype), dv = poisoned(nkv, dtype);
    DeviceBuffer workspace(cuda::attention_backward_workspace_bytes(dtype, dims));
    workspace.poison();
    cuda::attention_backward(dtype, dims, c.shift, c.window, ddout->ptr, out->ptr,
                             static_cast<const float*>(lse->ptr), dq_in->ptr, dk_in->ptr,
                             dv_in->ptr, dq->ptr, dk->ptr, dv->ptr, workspace.ptr, nullptr);
    SF_CUDA_CHECK(cudaDeviceSynchronize());
    cuda::set_wgmma_attention(true);
    const double err_dq = relative_error(download(*dq, nq, dtype), values_of(rdq));
    const double err_dk = relative_error(download(*dk, nkv, dtype), values_of(rdk));
    const double err_dv = relative_error(download(*dv, nkv, dtype), values_of(rdv));
    EXPECT_LT(err_dq, tol) << "dq " << kernel;
    EXPECT_LT(err_dk, tol) << "dk " << kernel;
    EXPECT_LT(err_dv, tol) << "dv " << kernel;
    std::printf("[ errors   ] %-28s %-4s %-8s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", c.name,
                dtype == DType::bf16 ? "bf16" : "f32", kernel,
                relative_error(got_out, values_of(rout)), lse_error(got_lse, values_of(rlse)),
                err_dq, err_dk, err_dv);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttentionTest, ::testing::ValuesIn(all_params()), param_name);

// ---- timing (SF_ATTENTION_BENCH=1) -------------------------------------------------------------

// Visible (query, key) pairs of one head: the FLOPs that count.
double visible_pairs(const Case& c) {
  double pairs = 0.0;
  for (int64_t t = 0; t < c.q_len; ++t) {
    const int64_t last = std::min<int64_t>(t - c.shift, c.kv_len - 1);
    const int64_t first = c.window > 0 ? std::max<int64_t>(0, t - c.shift - c.window + 1) : 0;
    if (last >= first) pairs += static_cast<double>(last - first + 1);
  }
  return pairs;
}

template <class Fn>
double median_ms(Fn&& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  SF_CUDA_CHECK(cudaEventCreate(&start));
  SF_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    SF_CUDA_CHECK(cudaEventRecord(start));
    fn();
    SF_CUDA_CHECK(cudaEventRecord(stop));
    SF_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

TEST(CudaAttentionBenchmark, Benchmark) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const char* flag = std::getenv("SF_ATTENTION_BENCH");
  if (flag == nullptr || std::string(flag) != "1") GTEST_SKIP() << "set SF_ATTENTION_BENCH=1";
  struct BenchCase {
    Case c;
    DType dtype;
    int reps;
  };
  const BenchCase cases[] = {
      {{"B16_T1024_H12_hd64_causal", 16, 1024, 1024, 12, 12, 64, 0, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_hd64_causal", 8, 1024, 1024, 12, 12, 64, 0, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_hd64_shift1", 8, 1024, 1024, 12, 12, 64, 1, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_hd64_s1_w128", 8, 1024, 1024, 12, 12, 64, 1, 128}, DType::bf16, 30},
      {{"B4_T2048_H12_hd64_causal", 4, 2048, 2048, 12, 12, 64, 0, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_kv4_hd64_causal", 8, 1024, 1024, 12, 4, 64, 0, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_hd128_causal", 8, 1024, 1024, 12, 12, 128, 0, 0}, DType::bf16, 30},
      {{"B8_T1024_H12_hd64_causal", 8, 1024, 1024, 12, 12, 64, 0, 0}, DType::f32, 5},
  };
  std::printf("%-32s %-5s %10s %9s %10s %9s\n", "shape", "dtype", "fwd ms", "fwd TF/s", "bwd ms",
              "bwd TF/s");
  const char* only = std::getenv("SF_ATTENTION_BENCH_ONLY");  // a substring of the shape names
  for (const BenchCase& bc : cases) {
    const Case& c = bc.c;
    const DType dtype = bc.dtype;
    if (only != nullptr && std::string(c.name).find(only) == std::string::npos) continue;
    std::mt19937_64 rng(7);
    const size_t nq = c.batch * c.q_len * c.q_heads * c.head_dim;
    const size_t nkv = c.batch * c.kv_len * c.kv_heads * c.head_dim;
    const size_t nl = c.batch * c.q_heads * c.q_len;
    auto q = upload(random_values(nq, dtype, rng), dtype);
    auto k = upload(random_values(nkv, dtype, rng), dtype);
    auto v = upload(random_values(nkv, dtype, rng), dtype);
    auto dout = upload(random_values(nq, dtype, rng), dtype);
    auto out = poisoned(nq, dtype);
    auto lse = poisoned(nl, DType::f32);
    auto dq = poisoned(nq, dtype), dk = poisoned(nkv, dtype), dv = poisoned(nkv, dtype);
    const auto dims = dims_of(c);
    DeviceBuffer workspace(cuda::attention_backward_workspace_bytes(dtype, dims));
    const auto forward = [&] {
      cuda::attention_forward(dtype, dims, c.shift, c.window, q->ptr, k->ptr, v->ptr, out->ptr,
                              static_cast<float*>(lse->ptr), nullptr);
    };
    const auto backward = [&] {
      cuda::attention_backward(dtype, dims, c.shift, c.window, dout->ptr, out->ptr,
                               static_cast<const float*>(lse->ptr), q->ptr, k->ptr, v->ptr, dq->ptr,
                               dk->ptr, dv->ptr, workspace.ptr, nullptr);
    };
    const double fwd_ms = median_ms(forward, 3, bc.reps);
    const double bwd_ms = median_ms(backward, 3, bc.reps);
    // Sanity: finite outputs (a broken fast path must not pass as fast).
    const std::vector<double> o = download(*out, nq, dtype), g = download(*dq, nq, dtype);
    for (size_t i = 0; i < nq; i += 997) {
      ASSERT_TRUE(std::isfinite(o[i])) << c.name;
      ASSERT_TRUE(std::isfinite(g[i])) << c.name;
    }
    const double flops = 4.0 * c.batch * c.q_heads * c.head_dim * visible_pairs(c);
    std::printf("%-32s %-5s %10.4f %9.1f %10.4f %9.1f\n", c.name,
                dtype == DType::bf16 ? "bf16" : "f32", fwd_ms, flops / fwd_ms * 1e-9, bwd_ms,
                2.5 * flops / bwd_ms * 1e-9);
    if (dtype == DType::bf16 && c.head_dim == 64 && cuda::wgmma_attention_active()) {
      cuda::set_wgmma_attention(false);  // the mma.sync kernels, for comparison
      const double mma_fwd_ms = median_ms(forward, 3, bc.reps);
      const double mma_bwd_ms = median_ms(backward, 3, bc.reps);
      cuda::set_wgmma_attention(true);
      std::printf("%-32s %-5s %10.4f %9.1f %10.4f %9.1f  (mma.sync kernels)\n", c.name, "bf16",
                  mma_fwd_ms, flops / mma_fwd_ms * 1e-9, mma_bwd_ms, 2.5 * flops / mma_bwd_ms * 1e-9);
    }
  }
}

}  // namespace
}  // namespace sf
