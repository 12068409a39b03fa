// cpu_backend.cpp — CpuBackend: argument checks, dtype dispatch, and the small
// elementwise/reduction ops and the OpenBLAS matrix product. Layer kernels are in their own files.
#include "cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/bf16.h"
#include "cpu/cpu_checks.h"
#include "cpu/kernels.h"
#include "cpu/memory_bandwidth.h"

namespace sf {

using namespace cpu;  // the argument checks of cpu_checks.h

namespace {


// An output that the Backend contract allows to be row-strided (backend.h: the gradients of
// attention and SwiGLU, packed side by side by the model). The CPU kernels write contiguous
// memory, so a strided target is computed in a contiguous temporary (filled from the target
// first when the operation reads it, as the in-place RoPE does) and copied back by finish().
class RowStridedOutput {
 public:
  RowStridedOutput(Tensor& target, int width_dims, bool read_first, const char* op)
      : target_(target), width_dims_(width_dims) {
    SF_CHECK(target.defined() && target.device() == Device::cpu,
             "{}: output {} must be a CPU tensor", op, target.describe());
    stride_ = target.row_stride(width_dims);
    SF_CHECK(stride_ >= 0, "{}: output {} is neither contiguous nor row-strided", op,
             target.describe());
    if (target.is_contiguous()) {
      work_ = target;
      return;
    }
    work_ = Tensor::zeros(target.shape(), target.dtype());
    if (read_first) copy_rows(work_, target_, false);
  }
  Tensor& tensor() { return work_; }
  void finish() {
    if (work_.raw() != target_.raw()) copy_rows(target_, work_, true);
  }

 private:
  // Row r of the strided target starts r * stride_ elements after its first element.
  void copy_rows(const Tensor& dst, const Tensor& src, bool into_target) const {
    const size_t elem = dtype_size(work_.dtype());
    int64_t width = 1;
    for (int i = target_.ndim() - width_dims_; i < target_.ndim(); ++i) width *= target_.dim(i);
    const int64_t rows = width == 0 ? 0 : work_.numel() / width;
    auto* d = static_cast<char*>(dst.raw());
    const auto* s = static_cast<const char*>(src.raw());
    const int64_t dst_stride = into_target ? stride_ : width, src_stride = into_target ? width : stride_;
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(d + r * dst_stride * elem, s + r * src_stride * elem, width * elem);
  }

  Tensor& target_;
  int width_dims_;
  int64_t stride_ = 0;
  Tensor work_;
};

}  // namespace

Tensor CpuBackend::zeros(const Shape& shape, DType dtype) { return Tensor::zeros(shape, dtype); }

void CpuBackend::copy(Tensor& dst, const Tensor& src) {
  check_cpu(dst, "copy");
  check_cpu(src, "copy");
  SF_CHECK(dst.dtype() == src.dtype() && dst.shape() == src.shape(), "copy: {} into {}",
           src.describe(), dst.describe());
  if (dst.raw() != src.raw()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}

namespace {

// Element i of a contiguous floating tensor as a double (F32, F64 or BF16).
double load_as_double(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f32: return t.data<float>()[i];
    case DType::f64: return t.data<double>()[i];
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(t.raw())[i]);
    default: fail(fmt::format("convert: {} is not a floating tensor", t.describe()));
  }
}

}  // namespace

void CpuBackend::convert(Tensor& dst, const Tensor& src) {
  check_cpu(dst, "convert");
  check_cpu(src, "convert");
  SF_CHECK(dst.shape() == src.shape() && dst.is_contiguous() && src.is_contiguous(),
           "convert: {} into {}", src.describe(), dst.describe());
  SF_CHECK(src.dtype() == DType::f32 || src.dtype() == DType::f64 || src.dtype() == DType::bf16,
           "convert: {} is not a floating tensor", src.describe());
  const int64_t n = src.numel();
  switch (dst.dtype()) {
    case DType::f32: {
      float* d = dst.data<float>();
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(load_as_double(src, i));
      break;
    }
    case DType::f64: {
      double* d = dst.data<double>();
      for (int64_t i = 0; i < n; ++i) d[i] = load_as_double(src, i);
      break;
    }
    case DType::bf16: {
      // BF16 data is held in U16 on the host side of Tensor::data<>.
      auto* d = static_cast<uint16_t*>(dst.raw());
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(static_cast<float>(load_as_double(src, i)));
      break;
    }
    default: fail(fmt::format("convert: {} is not a floating tensor", dst.describe()));
  }
}

void CpuBackend::fill(Tensor& x, double value) {
  check_float(x, "fill");
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(value);
  });
}

void CpuBackend::scale(Tensor& x, double alpha) {
  check_float(x, "scale");
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] * alpha);
  });
}

void CpuBackend::axpy(Tensor& y, double alpha, const Tensor& x) {
  check_same(y, x, "axpy");
  dispatch(y, [&](auto z) {
    using T = decltype(z);
    T* py = y.data<T>();
    const T* px = x.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = y.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  });
}

double CpuBackend::dot(const Tensor& a, const Tensor& b) {
  check_same(a, b, "dot");
  return dispatch(a, [&](auto z) {
    using T = decltype(z);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    // Chunks that depend on the length only, summed in order: the same result whatever the
    // thread count (an OpenMP reduction's order follows the threads).
    constexpr int64_t kChunk = 16384;
    const int64_t n = a.numel(), chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t k = 0; k < chunks; ++k) {
      double s = 0.0;
      for (int64_t i = k * kChunk; i < std::min(n, (k + 1) * kChunk); ++i) {
        s += static_cast<double>(pa[i]) * pb[i];
      }
      partial[static_cast<size_t>(k)] = s;
    }
    double s = 0.0;
    for (double p : partial) s += p;
    return s;
  });
}

double CpuBackend::sum_squares(const Tensor& x) { return dot(x, x); }

void CpuBackend::matmul(Tensor& out, const Tensor& a, bool transpose_a, const Tensor& b,
                        bool transpose_b, double alpha, double beta) {
  check_float(out, "matmul");
  check_float(a, "matmul");
  check_float(b, "matmul");
  SF_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "matmul: dtypes {} {} {}",
           a.describe(), b.describe(), out.describe());
  SF_CHECK(a.ndim() == 2 && b.ndim() == 2 && out.ndim() == 2, "matmul: 2-D tensors expected");
  const int64_t m = transpose_a ? a.dim(1) : a.dim(0);
  const int64_t k = transpose_a ? a.dim(0) : a.dim(1);
  const int64_t kb = transpose_b ? b.dim(1) : b.dim(0);
  const int64_t n = transpose_b ? b.dim(0) : b.dim(1);
  SF_CHECK(k == kb && out.dim(0) == m && out.dim(1) == n,
           "matmul: {}{} x {}{} -> {} does not conform", a.describe(), transpose_a ? "^T" : "",
           b.describe(), transpose_b ? "^T" : "", out.describe());
  if (m == 0 || n == 0) return;
  if (!transpose_a && transpose_b && m <= kSmallRows) {
    // Decode-sized products (a linear layer on a few rows): our deterministic kernel.
    dispatch(out, [&](auto z) {
      using T = decltype(z);
      cpu::linear_small<T>(out.data<T>(), a.data<T>(), b.data<T>(), m, n, k, alpha, beta);
    });
    return;
  }
  const auto ta = transpose_a ? CblasTrans : CblasNoTrans;
  const auto tb = transpose_b ? CblasTrans : CblasNoTrans;
  if (out.dtype() == DType::f64) {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a.data<double>(), a.dim(1),
                b.data<double>(), b.dim(1), beta, out.data<double>(), n);
  } else {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(alpha), a.data<float>(),
                a.dim(1), b.data<float>(), b.dim(1), static_cast<float>(beta), out.data<float>(),
                n);
  }
}

void CpuBackend::embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) {
  check_float(out, "embedding_forward");
  check_float(table, "embedding_forward");
  SF_CHECK(table.ndim() == 2 && out.dim(-1) == table.dim(1) && out.dtype() == table.dtype(),
           "embedding_forward: out {} vs table {}", out.describe(), table.describe());
  const int64_t rows = rows_of(out);
  check_indices(tokens, rows, "embedding_forward");
  dispatch(out, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_forward<T>(out.data<T>(), tokens.data<int32_t>(), table.data<T>(), rows,
                              table.dim(0), table.dim(1));
  });
}

void CpuBackend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  check_float(dtable, "embedding_backward");
  check_float(dout, "embedding_backward");
  SF_CHECK(dtable.ndim() == 2 && dout.dim(-1) == dtable.dim(1) && dout.dtype() == dtable.dtype(),
           "embedding_backward: dout {} vs dtable {}", dout.describe(), dtable.describe());
  const int64_t rows = rows_of(dout);
  check_indices(tokens, rows, "embedding_backward");
  dispatch(dout, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_backward<T>(dtable.data<T>(), dout.data<T>(), tokens.data<int32_t>(), rows,
                               dtable.dim(0), dtable.dim(1));
  });
}

void CpuBackend::rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                                 double eps) {
  check_same(out, x, "rmsnorm_forward");
  check_float(weight, "rmsnorm_forward");
  check_float(rstd, "rmsnorm_forward");
  const int64_t dim = x.dim(-1), rows = rows_of(x);
  check_shape(weight, {dim}, "rmsnorm_forward weight");
  SF_CHECK(rstd.numel() == rows && rstd.dtype() == x.dtype(), "rmsnorm_forward: rstd {} for {}",
           rstd.describe(), x.describe());
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_forward<T>(out.data<T>(), rstd.data<T>(), x.data<T>(), weight.data<T>(), rows,
                            dim, eps);
  });
}

void CpuBackend::rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                                  const Tensor& weight, const Tensor& rstd) {
  check_same(dx, x, "rmsnorm_backward");
  check_same(dout, x, "rmsnorm_backward");
  check_same(dweight, weight, "rmsnorm_backward");
  const int64_t dim = x.dim(-1), rows = rows_of(x);
  check_shape(weight, {dim}, "rmsnorm_backward weight");
  SF_CHECK(rstd.numel() == rows && rstd.dtype() == x.dtype(), "rmsnorm_backward: rstd {} for {}",
           rstd.describe(), x.describe());
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    cpu::rmsnorm_backward<T>(dx.data<T>(), dweight.data<T>(), dout.data<T>(), x.data<T>(),
                             weight.data<T>(), rstd.data<T>(), rows, dim);
  });
}

// x may be row-strided: attention_backward_rope's default rotates the attention's dq and dk
// outputs in place.
static void rope_apply(Tensor& target, double theta, int64_t position_offset, int sign) {
  SF_CHECK(target.ndim() == 4 && target.dim(3) % 2 == 0,
           "rope: expected [B, T, H, even head_dim], got {}", target.describe());
  RowStridedOutput out(target, 2, true, "rope");
  Tensor& x = out.tensor();
  check_float(x, "rope");
  dispatch(x, [&](auto z) {
    using T = decltype(z);
    cpu::rope_rotate<T>(x.data<T>(), x.dim(0), x.dim(1), x.dim(2), x.dim(3), theta,
                        position_offset, sign);
  });
  out.finish();
}

void CpuBackend::rope_forward(Tensor& x, double theta, int64_t position_offset) {
  rope_apply(x, theta, position_offset, +1);
}

void CpuBackend::rope_backward(Tensor& dx, double theta, int64_t position_offset) {
  rope_apply(dx, theta, position_offset, -1);
}

static cpu::AttentionShape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& lse) {
  check_float(q, "attention");
  check_same(k, v, "attention");
  SF_CHECK(q.dtype() == k.dtype(), "attention: q {} vs k {}", q.describe(), k.describe());
  SF_CHECK(q.ndim() == 4 && k.ndim() == 4, "attention: q and k must be [B, T, H, hd]");
  cpu::AttentionShape s{q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(2), q.dim(3)};
  SF_CHECK(k.dim(0) == s.batch && k.dim(3) == s.head_dim,
           "attention: q {} and k {} disagree on batch or head_dim", q.describe(), k.describe());
  SF_CHECK(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
           "attention: {} query heads not a multiple of {} kv heads", s.q_heads, s.kv_heads);
  check_float(lse, "attention");
  check_shape(lse, {s.batch, s.q_heads, s.q_len}, "attention lse");
  SF_CHECK(lse.dtype() == q.dtype(), "attention: lse {} vs q {}", lse.describe(), q.describe());
  return s;
}

void CpuBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, AttentionMask mask) {
  const auto s = attention_shape(q, k, v, lse);
  check_same(out, q, "attention_forward");
  dispatch(q, [&](auto z) {
    using T = decltype(z);
    cpu::attention_forward<T>(out.data<T>(), lse.data<T>(), q.data<T>(), k.data<T>(),
                              v.data<T>(), s, mask);
  });
}

void CpuBackend::attention_backward(Tensor& dq_target, Tensor& dk_target, Tensor& dv_target,
                                    const Tensor& dout, const Tensor& out, const Tensor& lse,
                                    const Tensor& q, const Tensor& k, const Tensor& v,
                                    AttentionMask mask) {
  const auto s = attention_shape(q, k, v, lse);
  RowStridedOutput dq_out(dq_target, 2, false, "attention_backward dq"),
      dk_out(dk_target, 2, false, "attention_backward dk"),
      dv_out(dv_target, 2, false, "attention_backward dv");
  Tensor &dq = dq_out.tensor(), &dk = dk_out.tensor(), &dv = dv_out.tensor();
  check_same(dq, q, "attention_backward");
  check_same(dout, q, "attention_backward");
  check_same(out, q, "attention_backward");
  check_same(dk, k, "attention_backward");
  check_same(dv, v, "attention_backward");
  dispatch(q, [&](auto z) {
    using T = decltype(z);
    cpu::attention_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), dout.data<T>(),
                               out.data<T>(), lse.data<T>(), q.data<T>(), k.data<T>(),
                               v.data<T>(), s, mask);
  });
  dq_out.finish();
  dk_out.finish();
  dv_out.finish();
}

void CpuBackend::swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) {
  check_same(out, gate, "swiglu_forward");
  check_same(up, gate, "swiglu_forward");
  dispatch(out, [&](auto z) {
    using T = decltype(z);
    cpu::swiglu_forward<T>(out.data<T>(), gate.data<T>(), up.data<T>(), out.numel());
  });
}

void CpuBackend::swiglu_backward(Tensor& dgate_target, Tensor& dup_target, const Tensor& dout,
                                 const Tensor& gate, const Tensor& up) {
  RowStridedOutput dgate_out(dgate_target, 1, false, "swiglu_backward dgate"),
      dup_out(dup_target, 1, false, "swiglu_backward dup");
  Tensor &dgate = dgate_out.tensor(), &dup = dup_out.tensor();
  check_same(dgate, gate, "swiglu_backward");
  check_same(dup, gate, "swiglu_backward");
  check_same(dout, gate, "swiglu_backward");
  check_same(up, gate, "swiglu_backward");
  dispatch(gate, [&](auto z) {
    using T = decltype(z);
    cpu::swiglu_backward<T>(dgate.data<T>(), dup.data<T>(), dout.data<T>(), gate.data<T>(),
                            up.data<T>(), gate.numel());
  });
  dgate_out.finish();
  dup_out.finish();
}

int64_t CpuBackend::cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                          const Tensor& targets) {
  check_float(logits, "cross_entropy_forward");
  check_float(losses, "cross_entropy_forward");
  const int64_t rows = rows_of(logits);
  SF_CHECK(losses.numel() == rows && losses.dtype() == logits.dtype(),
           "cross_entropy_forward: losses {} for logits {}", losses.describe(), logits.describe());
  check_indices(targets, rows, "cross_entropy_forward");
  return dispatch(logits, [&](auto z) {
    using T = decltype(z);
    return cpu::cross_entropy_forward<T>(losses.data<T>(), logits.data<T>(),
                                         targets.data<int32_t>(), rows, logits.dim(-1));
  });
}

void CpuBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                        const Tensor& targets, double scale) {
  check_same(dlogits, logits, "cross_entropy_backward");
  const int64_t rows = rows_of(logits);
  check_indices(targets, rows, "cross_entropy_backward");
  dispatch(logits, [&](auto z) {
    using T = decltype(z);
    cpu::cross_entropy_backward<T>(dlogits.data<T>(), logits.data<T>(), targets.data<int32_t>(),
                                   rows, logits.dim(-1), scale);
  });
}

void CpuBackend::adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                              const AdamWStep& step) {
  for (const Tensor* t : {static_cast<const Tensor*>(&param), &grad,
                          static_cast<const Tensor*>(&m), static_cast<const Tensor*>(&v)}) {
    check_cpu(*t, "adamw_update");
    SF_CHECK(t->dtype() == DType::f32, "adamw_update: F32 tensors expected, got {}", t->describe());
    SF_CHECK(t->shape() == param.shape(), "adamw_update: {} vs parameter {}", t->describe(),
             param.describe());
  }
  cpu::adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                    param.numel(), step);
}

std::optional<MemoryBandwidth> CpuBackend::measure_memory_bandwidth() {
  return memory_bandwidth_measure();
}

}  // namespace sf
