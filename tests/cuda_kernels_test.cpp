// cuda_kernels_test.cpp — every CUDA backend kernel except attention (cuda_attention_test.cpp)
// against the CPU reference, on random inputs (never zeros), at several shapes including odd
// ones, in F32 and BF16. Outputs that a kernel overwrites are poisoned with NaN first, so an
// element it forgets to write fails the comparison.
//
// Tolerances (norm-wise relative error ||gpu - cpu|| / ||cpu||):
//   * F32: 1e-5. Both sides compute in fp32 (cuBLASLt with CUBLAS_COMPUTE_32F, no TF32); they
//     differ only in summation order, ~1e-7 per element, accumulating to ~1e-6 at these sizes.
//   * BF16: the CPU reference runs in fp32 on the same bf16-rounded inputs, so the only
//     difference is the rounding of the GPU's bf16 outputs (relative 2^-9 = 2e-3 per element,
//     ~1e-3 in norm) plus bf16 intermediates (matmul outputs): 1e-2 leaves margin while a wrong
//     index or a missing term gives O(1).
// Label gpu (ctest -L gpu); every test skips when no CUDA device is visible.
#include <cstring>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <tuple>

#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "cuda/recording_memsets.h"
#include "support/device_tensors.h"
#include "support/gradcheck.h"

namespace sf {
namespace {

using test::norm_relative_error;
using test::rounded_f32;
using test::columns;
using test::to_backend;
using test::to_host_f32;

class CudaKernels : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
  }
  DType dt() const { return GetParam(); }
  double tolerance() const { return dt() == DType::bf16 ? 1e-2 : 1e-5; }

  // A random input: the device tensor (in the test's dtype) and the exact values it holds.
  struct Input {
    Tensor device, host;
  };
  Input input(const Shape& shape, double stddev = 1.0, double mean = 0.0) {
    Tensor h = test::random_normal(shape, DType::f32, rng_, stddev);
    if (mean != 0.0)
      for (int64_t i = 0; i < h.numel(); ++i) h.data<float>()[i] += static_cast<float>(mean);
    Input in;
    in.host = rounded_f32(h, dt());
    in.device = to_backend(*gpu_, in.host, dt());
    return in;
  }
  Input f32_input(const Shape& shape) {
    Input in;
    in.host = test::random_normal(shape, DType::f32, rng_);
    in.device = to_backend(*gpu_, in.host, DType::f32);
    return in;
  }
  Tensor poisoned(const Shape& shape, DType dtype) {
    Tensor t = gpu_->zeros(shape, dtype);
    gpu_->fill(t, std::numeric_limits<double>::quiet_NaN());
    return t;
  }
  void expect_close(const Tensor& device_result, const Tensor& reference, const std::string& what,
                    double tol = 0.0) {
    const double err = norm_relative_error(to_host_f32(*gpu_, device_result), reference);
    EXPECT_LT(err, tol > 0 ? tol : tolerance()) << what << " (" << dtype_name(dt()) << ")";
  }

  // An AdamW update on the GPU against the CPU's: new parameter and both moments.
  void expect_same_update(const AdamWTensors& gpu, const AdamWTensors& cpu, const std::string& what) {
    expect_close(gpu.param, cpu.param, what + " param", 1e-6);
    expect_close(gpu.m, cpu.m, what + " m", 1e-6);
    expect_close(gpu.v, cpu.v, what + " v", 1e-6);
  }

  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
  Rng rng_{20261122};
};

TEST_P(CudaKernels, ElementwiseAndReductions) {
  for (int64_t n : {1, 7, 1000, 100003}) {
    Input x = input({n}), y = input({n});
    // axpy, scale, convert round trip
    Tensor ref = test::clone(y.host);
    cpu_.axpy(ref, -0.75, x.host);
    gpu_->axpy(y.device, -0.75, x.device);
    expect_close(y.device, ref, "axpy n=" + std::to_string(n));
    Input z = input({n});
    Tensor zref = test::clone(z.host);
    cpu_.scale(zref, 1.5);
    gpu_->scale(z.device, 1.5);
    expect_close(z.device, zref, "scale n=" + std::to_string(n));
    // dot and sum_squares are fp64 sums of exact products of the stored values.
    // z was scaled above (and rounded to the dtype): the reference reads the GPU's own z.
    const double dot_ref = cpu_.dot(x.host, to_host_f32(*gpu_, z.device));
    EXPECT_NEAR(gpu_->dot(x.device, z.device), dot_ref, 1e-9 * (std::fabs(dot_ref) + n));
    const double ss_ref = cpu_.sum_squares(x.host);
    EXPECT_NEAR(gpu_->sum_squares(x.device), ss_ref, 1e-9 * ss_ref);
    // fill
    gpu_->fill(z.device, 0.3125);
    EXPECT_EQ(to_host_f32(*gpu_, z.device).data<float>()[n - 1], 0.3125f);
  }
  // Mixed dtypes: F32 += BF16 (gradient accumulation) and convert F32 -> dtype -> F32.
  Input x = input({999});
  Input acc = f32_input({999});
  Tensor ref = test::clone(acc.host);
  cpu_.axpy(ref, 2.0, x.host);
  gpu_->axpy(acc.device, 2.0, x.device);
  expect_close(acc.device, ref, "axpy F32 += dtype", 1e-6);
  Input master = f32_input({1001});
  Tensor working = poisoned({1001}, dt());
  gpu_->convert(working, master.device);
  EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, working), rounded_f32(master.host, dt())), 0.0)
      << "convert must round exactly like the host (nearest even)";
}

TEST_P(CudaKernels, SumSquaresTotalMatchesPerTensorSums) {
  std::vector<Tensor> host, device;
  double expected = 0.0;
  for (int64_t n : {5, 4096, 77, 100000}) {
    Input g = f32_input({n});
    host.push_back(g.host);
    device.push_back(g.device);
    expected += cpu_.sum_squares(g.host);
  }
  EXPECT_NEAR(gpu_->sum_squares_total(device), expected, 1e-9 * expected);
}

// The loss sum of a training step stays on the device (Model::add_loss_into): alpha * dot
// written into, or added to, one F64 element (here of a larger tensor, whose other element
// must stay as it is).
TEST_P(CudaKernels, DotIntoAndDotAddOnTheDevice) {
  for (int64_t n : {1, 7, 100003}) {
    Input x = input({n}), y = input({n});
    Tensor pair = gpu_->zeros({2}, DType::f64);
    Tensor second = pair.slice(0, 1, 1);
    const double xy = cpu_.dot(x.host, y.host), xx = cpu_.dot(x.host, x.host);
    gpu_->dot_into(second, 0.25, x.device, y.device);
    EXPECT_NEAR(gpu_->read_f64_scalar(second), 0.25 * xy, 1e-9 * (std::fabs(xy) + n)) << n;
    gpu_->dot_add(second, -2.0, x.device, x.device);
    EXPECT_NEAR(gpu_->read_f64_scalar(second), 0.25 * xy - 2.0 * xx, 1e-9 * (std::fabs(xy) + xx))
        << n;
    gpu_->dot_into(second, 1.0, x.device, x.device);  // written, not added
    EXPECT_NEAR(gpu_->read_f64_scalar(second), xx, 1e-9 * xx) << n;
    EXPECT_EQ(gpu_->read_f64_scalar(pair.slice(0, 0, 1)), 0.0) << "the other element changed";
  }
}

TEST_P(CudaKernels, MatmulAllTransposesAndShapes) {
  struct Case { int64_t m, n, k; };
  for (Case c : {Case{1, 1, 1}, Case{7, 13, 5}, Case{64, 96, 48}, Case{257, 131, 77}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 1.0}) {
          Input a = input(ta ? Shape{c.k, c.m} : Shape{c.m, c.k});
          Input b = input(tb ? Shape{c.n, c.k} : Shape{c.k, c.n});
          Input out = input({c.m, c.n});
          Tensor ref = test::clone(out.host);
          cpu_.matmul(ref, a.host, ta, b.host, tb, 0.5, beta);
          if (beta == 0.0) gpu_->fill(out.device, std::numeric_limits<double>::quiet_NaN());
          gpu_->matmul(out.device, a.device, ta, b.device, tb, 0.5, beta);
          expect_close(out.device, ref,
                       fmt::format("matmul {}x{}x{} ta={} tb={} beta={}", c.m, c.n, c.k, ta, tb, beta));
        }
      }
    }
    // Residual form: out = a @ b^T + addend, the addend read inside the product.
    {
      Input a = input({c.m, c.k}), b = input({c.n, c.k}), addend = input({c.m, c.n});
      Tensor ref = test::clone(addend.host);
      cpu_.matmul(ref, a.host, false, b.host, true, 1.0, 1.0);
      Tensor out = poisoned({c.m, c.n}, dt());
      gpu_->matmul_add(out, a.device, false, b.device, true, addend.device);
      expect_close(out, ref, fmt::format("matmul_add {}x{}x{}", c.m, c.n, c.k));
      expect_close(addend.device, addend.host, "matmul_add leaves the addend", 1e-7);
    }
    // Weight-gradient form: F32 out += dtype inputs (no rounding of the output).
    Input dy = input({c.m, c.n}), x = input({c.m, c.k});
    Input grad = f32_input({c.n, c.k});
    Tensor ref = test::clone(grad.host);
    cpu_.matmul(ref, dy.host, true, x.host, false, 1.0, 1.0);
    gpu_->matmul(grad.device, dy.device, true, x.device, false, 1.0, 1.0);
    expect_close(grad.device, ref, fmt::format("matmul F32 accumulate {}x{}x{}", c.m, c.n, c.k), 1e-5);
  }
}

// Strided batches (one cuBLASLt call) against the CPU's product-by-product default: every
// operand stacked or shared (a 2-D operand is the same matrix for each product), both the
// forward form (x @ W[g]^T, the q/k/v projections) and the weight-gradient form (F32 out[g] +=
// dy[g]^T @ x).
TEST_P(CudaKernels, MatmulBatched) {
  struct Case { int64_t g, m, n, k; };
  for (Case c : {Case{2, 7, 13, 5}, Case{3, 257, 131, 77}, Case{3, 512, 192, 64}}) {
    for (bool stack_a : {false, true}) {
      for (bool stack_b : {false, true}) {
        for (bool tb : {false, true}) {
          const Shape a_shape{c.m, c.k}, b_shape = tb ? Shape{c.n, c.k} : Shape{c.k, c.n};
          auto stacked = [&](const Shape& s, bool stack) {
            Shape r = s;
            if (stack) r.insert(r.begin(), c.g);
            return r;
          };
          Input a = input(stacked(a_shape, stack_a)), b = input(stacked(b_shape, stack_b));
          Input out = input({c.g, c.m, c.n});
          for (double beta : {0.0, 1.0}) {
            Tensor ref = test::clone(out.host);
            cpu_.matmul_batched(ref, a.host, false, b.host, tb, 0.5, beta);
            Tensor result = test::clone(out.host);
            Tensor dev = to_backend(*gpu_, result, dt());
            if (beta == 0.0) gpu_->fill(dev, std::numeric_limits<double>::quiet_NaN());
            gpu_->matmul_batched(dev, a.device, false, b.device, tb, 0.5, beta);
            expect_close(dev, ref,
                         fmt::format("matmul_batched {}x{}x{}x{} a{} b{} tb={} beta={}", c.g, c.m,
                                     c.n, c.k, stack_a ? "[g]" : "", stack_b ? "[g]" : "", tb,
                                     beta));
          }
        }
      }
    }
    Input dy = input({c.g, c.m, c.n}), x = input({c.m, c.k});
    Input grad = f32_input({c.g, c.n, c.k});
    Tensor ref = test::clone(grad.host);
    cpu_.matmul_batched(ref, dy.host, true, x.host, false, 1.0, 1.0);
    gpu_->matmul_batched(grad.device, dy.device, true, x.device, false, 1.0, 1.0);
    expect_close(grad.device, ref,
                 fmt::format("matmul_batched F32 accumulate {}x{}x{}x{}", c.g, c.m, c.n, c.k), 1e-5);
  }
}

TEST_P(CudaKernels, Embedding) {
  for (int64_t rows : {1, 9, 300}) {
    const int64_t V = 37, D = rows == 9 ? 13 : 64;
    Input table = input({V, D});
    Tensor ids = test::random_ids({rows}, V, rng_);
    Tensor ids_dev = to_backend(*gpu_, ids, DType::i32);
    Tensor out = poisoned({rows, D}, dt());
    Tensor ref = Tensor::zeros({rows, D});
    cpu_.embedding_forward(ref, ids, table.host);
    gpu_->embedding_forward(out, ids_dev, table.device);
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, out), ref), 0.0) << "gather is exact";
    Input dout = input({rows, D});
    Input dtable = f32_input({V, D});  // accumulates
    Tensor dref = test::clone(dtable.host);
    cpu_.embedding_backward(dref, dout.host, ids);
    gpu_->embedding_backward(dtable.device, dout.device, ids_dev);
    expect_close(dtable.device, dref, "embedding_backward rows=" + std::to_string(rows), 1e-6);
  }
}

TEST_P(CudaKernels, RmsNorm) {
  // 5000 and 2500 rows: more than the backward's grid has warps, so warps walk several rows
  // with the next one's reads in flight.
  for (auto [rows, D] : {std::pair<int64_t, int64_t>{1, 8}, {7, 13}, {300, 768}, {33, 2048},
                         {5000, 768}, {2500, 1000}}) {
    Input x = input({rows, D}, 1.0, 0.3), w = input({D}, 0.2, 1.0);
    Tensor out = poisoned({rows, D}, dt()), rstd = poisoned({rows}, DType::f32);
    Tensor ref = Tensor::zeros({rows, D}), rstd_ref = Tensor::zeros({rows});
    cpu_.rmsnorm_forward(ref, rstd_ref, x.host, w.host, 1e-5);
    gpu_->rmsnorm_forward(out, rstd, x.device, w.device, 1e-5);
    const std::string what = fmt::format("rmsnorm {}x{}", rows, D);
    expect_close(out, ref, what);
    expect_close(rstd, rstd_ref, what + " rstd", 1e-5);
    // Backward: dx accumulates (dtype), dweight accumulates (F32 master gradient).
    Input dout = input({rows, D}), dx = input({rows, D});
    Input dw = f32_input({D});
    Tensor dx_ref = test::clone(dx.host), dw_ref = test::clone(dw.host);
    cpu_.rmsnorm_backward(dx_ref, dw_ref, dout.host, x.host, w.host, rstd_ref);
    gpu_->rmsnorm_backward(dx.device, dw.device, dout.device, x.device, w.device, rstd);
    expect_close(dx.device, dx_ref, what + " dx");
    expect_close(dw.device, dw_ref, what + " dweight", dt() == DType::bf16 ? 1e-2 : 1e-5);
  }
}

TEST_P(CudaKernels, RopeForwardBackwardAndAtPositions) {
  for (auto [B, T, H, hd] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 2},
                             {2, 7, 3, 8}, {2, 300, 4, 64}}) {
    for (int64_t offset : {0, 1000}) {
      Input x = input({B, T, H, hd});
      Tensor ref = test::clone(x.host);
      cpu_.rope_forward(ref, 10000.0, offset);
      gpu_->rope_forward(x.device, 10000.0, offset);
      const std::string what = fmt::format("rope [{},{},{},{}] offset {}", B, T, H, hd, offset);
      expect_close(x.device, ref, what);
      Input g = input({B, T, H, hd});
      Tensor gref = test::clone(g.host);
      cpu_.rope_backward(gref, 10000.0, offset);
      gpu_->rope_backward(g.device, 10000.0, offset);
      expect_close(g.device, gref, what + " backward");
    }
  }
  Input x = input({5, 3, 8});
  Tensor positions = test::random_ids({5}, 2000, rng_);
  Tensor ref = test::clone(x.host);
  cpu_.rope_at(ref, positions, 10000.0);
  gpu_->rope_at(x.device, to_backend(*gpu_, positions, DType::i32), 10000.0);
  expect_close(x.device, ref, "rope_at");
}

// The attention backward with the inverse RoPE folded into the writes of dq and dk (the tensor-
// core path for BF16 at head_dim 64, the general path otherwise) against the CPU's
// attention_backward followed by rope_backward, for every combination of rotated q and k, with
// grouped heads and the staggered mask. The CPU runs on the same (bf16-rounded) inputs and on its
// own forward's out and lse; BF16 tolerance as in cuda_attention_test (bf16 P and dS operands).
TEST_P(CudaKernels, AttentionBackwardUndoesRope) {
  struct Shape4 { int64_t B, T, Hq, Hkv, hd; int shift, window; };
  for (Shape4 sh : {Shape4{2, 150, 4, 4, 64, 0, 0}, Shape4{1, 70, 4, 2, 64, 1, 0},
                    Shape4{2, 33, 2, 2, 8, 1, 5}}) {
    Input q = input({sh.B, sh.T, sh.Hq, sh.hd}), k = input({sh.B, sh.T, sh.Hkv, sh.hd});
    Input v = input({sh.B, sh.T, sh.Hkv, sh.hd}), dout = input({sh.B, sh.T, sh.Hq, sh.hd});
    const AttentionMask mask{sh.shift, sh.window};
    Tensor out_ref = Tensor::zeros(q.host.shape()), lse_ref = Tensor::zeros({sh.B, sh.Hq, sh.T});
    cpu_.attention_forward(out_ref, lse_ref, q.host, k.host, v.host, mask);
    Tensor out = gpu_->zeros(q.host.shape(), dt()), lse = gpu_->zeros({sh.B, sh.Hq, sh.T}, DType::f32);
    gpu_->attention_forward(out, lse, q.device, k.device, v.device, mask);
    for (auto [rope_q, rope_k] : {std::pair<bool, bool>{true, true}, {true, false}, {false, true}}) {
      Tensor dq_ref = Tensor::zeros(q.host.shape()), dk_ref = Tensor::zeros(k.host.shape()),
             dv_ref = Tensor::zeros(v.host.shape());
      cpu_.attention_backward_rope(dq_ref, dk_ref, dv_ref, dout.host, out_ref, lse_ref, q.host,
                                   k.host, v.host, mask, rope_q, rope_k, 10000.0);
      Tensor dq = poisoned(q.host.shape(), dt()), dk = poisoned(k.host.shape(), dt()),
             dv = poisoned(v.host.shape(), dt());
      gpu_->attention_backward_rope(dq, dk, dv, dout.device, out, lse, q.device, k.device,
                                    v.device, mask, rope_q, rope_k, 10000.0);
      const std::string what = fmt::format("attention backward + rope(q {}, k {}) [{},{},{}/{},{}]",
                                           rope_q, rope_k, sh.B, sh.T, sh.Hq, sh.Hkv, sh.hd);
      const double tol = dt() == DType::bf16 ? 1.5e-2 : 1e-5;
      expect_close(dq, dq_ref, what + " dq", tol);
      expect_close(dk, dk_ref, what + " dk", tol);
      expect_close(dv, dv_ref, what + " dv", tol);
    }
  }
}

// The model's packed gradients (backend.h): dq|dk|dv written as column ranges of one
// [rows, Q + 2KV + gap] matrix, and d_gate|d_up of one [rows, 2F + gap] matrix, against the CPU
// reference; the gap columns must keep their poison (no stray writes). Shapes cover the tensor-
// core path (BF16, head_dim 64, row strides that are multiples of 8), the general path (F32, or a
// gap that breaks the 16-byte row alignment) and RoPE on both q and k.
TEST_P(CudaKernels, GradientsWrittenAsColumnRanges) {
  struct Shape4 { int64_t B, T, Hq, Hkv, hd, gap; int shift; };
  for (Shape4 sh : {Shape4{2, 150, 4, 4, 64, 8, 0}, Shape4{1, 70, 4, 2, 64, 3, 1},
                    Shape4{2, 33, 2, 2, 8, 8, 0}}) {
    Input q = input({sh.B, sh.T, sh.Hq, sh.hd}), k = input({sh.B, sh.T, sh.Hkv, sh.hd});
    Input v = input({sh.B, sh.T, sh.Hkv, sh.hd}), dout = input({sh.B, sh.T, sh.Hq, sh.hd});
    const AttentionMask mask{sh.shift, 0};
    Tensor out_ref = Tensor::zeros(q.host.shape()), lse_ref = Tensor::zeros({sh.B, sh.Hq, sh.T});
    cpu_.attention_forward(out_ref, lse_ref, q.host, k.host, v.host, mask);
    Tensor dq_ref = Tensor::zeros(q.host.shape()), dk_ref = Tensor::zeros(k.host.shape()),
           dv_ref = Tensor::zeros(v.host.shape());
    cpu_.attention_backward_rope(dq_ref, dk_ref, dv_ref, dout.host, out_ref, lse_ref, q.host,
                                 k.host, v.host, mask, true, true, 10000.0);
    Tensor out = gpu_->zeros(q.host.shape(), dt()), lse = gpu_->zeros({sh.B, sh.Hq, sh.T}, DType::f32);
    gpu_->attention_forward(out, lse, q.device, k.device, v.device, mask);

    const int64_t rows = sh.B * sh.T, Q = sh.Hq * sh.hd, KV = sh.Hkv * sh.hd;
    Tensor packed = poisoned({rows, Q + 2 * KV + sh.gap}, dt());
    auto heads = [&](int64_t start, const Tensor& like) {
      return packed.slice(1, start, like.dim(2) * like.dim(3))
          .unflatten(0, {like.dim(0), like.dim(1)})
          .unflatten(2, {like.dim(2), like.dim(3)});
    };
    // Gap first, so that every range starts off a 16-byte boundary when the gap is odd.
    Tensor dq = heads(sh.gap, q.host), dk = heads(sh.gap + Q, k.host),
           dv = heads(sh.gap + Q + KV, v.host);
    gpu_->attention_backward_rope(dq, dk, dv, dout.device, out, lse, q.device, k.device, v.device,
                                  mask, true, true, 10000.0);
    const Tensor host = to_host_f32(*gpu_, packed);
    const std::string what = fmt::format("packed attention gradients [{},{},{}/{},{}] gap {}",
                                         sh.B, sh.T, sh.Hq, sh.Hkv, sh.hd, sh.gap);
    const double tol = dt() == DType::bf16 ? 1.5e-2 : 1e-5;
    EXPECT_LT(norm_relative_error(columns(host, sh.gap, Q), dq_ref.view({rows, Q})), tol) << what << " dq";
    EXPECT_LT(norm_relative_error(columns(host, sh.gap + Q, KV), dk_ref.view({rows, KV})), tol)
        << what << " dk";
    EXPECT_LT(norm_relative_error(columns(host, sh.gap + Q + KV, KV), dv_ref.view({rows, KV})), tol)
        << what << " dv";
    const Tensor gap = columns(host, 0, sh.gap);
    for (int64_t i = 0; i < gap.numel(); ++i)
      ASSERT_TRUE(std::isnan(gap.data<float>()[i])) << what << ": gap column written";
  }

  for (auto [rows, F, gap] : {std::tuple<int64_t, int64_t, int64_t>{300, 256, 8}, {7, 13, 1}}) {
    Input gate = input({rows, F}, 2.0), up = input({rows, F}), dy = input({rows, F});
    Tensor dg_ref = Tensor::zeros({rows, F}), du_ref = Tensor::zeros({rows, F});
    cpu_.swiglu_backward(dg_ref, du_ref, dy.host, gate.host, up.host);
    Tensor packed = poisoned({rows, 2 * F + gap}, dt());
    Tensor dg = packed.slice(1, 0, F), du = packed.slice(1, F, F);
    gpu_->swiglu_backward(dg, du, dy.device, gate.device, up.device);
    const Tensor host = to_host_f32(*gpu_, packed);
    const std::string what = fmt::format("packed swiglu gradients [{}, {}] gap {}", rows, F, gap);
    EXPECT_LT(norm_relative_error(columns(host, 0, F), dg_ref), tolerance()) << what;
    EXPECT_LT(norm_relative_error(columns(host, F, F), du_ref), tolerance()) << what;
    const Tensor rest = columns(host, 2 * F, gap);
    for (int64_t i = 0; i < rest.numel(); ++i)
      ASSERT_TRUE(std::isnan(rest.data<float>()[i])) << what << ": gap column written";
  }
}

TEST_P(CudaKernels, SwiGlu) {
  for (int64_t n : {1, 13, 300 * 2048}) {
    Input gate = input({n}, 2.0), up = input({n});
    Tensor out = poisoned({n}, dt()), ref = Tensor::zeros({n});
    cpu_.swiglu_forward(ref, gate.host, up.host);
    gpu_->swiglu_forward(out, gate.device, up.device);
    expect_close(out, ref, "swiglu n=" + std::to_string(n));
    Input dout = input({n});
    Tensor dg = poisoned({n}, dt()), du = poisoned({n}, dt());
    Tensor dg_ref = Tensor::zeros({n}), du_ref = Tensor::zeros({n});
    cpu_.swiglu_backward(dg_ref, du_ref, dout.host, gate.host, up.host);
    gpu_->swiglu_backward(dg, du, dout.device, gate.device, up.device);
    expect_close(dg, dg_ref, "swiglu dgate n=" + std::to_string(n));
    expect_close(du, du_ref, "swiglu dup n=" + std::to_string(n));
  }
}

TEST_P(CudaKernels, CrossEntropyWithIgnoredRows) {
  for (auto [rows, V] : {std::pair<int64_t, int64_t>{1, 2}, {9, 11}, {64, 50304}}) {
    Input logits = input({rows, V}, 3.0);
    Tensor targets = test::random_ids({rows}, V, rng_);
    if (rows > 1) targets.data<int32_t>()[1] = -1;  // an ignored position
    Tensor targets_dev = to_backend(*gpu_, targets, DType::i32);
    Tensor losses = poisoned({rows}, DType::f32), ref = Tensor::zeros({rows});
    const int64_t counted_ref = cpu_.cross_entropy_forward(ref, logits.host, targets);
    EXPECT_EQ(gpu_->cross_entropy_forward(losses, logits.device, targets_dev), counted_ref);
    const std::string what = fmt::format("cross entropy {}x{}", rows, V);
    expect_close(losses, ref, what, 1e-5);  // fp32 on both sides of the same inputs
    Tensor dl = poisoned({rows, V}, dt()), dl_ref = Tensor::zeros({rows, V});
    cpu_.cross_entropy_backward(dl_ref, logits.host, targets, 0.37);
    gpu_->cross_entropy_backward(dl, logits.device, targets_dev, 0.37);
    expect_close(dl, dl_ref, what + " backward");
    // Both in one pass (the row kept in shared memory at 50304): gradient with scale 1.
    Tensor losses2 = poisoned({rows}, DType::f32), dl2 = poisoned({rows, V}, dt());
    Tensor dl1_ref = Tensor::zeros({rows, V});
    cpu_.cross_entropy_backward(dl1_ref, logits.host, targets, 1.0);
    gpu_->cross_entropy_forward_backward(losses2, dl2, logits.device, targets_dev);
    expect_close(losses2, ref, what + " fused loss", 1e-5);
    expect_close(dl2, dl1_ref, what + " fused gradient");
  }
}

TEST_P(CudaKernels, DecodeCacheWriteAndAttention) {
  const int64_t B = 3, C = 9, Hq = 4, Hkv = 2, hd = 8;
  Input k_cache = input({B, C, Hkv, hd}), v_cache = input({B, C, Hkv, hd});
  Input rows = input({B, Hkv * hd});
  Tensor slots = Tensor::zeros({B}, DType::i32);
  for (int64_t b = 0; b < B; ++b) slots.data<int32_t>()[b] = static_cast<int32_t>((b * 4) % C);
  Tensor k_ref = test::clone(k_cache.host);
  cpu_.kv_cache_write(k_ref, rows.host, slots);
  gpu_->kv_cache_write(k_cache.device, rows.device, to_backend(*gpu_, slots, DType::i32));
  EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, k_cache.device), k_ref), 0.0);

  // Ranges: full, a ring wrap-around (positions 5..13 in slots j % 9), one key, empty.
  Tensor begin = Tensor::zeros({B}, DType::i32), end = Tensor::zeros({B}, DType::i32);
  const int32_t begins[] = {0, 5, 4}, ends[] = {9, 14, 4};
  for (int64_t b = 0; b < B; ++b) {
    begin.data<int32_t>()[b] = begins[b];
    end.data<int32_t>()[b] = ends[b];
  }
  Input q = input({B, Hq, hd});
  Tensor out = poisoned({B, Hq, hd}, dt()), ref = Tensor::zeros({B, Hq, hd});
  cpu_.attention_decode(ref, q.host, k_ref, v_cache.host, begin, end);
  gpu_->attention_decode(out, q.device, k_cache.device, v_cache.device,
                         to_backend(*gpu_, begin, DType::i32), to_backend(*gpu_, end, DType::i32));
  expect_close(out, ref, "attention_decode");
}

// One decode step of attention fused (RoPE, cache write, attention) against the CPU's three
// operations: self-attention rows (new key at the query's position, GQA) and cross-attention
// rows (new key at position i - 1 in a ring of 3 slots, rope on keys only), every row at its
// own position.
// The cases of the fused decode attention: three rows of different lengths each.
struct StepLayout {
  std::string name;
  int64_t capacity;
  std::vector<int32_t> position, key_position, slot, begin, end;
  bool rope_q, rope_k;
};

// One decode step of attention (RoPE, cache write, attention) against the CPU's unfused
// operations: short contexts at head_dim 8 (scalar loads), and contexts of up to 2100
// positions at head_dim 64 (16-byte loads, up to 33 splits of 64 keys whose partial results are
// merged), over plain caches and a ring of 260 slots that wraps around.
TEST_P(CudaKernels, DecodeAttentionStepMatchesTheUnfusedOperations) {
  const int64_t N = 3, Hq = 4, Hkv = 2;
  const std::vector<std::pair<int64_t, StepLayout>> cases{
      {8, {"self step", 9, {0, 4, 8}, {0, 4, 8}, {0, 4, 8}, {0, 0, 0}, {1, 5, 9}, true, true}},
      {8, {"cross step", 3, {1, 5, 9}, {0, 4, 8}, {0, 1, 2}, {0, 2, 6}, {1, 5, 9}, false, true}},
      {64, {"long self step", 700, {0, 300, 699}, {0, 300, 699}, {0, 300, 699}, {0, 0, 0},
            {1, 301, 700}, true, true}},
      {64, {"long ring step", 260, {5, 259, 600}, {5, 259, 600}, {5, 259, 80}, {0, 0, 341},
            {6, 260, 601}, true, true}},
      {64, {"longer self step", 2100, {0, 1500, 2099}, {0, 1500, 2099}, {0, 1500, 2099},
            {0, 0, 0}, {1, 1501, 2100}, true, true}}};
  for (const auto& [hd, L] : cases) {
    Input q = input({N, Hq, hd}), k = input({N, Hkv, hd}), v = input({N, Hkv, hd});
    Input k_cache = input({N, L.capacity, Hkv, hd}), v_cache = input({N, L.capacity, Hkv, hd});
    auto indices = [&](const std::vector<int32_t>& values) {
      Tensor t = Tensor::zeros({N}, DType::i32);
      std::copy(values.begin(), values.end(), t.data<int32_t>());
      return t;
    };
    AttentionStepRows host{indices(L.position), indices(L.key_position), indices(L.slot),
                           indices(L.begin), indices(L.end)};
    AttentionStepRows device{to_backend(*gpu_, host.position, DType::i32),
                             to_backend(*gpu_, host.key_position, DType::i32),
                             to_backend(*gpu_, host.slot, DType::i32),
                             to_backend(*gpu_, host.key_begin, DType::i32),
                             to_backend(*gpu_, host.key_end, DType::i32)};
    Tensor q_ref = test::clone(q.host), k_ref = test::clone(k.host);
    Tensor kc_ref = test::clone(k_cache.host), vc_ref = test::clone(v_cache.host);
    Tensor out_ref = Tensor::zeros({N, Hq, hd});
    cpu_.attention_step(out_ref, q_ref, k_ref, v.host, kc_ref, vc_ref, host, L.rope_q, L.rope_k,
                        10000.0);
    Tensor out = poisoned({N, Hq, hd}, dt());
    gpu_->attention_step(out, q.device, k.device, v.device, k_cache.device, v_cache.device, device,
                         L.rope_q, L.rope_k, 10000.0);
    const std::string& what = L.name;
    expect_close(out, out_ref, what + " output");
    expect_close(k_cache.device, kc_ref, what + " key cache");
    expect_close(v_cache.device, vc_ref, what + " value cache");
  }
}

// The same step for rows in blocks (a decoder stepping the first 2 of its 3 sequences per
// stack: row r uses cache row (r / 2) * 3 + r % 2): the GPU's one pass against the CPU's
// default, which runs a block of rows at a time; the caches' other rows stay as they were.
TEST_P(CudaKernels, DecodeAttentionStepInBlocksUsesTheMappedCacheRows) {
  const int64_t n = 2, B = 3, N = 2 * n, Hq = 4, Hkv = 2;
  for (const int64_t hd : {int64_t{8}, int64_t{64}}) {
    const int64_t capacity = hd == 8 ? 9 : 700;
    Input q = input({N, Hq, hd}), k = input({N, Hkv, hd}), v = input({N, Hkv, hd});
    Input k_cache = input({2 * B, capacity, Hkv, hd}), v_cache = input({2 * B, capacity, Hkv, hd});
    const std::vector<int32_t> position = hd == 8 ? std::vector<int32_t>{1, 4, 8, 2}
                                                  : std::vector<int32_t>{1, 300, 699, 17};
    auto indices = [&](const std::vector<int32_t>& values) {
      Tensor t = Tensor::zeros({N}, DType::i32);
      std::copy(values.begin(), values.end(), t.data<int32_t>());
      return t;
    };
    std::vector<int32_t> end(position);
    for (int32_t& e : end) ++e;
    AttentionStepRows host{indices(position), indices(position), indices(position),
                           indices(std::vector<int32_t>(N, 0)), indices(end)};
    host.block_rows = n;
    host.cache_block_rows = B;
    AttentionStepRows device{to_backend(*gpu_, host.position, DType::i32),
                             to_backend(*gpu_, host.key_position, DType::i32),
                             to_backend(*gpu_, host.slot, DType::i32),
                             to_backend(*gpu_, host.key_begin, DType::i32),
                             to_backend(*gpu_, host.key_end, DType::i32), n, B};
    Tensor q_ref = test::clone(q.host), k_ref = test::clone(k.host);
    Tensor kc_ref = test::clone(k_cache.host), vc_ref = test::clone(v_cache.host);
    Tensor out_ref = Tensor::zeros({N, Hq, hd});
    cpu_.attention_step(out_ref, q_ref, k_ref, v.host, kc_ref, vc_ref, host, true, true, 10000.0);
    Tensor out = poisoned({N, Hq, hd}, dt());
    gpu_->attention_step(out, q.device, k.device, v.device, k_cache.device, v_cache.device, device,
                         true, true, 10000.0);
    const std::string what = fmt::format("rows in blocks, head_dim {}", hd);
    expect_close(out, out_ref, what + " output");
    expect_close(k_cache.device, kc_ref, what + " key cache");
    expect_close(v_cache.device, vc_ref, what + " value cache");
  }
}

// A prefill's bulk cache write: positions first .. first + n - 1 of one sequence, with a ring
// wrap-around and a prompt longer than the ring (only its last C positions stay), bit-exact.
TEST_P(CudaKernels, DecodeCacheWriteRange) {
  const int64_t B = 3, C = 7, W = 2 * 8;
  for (const auto& [sequence, first, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 0, 5},
                                           {2, 4, 6}, {0, 3, 12}, {1, 6, 1}}) {
    Input cache = input({B, C, 2, 8}), rows = input({n, W});
    Tensor ref = test::clone(cache.host);
    cpu_.kv_cache_write_range(ref, rows.host, sequence, first);
    gpu_->kv_cache_write_range(cache.device, rows.device, sequence, first);
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, cache.device), ref), 0.0)
        << "sequence " << sequence << " first " << first << " n " << n;
  }
}

// Several products of a decode step at once (different weights, accumulating or not) against
// the CPU's one by one.
TEST_P(CudaKernels, LinearManyMatchesTheCpu) {
  for (const int64_t rows : {1, 3, 40}) {
    Input x1 = input({rows, 24}), x2 = input({rows, 24}), w1 = input({40, 24}), w2 = input({17, 24});
    Input w3 = input({24, 40}), h = input({rows, 40}), acc = input({rows, 24});
    Tensor o1 = poisoned({rows, 40}, dt()), o2 = poisoned({rows, 17}, dt());
    // Product 4 normalises its input first (a decode step's fused RMSNorm), from x1's rows.
    Input g = input({24}, 0.2, 1.0), w4 = input({9, 24});
    Tensor o4 = poisoned({rows, 9}, dt());
    const InputNorm gpu_norm{g.device, 1e-5, gpu_->zeros({rows, 24}, dt()),
                             gpu_->zeros({rows}, DType::f32)};
    const InputNorm cpu_norm{g.host, 1e-5, Tensor::zeros({rows, 24}), Tensor::zeros({rows})};
    std::vector<LinearTask> gpu_tasks = {{o1, x1.device, w1.device, false},
                                         {o2, x2.device, w2.device, false},
                                         {acc.device, h.device, w3.device, true},
                                         {o4, x2.device, w4.device, false, gpu_norm}};
    Tensor r1 = Tensor::zeros({rows, 40}), r2 = Tensor::zeros({rows, 17}), r3 = test::clone(acc.host);
    Tensor r4 = Tensor::zeros({rows, 9});
    cpu_.linear_many({{r1, x1.host, w1.host, false}, {r2, x2.host, w2.host, false},
                      {r3, h.host, w3.host, true}, {r4, x2.host, w4.host, false, cpu_norm}});
    gpu_->linear_many(gpu_tasks);
    expect_close(o1, r1, "linear_many product 1");
    expect_close(o2, r2, "linear_many product 2");
    expect_close(acc.device, r3, "linear_many accumulated product");
    expect_close(o4, r4, "linear_many product of normalised rows");
  }
}

// The input transforms a decode step fuses into its products (the sub-block's RMSNorm, the
// MLP's SwiGLU) give what the unfused kernels give (the fused kernel rounds the transformed
// input as the unfused kernel stores it): the gate bit for bit; the norm to rounding, its
// rstd being summed in another order than rmsnorm_forward's (F32 1e-6; BF16 2e-3: a one-ulp
// change of rstd flips the rounding of a few normalised inputs by 2^-8 relative each). Both
// match the CPU. Shapes (linear_small.cu's choose_splits): K 768 (vector loads, one output per
// warp), 100 (not a multiple of 8: scalar loads in BF16), 2048 and 5632 (K split over 2..8 warps
// of a block), 2200 outputs (more warps than one wave: two outputs per warp at one row), and
// 9001 and 5001 outputs (more output groups than resident blocks, as in the output head: each
// block loops over several groups, loading the next group's weights early; also on the scalar
// path, K 100).
TEST_P(CudaKernels, LinearManyFusedInputsEqualTheUnfusedKernels) {
  for (const auto& [K, N] : std::vector<std::pair<int64_t, int64_t>>{
           {768, 33}, {100, 33}, {2048, 33}, {5632, 40}, {768, 2200}, {768, 9001}, {2048, 9001},
           {100, 5001}}) {
    for (const int64_t rows : {1, 3, 8}) {
      const std::string what = fmt::format("rows {} K {} N {}", rows, K, N);
      Input x = input({rows, K}), gate = input({rows, K}), w = input({N, K}, 0.05);
      Input g = input({K}, 0.2, 1.0), residual = input({rows, N});
      // Norm: fused vs rmsnorm_forward then the plain product.
      Tensor fused = poisoned({rows, N}, dt()), plain = poisoned({rows, N}, dt());
      Tensor norm_out = gpu_->zeros({rows, K}, dt()), rstd = gpu_->zeros({rows}, DType::f32);
      gpu_->linear_many({{fused, x.device, w.device, false, InputNorm{g.device, 1e-5, norm_out, rstd}}});
      gpu_->rmsnorm_forward(norm_out, rstd, x.device, g.device, 1e-5);
      gpu_->linear_many({{plain, norm_out, w.device, false}});
      expect_close(fused, to_host_f32(*gpu_, plain), what + " fused norm vs rmsnorm_forward + product",
                   dt() == DType::bf16 ? 2e-3 : 1e-6);
      // Gate, accumulating into a residual: fused vs swiglu_forward then the plain product.
      Tensor acc_fused = to_backend(*gpu_, residual.host, dt()), acc_plain = to_backend(*gpu_, residual.host, dt());
      Tensor hidden = gpu_->zeros({rows, K}, dt());
      gpu_->linear_many({{acc_fused, x.device, w.device, true, InputNorm{}, InputGate{gate.device, hidden}}});
      gpu_->swiglu_forward(hidden, gate.device, x.device);
      gpu_->linear_many({{acc_plain, hidden, w.device, true}});
      const Tensor gated_host = to_host_f32(*gpu_, acc_fused), unfused_host = to_host_f32(*gpu_, acc_plain);
      EXPECT_EQ(std::memcmp(gated_host.raw(), unfused_host.raw(), gated_host.nbytes()), 0)
          << what << ": the fused gate differs from swiglu_forward + product";
      // Both against the CPU, which applies the transforms first (Backend::materialize_inputs).
      Tensor r_norm = Tensor::zeros({rows, N}), r_gate = test::clone(residual.host);
      cpu_.linear_many({{r_norm, x.host, w.host, false,
                         InputNorm{g.host, 1e-5, Tensor::zeros({rows, K}), Tensor::zeros({rows})}},
                        {r_gate, x.host, w.host, true, InputNorm{},
                         InputGate{gate.host, Tensor::zeros({rows, K})}}});
      expect_close(fused, r_norm, what + " fused norm vs CPU");
      expect_close(acc_fused, r_gate, what + " fused gate vs CPU");
    }
  }
}

// A product's outputs are the same bits whatever launch it is part of and at any row count:
// alone at one row, and beside another product with its row as row 1 of 3 (the staggered
// schedule's launches against the sequential one's, shared weights' rows merged). For a product
// small enough for the warp kernel (K 2048: split over 2 warps) and for large ones that stream
// through shared memory (linear_stream.cu); the other product streams at K 2048, not at 768.
TEST_P(CudaKernels, LinearManyOutputsDoNotDependOnTheLaunch) {
  for (const auto& [K, N] : std::vector<std::pair<int64_t, int64_t>>{{2048, 40}, {768, 9001}, {2048, 3001}}) {
    const std::string what = fmt::format("K {} N {}", K, N);
    Input w = input({N, K}, 0.05), g = input({K}, 0.2, 1.0), other_w = input({2100, K}, 0.05);
    Input rows3 = input({3, K}), other_x = input({3, K});
    // The single row: row 1 of the three.
    Tensor row = gpu_->zeros({1, K}, dt());
    gpu_->copy(row, rows3.device.slice(0, 1, 1));
    auto norm = [&](int64_t rows) {
      return InputNorm{g.device, 1e-5, gpu_->zeros({rows, K}, dt()), gpu_->zeros({rows}, DType::f32)};
    };
    Tensor alone = poisoned({1, N}, dt()), together = poisoned({3, N}, dt());
    Tensor other_out = poisoned({3, 2100}, dt());
    gpu_->linear_many({{alone, row, w.device, false, norm(1)}});
    gpu_->linear_many({{other_out, other_x.device, other_w.device, false},
                       {together, rows3.device, w.device, false, norm(3)}});
    const Tensor a = to_host_f32(*gpu_, alone), b = to_host_f32(*gpu_, together.slice(0, 1, 1));
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what << ": row 1 of 3 differs from the row alone";
    // And right: the three rows against the CPU.
    Tensor reference = Tensor::zeros({3, N});
    cpu_.linear_many({{reference, rows3.host, w.host, false,
                       InputNorm{g.host, 1e-5, Tensor::zeros({3, K}), Tensor::zeros({3})}}});
    expect_close(together, reference, what + " vs CPU");
  }
}

TEST_P(CudaKernels, AdamWMatchesTheCpuStep) {
  if (dt() == DType::bf16) GTEST_SKIP() << "AdamW runs on F32 master state only";
  for (int64_t n : {1, 1000, 65537}) {
    Input p = f32_input({n}), g = f32_input({n}), m = f32_input({n}), v = f32_input({n});
    // v must be non-negative (a second moment).
    Tensor v_host = test::clone(v.host);
    for (int64_t i = 0; i < n; ++i) v_host.data<float>()[i] = std::fabs(v_host.data<float>()[i]);
    v.device = to_backend(*gpu_, v_host, DType::f32);
    Tensor p_ref = test::clone(p.host), m_ref = test::clone(m.host), v_ref = test::clone(v_host);
    AdamWStep s;
    s.lr = 3e-3;
    s.weight_decay = 0.1;
    s.step = 7;
    s.grad_scale = 0.8;
    cpu_.adamw_update(p_ref, g.host, m_ref, v_ref, s);
    gpu_->adamw_update(p.device, g.device, m.device, v.device, s);
    expect_close(p.device, p_ref, "adamw param", 1e-6);
    expect_close(m.device, m_ref, "adamw m", 1e-6);
    expect_close(v.device, v_ref, "adamw v", 1e-6);
  }
}

// The optimizer step's multi-tensor launches against the CPU's one-tensor operations, on
// tensors of very different sizes (tails of 1..3 elements after the 4-wide vectors included).
TEST_P(CudaKernels, ManyTensorOperationsMatchOneAtATime) {
  if (dt() == DType::bf16) GTEST_SKIP() << "F32 masters and gradients; BF16 copies are covered";
  // Chunk edges (cuda::kManyChunk = 8192) and an empty tensor among them.
  const std::vector<int64_t> sizes{1, 3, 0, 768, 1001, 8192, 8193, 65537, 300000};
  std::vector<Tensor> grads, masters, working;
  std::vector<AdamWTensors> gpu_params, cpu_params;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    Input p = f32_input({n}), g = f32_input({n}), m = f32_input({n}), v = f32_input({n});
    Tensor v_host = test::clone(v.host);
    for (int64_t j = 0; j < n; ++j) v_host.data<float>()[j] = std::fabs(v_host.data<float>()[j]);
    const double decay = i % 2 ? 0.0 : 0.1;
    gpu_params.push_back({p.device, g.device, m.device, to_backend(*gpu_, v_host, DType::f32), decay});
    cpu_params.push_back({test::clone(p.host), g.host, test::clone(m.host), test::clone(v_host), decay});
    grads.push_back(poisoned({n}, DType::f32));
    masters.push_back(p.device);
    working.push_back(poisoned({n}, DType::bf16));
  }
  gpu_->fill_many(grads, 0.0);
  for (const Tensor& g : grads)
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, g), Tensor::zeros(g.shape())), 0.0)
        << "fill_many n=" << g.numel();

  AdamWStep s;
  s.lr = 3e-3;
  s.weight_decay = 123.0;  // must be ignored: each parameter brings its own
  s.step = 5;
  s.grad_scale = 0.7;
  cpu_.adamw_update_many(cpu_params, s);
  gpu_->adamw_update_many(gpu_params, s);
  for (size_t i = 0; i < sizes.size(); ++i) {
    expect_same_update(gpu_params[i], cpu_params[i],
                       "adamw_update_many n=" + std::to_string(sizes[i]));
  }

  // The GPU's own masters, rounded on the host (the CPU's masters may differ in the last bit).
  gpu_->convert_many(working, masters);
  for (size_t i = 0; i < sizes.size(); ++i)
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, working[i]),
                                       rounded_f32(to_host_f32(*gpu_, masters[i]), DType::bf16)),
              0.0)
        << "convert_many n=" << sizes[i] << " rounds like the host";
  EXPECT_NEAR(gpu_->sum_squares_total(masters),
              [&] {
                double total = 0.0;
                for (const AdamWTensors& p : cpu_params) total += cpu_.sum_squares(p.param);
                return total;
              }(),
              1e-6 * gpu_->sum_squares_total(masters));
}

// adamw_update_many writing the working copies in the same pass (mixed precision's refresh),
// in the test's dtype: every parameter value and moment as the CPU computes it, and every working
// element exactly the rounding of the GPU's own new parameter value (convert's rounding). Sizes
// with tails, views at an odd element offset (no 4-wide accesses) and a tensor without a working
// copy in the same launch.
TEST_P(CudaKernels, AdamWManyWritesTheWorkingCopies) {
  const std::vector<int64_t> sizes{1, 3, 5, 768, 1001, 65537, 300001};
  std::vector<AdamWTensors> gpu_params, cpu_params;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    const bool odd_offset = i % 3 == 1;  // a view starting at element 1 of a larger tensor
    auto view = [&](const Tensor& t) { return odd_offset ? t.slice(0, 1, n) : t; };
    const int64_t whole = odd_offset ? n + 1 : n;
    Input p = f32_input({whole}), g = f32_input({whole}), m = f32_input({whole});
    Tensor v_host = test::random_normal({whole}, DType::f32, rng_);
    for (int64_t j = 0; j < whole; ++j) v_host.data<float>()[j] = std::fabs(v_host.data<float>()[j]);
    const double decay = i % 2 ? 0.0 : 0.1;
    AdamWTensors dev{view(p.device), view(g.device), view(m.device),
                     view(to_backend(*gpu_, v_host, DType::f32)), decay};
    if (i != 3) dev.working = view(poisoned({whole}, dt()));  // one tensor without a copy
    gpu_params.push_back(dev);
    AdamWTensors host{test::clone(view(p.host)), test::clone(view(g.host)),
                      test::clone(view(m.host)), test::clone(view(v_host)), decay};
    if (i != 3) host.working = Tensor::zeros({n}, dt());
    cpu_params.push_back(host);
  }
  AdamWStep s;
  s.lr = 2e-3;
  s.step = 3;
  s.grad_scale = 0.9;
  cpu_.adamw_update_many(cpu_params, s);
  gpu_->adamw_update_many(gpu_params, s);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string what = fmt::format("adamw_update_many + working n={}", sizes[i]);
    expect_same_update(gpu_params[i], cpu_params[i], what);
    if (i == 3) continue;
    const Tensor param = to_host_f32(*gpu_, gpu_params[i].param);
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, gpu_params[i].working),
                                       rounded_f32(param, dt())),
              0.0)
        << what << " (" << dtype_name(dt()) << "): working is not the rounded new parameter";
  }
  // A launch mixes no working dtypes; shapes must match.
  AdamWTensors bad = gpu_params[0];
  bad.working = gpu_->zeros({2}, dt());
  EXPECT_THROW(gpu_->adamw_update_many({bad}, s), Error);
  bad.working = gpu_->zeros(bad.param.shape(), dt() == DType::bf16 ? DType::f32 : DType::bf16);
  EXPECT_THROW(gpu_->adamw_update_many({gpu_params[0], bad}, s), Error);
}

// Clipping decided on the GPU: sum_squares_total_into leaves the gradients' sum of squares on
// the device and adamw_update_many turns it into the factor itself. Against the CPU's update
// with the host's factor (a real clip: factor < 1); a non-finite sum changes nothing.
TEST_P(CudaKernels, AdamWClipsWithTheNormOnTheDevice) {
  if (dt() == DType::bf16) GTEST_SKIP() << "F32 masters and gradients";
  const std::vector<int64_t> sizes{5, 8193, 70001};
  std::vector<AdamWTensors> gpu_params, cpu_params;
  std::vector<Tensor> grads;
  double host_sum = 0.0;
  for (int64_t n : sizes) {
    Input p = f32_input({n}), g = f32_input({n}), m = f32_input({n});
    Tensor v_host = test::random_normal({n}, DType::f32, rng_);
    for (int64_t j = 0; j < n; ++j) v_host.data<float>()[j] = std::fabs(v_host.data<float>()[j]);
    gpu_params.push_back({p.device, g.device, m.device, to_backend(*gpu_, v_host, DType::f32), 0.1});
    cpu_params.push_back({test::clone(p.host), g.host, test::clone(m.host), test::clone(v_host), 0.1});
    grads.push_back(g.device);
    host_sum += cpu_.sum_squares(g.host);
  }
  Tensor sum = gpu_->zeros({1}, DType::f64);
  gpu_->sum_squares_total_into(sum, grads);
  EXPECT_NEAR(gpu_->read_f64_scalar(sum), host_sum, 1e-9 * host_sum);

  const double max_norm = 0.25 * std::sqrt(host_sum);
  AdamWStep s;
  s.lr = 2e-3;
  s.step = 4;
  s.grad_scale = clip_factor(std::sqrt(host_sum), max_norm);
  ASSERT_LT(s.grad_scale, 0.3);
  cpu_.adamw_update_many(cpu_params, s);
  AdamWStep device_clipped = s;
  device_clipped.grad_scale = 1.0;  // must be replaced by the device's factor
  device_clipped.clip_sum_squares = sum;
  device_clipped.max_norm = max_norm;
  gpu_->adamw_update_many(gpu_params, device_clipped);
  for (size_t i = 0; i < sizes.size(); ++i)
    expect_same_update(gpu_params[i], cpu_params[i],
                       fmt::format("device-clipped adamw n={}", sizes[i]));

  // A NaN gradient: the sum is NaN and the update writes nothing.
  Tensor nan_grad = Tensor::zeros({sizes[0]});
  nan_grad.data<float>()[2] = std::numeric_limits<float>::quiet_NaN();
  gpu_->copy(gpu_params[0].grad, nan_grad);
  gpu_->sum_squares_total_into(sum, grads);
  std::vector<Tensor> before;
  for (const AdamWTensors& p : gpu_params) before.push_back(to_host_f32(*gpu_, p.param));
  gpu_->adamw_update_many(gpu_params, device_clipped);
  for (size_t i = 0; i < sizes.size(); ++i)
    EXPECT_EQ(test::max_abs_difference(to_host_f32(*gpu_, gpu_params[i].param), before[i]), 0.0)
        << "a non-finite norm must not update n=" << sizes[i];
}

TEST(CudaBackend, ClearErrorsForWrongTensors) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);
  Tensor host = Tensor::zeros({4});
  Tensor dev = gpu->zeros({4}, DType::f32);
  EXPECT_THROW(gpu->scale(host, 2.0), Error);  // a CPU tensor
  Tensor f64 = gpu->zeros({4}, DType::f64);
  EXPECT_THROW(gpu->fill(f64, 1.0), Error);  // F64 is CPU-only
  Tensor a = gpu->zeros({3, 4}, DType::f32), b = gpu->zeros({5, 6}, DType::f32), c = gpu->zeros({3, 6}, DType::f32);
  EXPECT_THROW(gpu->matmul(c, a, false, b, false, 1.0, 0.0), Error);  // 4 != 5
  // Asking for far more memory than any GPU has names the size and the free memory.
  try {
    gpu->zeros({int64_t(1) << 40}, DType::f32);
    ADD_FAILURE() << "a 4 TiB allocation succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA out of memory"), std::string::npos) << e.what();
  }
  gpu->fill(dev, 1.0);  // the backend still works after the failed allocation
  EXPECT_EQ(gpu->sum_squares(dev), 4.0);
}

// The pinned readback returns the values as they were when start() was queued, and waits only
// for the copy: ~100 ms of products queued after it are still running when wait() returns
// (a read through the stream would wait for them: the step pipeline would gain nothing).
TEST(CudaBackend, ReadbackWaitsOnlyForItsCopy) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);
  Tensor host_values = Tensor::zeros({3}, DType::f64);
  for (int i = 0; i < 3; ++i) host_values.data<double>()[i] = 1.5 * (i + 1);
  Tensor values = gpu->zeros({3}, DType::f64);
  gpu->copy(values, host_values);
  Rng rng(21);
  Tensor a = to_backend(*gpu, test::random_normal({8192, 8192}, DType::f32, rng), DType::bf16);
  Tensor c = gpu->zeros({8192, 8192}, DType::bf16);
  gpu->matmul(c, a, false, a, true, 1.0, 0.0);  // tunes the product's plan (it synchronizes)
  gpu->synchronize();

  auto reader = gpu->make_readback();
  const auto t0 = std::chrono::steady_clock::now();
  reader->start(values);
  EXPECT_THROW(reader->start(values), Error) << "one read at a time";
  Tensor first = values.slice(0, 0, 1);
  gpu->dot_into(first, 1.0, a.view({8192 * 8192}), a.view({8192 * 8192}));  // overwrites values[0]
  for (int i = 0; i < 60; ++i) gpu->matmul(c, a, false, a, true, 1.0, 0.0);  // ~1.1 TFLOP each
  const std::vector<double> got = reader->wait();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  gpu->synchronize();
  const double all = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(got, (std::vector<double>{1.5, 3.0, 4.5})) << "the values before the later dot";
  EXPECT_LT(waited, 0.5 * all) << "wait() took " << waited << " s of the " << all
                               << " s the queued work took: it waited for later work";
  EXPECT_FALSE(reader->pending());
  reader->start(values);
  EXPECT_GT(reader->wait()[0], 1e6) << "a new read sees the dot";
  EXPECT_THROW(reader->wait(), Error) << "nothing started";

  gpu->begin_recording();  // a recorded copy would write the host buffer at every replay
  EXPECT_THROW(reader->start(values), Error);
  gpu->abort_recording();
  EXPECT_THROW(reader->start(gpu->zeros({2}, DType::f32)), Error) << "F64 only";
}

// A recording's small memsets become kernel nodes (cuda/recording_memsets.h) that write the
// same bytes — 1-, 2- and 4-byte elements, several rows with a pitch — in the same order, and a
// large one stays a memset. Every byte of both buffers is compared with the host's expectation.
TEST(CudaRecording, SmallMemsetsBecomeKernelsThatWriteTheSame) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);  // sets the device
  constexpr size_t kSmall = 4096, kLarge = 128 << 10;
  std::vector<uint8_t> small(kSmall, 0xAB), large(kLarge, 0xCD);
  uint8_t *d_small = nullptr, *d_large = nullptr;
  ASSERT_EQ(cudaMalloc(&d_small, kSmall), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_large, kLarge), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_small, small.data(), kSmall, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_large, large.data(), kLarge, cudaMemcpyHostToDevice), cudaSuccess);
  struct Set {
    size_t offset, pitch;
    unsigned value, element_size;
    size_t width, height;
    bool in_large;
  };
  const std::vector<Set> sets = {
      {3, 0, 0x12, 1, 5, 1, false},                 // bytes
      {64, 40, 0xBEEF, 2, 3, 4, false},             // 16-bit elements, 4 rows 40 bytes apart
      {512, 0, 0xDEADBEEF, 4, 7, 1, false},         // 32-bit elements
      {513, 0, 0x77, 1, 2, 1, false},               // after the one above, over two of its bytes
      {1000, 0, 0x5A, 1, cuda::kMaxReplacedMemsetBytes + 1, 1, true},  // too large: stays a memset node
  };
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaGraphCreate(&graph, 0), cudaSuccess);
  cudaGraphNode_t previous = nullptr;
  for (const Set& set : sets) {
    cudaMemsetParams m{};
    m.dst = (set.in_large ? d_large : d_small) + set.offset;
    m.pitch = set.pitch;
    m.value = set.value;
    m.elementSize = set.element_size;
    m.width = set.width;
    m.height = set.height;
    cudaGraphNode_t node = nullptr;
    ASSERT_EQ(cudaGraphAddMemsetNode(&node, graph, previous ? &previous : nullptr, previous ? 1 : 0, &m),
              cudaSuccess);
    previous = node;
    // The host's expectation, in the same order.
    std::vector<uint8_t>& bytes = set.in_large ? large : small;
    for (size_t r = 0; r < set.height; ++r)
      for (size_t c = 0; c < set.width; ++c)
        for (unsigned b = 0; b < set.element_size; ++b)
          bytes[set.offset + r * set.pitch + c * set.element_size + b] =
              static_cast<uint8_t>(set.value >> (8 * b));
  }
  EXPECT_EQ(cuda::replace_small_memsets(graph), 4);
  size_t count = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &count), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(count);
  ASSERT_EQ(cudaGraphGetNodes(graph, nodes.data(), &count), cudaSuccess);
  int memsets = 0, kernels = 0, roots = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    ASSERT_EQ(cudaGraphNodeGetType(node, &type), cudaSuccess);
    memsets += type == cudaGraphNodeTypeMemset;
    kernels += type == cudaGraphNodeTypeKernel;
    size_t deps = 0;
    ASSERT_EQ(cudaGraphNodeGetDependencies(node, nullptr, nullptr, &deps), cudaSuccess);
    roots += deps == 0;
  }
  EXPECT_EQ(memsets, 1);
  EXPECT_EQ(kernels, 4);
  EXPECT_EQ(roots, 1) << "the chain of dependencies was not kept";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> got_small(kSmall), got_large(kLarge);
  ASSERT_EQ(cudaMemcpy(got_small.data(), d_small, kSmall, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_large.data(), d_large, kLarge, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got_small, small);
  EXPECT_EQ(got_large, large);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(d_small);
  cudaFree(d_large);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKernels, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace sf
