// cpu_backend.h — the reference backend: every kernel of core/backend.h on the CPU.
//
// fp32 is the reference precision; fp64 is supported by every kernel so that the
// finite-difference gradient checks can run with tight tolerances. Matrix products go to
// OpenBLAS (sgemm/dgemm); the rest are plain loops parallelised with OpenMP over rows/heads.
// Each kernel lives in its own file (cpu/embedding.cpp, cpu/rmsnorm.cpp, ...).
#pragma once

#include "core/backend.h"

namespace sf {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  Tensor zeros(const Shape& shape, DType dtype) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void convert(Tensor& dst, const Tensor& src) override;

  void fill(Tensor& x, double value) override;
  void scale(Tensor& x, double alpha) override;
  void axpy(Tensor& y, double alpha, const Tensor& x) override;
  double dot(const Tensor& a, const Tensor& b) override;
  double sum_squares(const Tensor& x) override;

  void matmul(Tensor& out, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b,
              double alpha, double beta) override;

  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) override;
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) override;
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                       double eps) override;
  void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                        const Tensor& weight, const Tensor& rstd) override;
  void rope_forward(Tensor& x, double theta, int64_t position_offset) override;
  void rope_backward(Tensor& dx, double theta, int64_t position_offset) override;
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, AttentionMask mask) override;
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                          const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                          const Tensor& v, AttentionMask mask) override;
  void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up) override;
  int64_t cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                const Tensor& targets) override;
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                              double scale) override;

  // Decoding (cpu_backend_decode.cpp).
  void linear_many(const std::vector<LinearTask>& tasks) override;
  void rope_at(Tensor& x, const Tensor& positions, double theta) override;
  void kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) override;
  void kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                            int64_t first_position) override;
  void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& key_begin, const Tensor& key_end) override;

  // STREAM-like copy/triad/read over all cores (cpu/memory_bandwidth.h).
  std::optional<MemoryBandwidth> measure_memory_bandwidth() override;

  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& step) override;
};

}  // namespace sf
