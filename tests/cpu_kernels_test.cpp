// cpu_kernels_test.cpp — tests of the CPU layer kernels through sf::CpuBackend: fp64
// finite-difference checks of every gradient, forward values against naive references written
// here, fp32-vs-fp64 agreement, the accumulate/overwrite contracts of core/backend.h, masks and
// edge cases (ignored targets, bad ids, queries that see no key, large inputs).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "support/test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace sf {
namespace {

using test::check_gradient;
using test::clone;
using test::columns;
using test::convert;
using test::max_abs_difference;
using test::max_relative_error;
using test::random_normal;
using test::value_at;

// fp64 finite differences: h = 1e-5 gives truncation ~1e-10 and rounding ~1e-11 relative errors,
// so 1e-6 has a wide margin while any wrong term gives O(1e-2 .. 1) (see support/gradcheck.h).
constexpr double kGradTolerance = 1e-6;
// fp32 vs fp64 on identical inputs: the kernels accumulate in double, so the fp32 result is the
// fp64 one rounded once or a few times (~1e-7); 1e-5 allows for fp32 intermediates (rstd, lse).
constexpr double kFp32Tolerance = 1e-5;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

CpuBackend cpu;

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype()); }

Tensor filled(const Shape& shape, DType dtype, double value) {
  Tensor t = Tensor::zeros(shape, dtype);
  cpu.fill(t, value);
  return t;
}

// An fp32 random tensor and its exact fp64 copy: both paths then see identical inputs.
struct Pair {
  Tensor f32, f64;
};
Pair random_pair(const Shape& shape, Rng& rng, double stddev = 1.0) {
  Tensor f32 = random_normal(shape, DType::f32, rng, stddev);
  return {f32, convert(f32, DType::f64)};
}

Tensor ids(const Shape& shape, const std::vector<int32_t>& values) {
  Tensor t = Tensor::zeros(shape, DType::i32);
  EXPECT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) t.data<int32_t>()[i] = values[i];
  return t;
}

bool all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(value_at(t, i))) return false;
  }
  return true;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// ================================ embedding =====================================================

TEST(Embedding, ForwardCopiesTableRows) {
  Rng rng(1);
  const Tensor table = random_normal({6, 13}, DType::f64, rng);
  const Tensor tokens = ids({7}, {3, 0, 5, 3, 1, 5, 2});
  Tensor out = Tensor::zeros({7, 13}, DType::f64);
  cpu.embedding_forward(out, tokens, table);
  for (int64_t r = 0; r < 7; ++r) {
    for (int64_t c = 0; c < 13; ++c) {
      EXPECT_EQ(value_at(out, r * 13 + c), value_at(table, tokens.data<int32_t>()[r] * 13 + c));
    }
  }
}

TEST(Embedding, GradientMatchesFiniteDifferences) {
  Rng rng(2);
  Tensor table = random_normal({5, 13}, DType::f64, rng);
  const Tensor tokens = ids({7}, {4, 1, 4, 0, 2, 4, 1});  // repeats: gradients must add up
  const Tensor r = random_normal({7, 13}, DType::f64, rng);
  Tensor dtable = zeros_like(table);
  cpu.embedding_backward(dtable, r, tokens);
  Tensor base = Tensor::zeros({7, 13}, DType::f64), out = zeros_like(base);
  cpu.embedding_forward(base, tokens, table);
  const auto loss = [&] {
    cpu.embedding_forward(out, tokens, table);
    return test::projected_change(out, base, r);
  };
  const auto result = check_gradient(table, dtable, loss);
  EXPECT_LT(result.max_error, kGradTolerance) << result.describe();
  // Row 3 of the table is never used: its gradient is exactly zero.
  for (int64_t c = 0; c < 13; ++c) EXPECT_EQ(value_at(dtable, 3 * 13 + c), 0.0);
}

TEST(Embedding, BackwardAccumulates) {
  Rng rng(3);
  const Tensor tokens = ids({7}, {2, 2, 0, 1, 2, 0, 1});
  const Tensor dout = random_normal({7, 13}, DType::f64, rng);
  Tensor once = Tensor::zeros({3, 13}, DType::f64);
  cpu.embedding_backward(once, dout, tokens);
  Tensor twice = Tensor::zeros({3, 13}, DType::f64);
  cpu.embedding_backward(twice, dout, tokens);
  cpu.embedding_backward(twice, dout, tokens);
  Tensor doubled = clone(once);
  cpu.scale(doubled, 2.0);
  EXPECT_LT(max_relative_error(twice, doubled), 1e-14);
  // And onto a non-zero gradient: result = previous content + fresh gradient.
  Tensor previous = random_normal({3, 13}, DType::f64, rng);
  Tensor accumulated = clone(previous);
  cpu.embedding_backward(accumulated, dout, tokens);
  Tensor expected = clone(previous);
  cpu.axpy(expected, 1.0, once);
  EXPECT_LT(max_relative_error(accumulated, expected), 1e-14);
}

TEST(Embedding, ParallelBackwardMatchesSerialSum) {
  // rows * dim above the OpenMP threshold, few distinct ids: many rows hit the same table row.
  Rng rng(4);
  const int64_t rows = 700, dim = 128, vocab = 7;
  const Tensor tokens = test::random_ids({rows}, vocab, rng);
  const Pair dout = random_pair({rows, dim}, rng);
  std::vector<double> expected(vocab * dim, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < dim; ++c) {
      expected[tokens.data<int32_t>()[r] * dim + c] += value_at(dout.f64, r * dim + c);
    }
  }
  Tensor expected_t = Tensor::zeros({vocab, dim}, DType::f64);
  std::copy(expected.begin(), expected.end(), expected_t.data<double>());
  for (const Tensor* d : {&dout.f64, &dout.f32}) {
    Tensor dtable = Tensor::zeros({vocab, dim}, d->dtype());
    cpu.embedding_backward(dtable, *d, tokens);
    EXPECT_LT(max_relative_error(dtable, expected_t), d->dtype() == DType::f64 ? 1e-13 : 1e-5);
  }
}

TEST(Embedding, Fp32MatchesFp64) {
  Rng rng(5);
  const Pair table = random_pair({9, 13}, rng);
  const Tensor tokens = test::random_ids({2, 5}, 9, rng);
  Tensor out32 = Tensor::zeros({2, 5, 13}, DType::f32);
  Tensor out64 = Tensor::zeros({2, 5, 13}, DType::f64);
  cpu.embedding_forward(out32, tokens, table.f32);
  cpu.embedding_forward(out64, tokens, table.f64);
  EXPECT_LT(max_relative_error(out32, out64), kFp32Tolerance);
}

TEST(Embedding, OutOfRangeIdThrowsBeforeWriting) {
  Rng rng(6);
  const Tensor table = random_normal({5, 4}, DType::f32, rng);
  for (int32_t bad : {5, -1, 1000}) {
    const Tensor tokens = ids({3}, {1, bad, 2});
    Tensor out = filled({3, 4}, DType::f32, 7.0);
    test::expect_error([&] { cpu.embedding_forward(out, tokens, table); },
                        {std::to_string(bad), "5"});
    EXPECT_TRUE(bitwise_equal(out, filled({3, 4}, DType::f32, 7.0))) << "wrote before failing";
    Tensor dtable = filled({5, 4}, DType::f32, 7.0);
    const Tensor dout = random_normal({3, 4}, DType::f32, rng);
    test::expect_error([&] { cpu.embedding_backward(dtable, dout, tokens); },
                        {std::to_string(bad), "5"});
    EXPECT_TRUE(bitwise_equal(dtable, filled({5, 4}, DType::f32, 7.0))) << "wrote before failing";
  }
}

// ================================ RMSNorm =======================================================

constexpr double kNormEps = 1e-5;

TEST(RmsNorm, ForwardMatchesDefinition) {
  Rng rng(10);
  const int64_t rows = 7, dim = 13;
  const Tensor x = random_normal({rows, dim}, DType::f64, rng);
  const Tensor w = random_normal({dim}, DType::f64, rng);
  Tensor out = zeros_like(x), rstd = Tensor::zeros({rows}, DType::f64);
  cpu.rmsnorm_forward(out, rstd, x, w, kNormEps);
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0.0;
    for (int64_t c = 0; c < dim; ++c) ms += std::pow(value_at(x, r * dim + c), 2) / dim;
    const double expected_rstd = 1.0 / std::sqrt(ms + kNormEps);
    EXPECT_NEAR(value_at(rstd, r), expected_rstd, 1e-13 * expected_rstd);
    for (int64_t c = 0; c < dim; ++c) {
      const double expected = value_at(x, r * dim + c) * expected_rstd * value_at(w, c);
      EXPECT_NEAR(value_at(out, r * dim + c), expected, 1e-13 * (1.0 + std::fabs(expected)));
    }
  }
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  Rng rng(11);
  const int64_t rows = 7, dim = 13;
  Tensor x = random_normal({2, rows, dim}, DType::f64, rng);  // 3-D: rows = 2 * 7
  Tensor w = random_normal({dim}, DType::f64, rng);
  const Tensor r = random_normal(x.shape(), DType::f64, rng);
  Tensor out = zeros_like(x), rstd = Tensor::zeros({2, rows}, DType::f64);
  cpu.rmsnorm_forward(out, rstd, x, w, kNormEps);
  Tensor dx = zeros_like(x), dw = zeros_like(w);
  cpu.rmsnorm_backward(dx, dw, r, x, w, rstd);
  const auto loss = [&] {
    Tensor o = zeros_like(x), s = Tensor::zeros({2, rows}, DType::f64);
    cpu.rmsnorm_forward(o, s, x, w, kNormEps);
    return test::projected_change(o, out, r);
  };
  const auto gx = check_gradient(x, dx, loss);
  EXPECT_LT(gx.max_error, kGradTolerance) << "dx: " << gx.describe();
  const auto gw = check_gradient(w, dw, loss);
  EXPECT_LT(gw.max_error, kGradTolerance) << "dweight: " << gw.describe();
}

TEST(RmsNorm, BackwardAccumulates) {
  Rng rng(12);
  const Tensor x = random_normal({7, 13}, DType::f64, rng);
  const Tensor w = random_normal({13}, DType::f64, rng);
  const Tensor dout = random_normal({7, 13}, DType::f64, rng);
  Tensor out = zeros_like(x), rstd = Tensor::zeros({7}, DType::f64);
  cpu.rmsnorm_forward(out, rstd, x, w, kNormEps);
  Tensor dx1 = zeros_like(x), dw1 = zeros_like(w);
  cpu.rmsnorm_backward(dx1, dw1, dout, x, w, rstd);
  Tensor dx2 = zeros_like(x), dw2 = zeros_like(w);
  cpu.rmsnorm_backward(dx2, dw2, dout, x, w, rstd);
  cpu.rmsnorm_backward(dx2, dw2, dout, x, w, rstd);
  cpu.scale(dx1, 2.0);
  cpu.scale(dw1, 2.0);
  EXPECT_LT(max_relative_error(dx2, dx1), 1e-14);
  EXPECT_LT(max_relative_error(dw2, dw1), 1e-14);
}

TEST(RmsNorm, Fp32MatchesFp64) {
  Rng rng(13);
  // 300 x 67 is above the OpenMP threshold, so the blocks' dweight partials are exercised.
  for (const Shape& shape : {Shape{7, 13}, Shape{300, 67}}) {
    const Pair x = random_pair(shape, rng), w = random_pair({shape[1]}, rng),
               dout = random_pair(shape, rng);
    Tensor out[2], rstd[2], dx[2], dw[2];
    for (int i = 0; i < 2; ++i) {
      const Tensor& xi = i ? x.f64 : x.f32;
      const Tensor& wi = i ? w.f64 : w.f32;
      const Tensor& di = i ? dout.f64 : dout.f32;
      out[i] = zeros_like(xi);
      rstd[i] = Tensor::zeros({shape[0]}, xi.dtype());
      dx[i] = zeros_like(xi);
      dw[i] = zeros_like(wi);
      cpu.rmsnorm_forward(out[i], rstd[i], xi, wi, kNormEps);
      cpu.rmsnorm_backward(dx[i], dw[i], di, xi, wi, rstd[i]);
    }
    EXPECT_LT(max_relative_error(out[0], out[1]), kFp32Tolerance);
    EXPECT_LT(max_relative_error(rstd[0], rstd[1]), kFp32Tolerance);
    EXPECT_LT(max_relative_error(dx[0], dx[1]), kFp32Tolerance);
    EXPECT_LT(max_relative_error(dw[0], dw[1]), kFp32Tolerance);
    // The parallel dweight reduction agrees with a serial double sum.
    std::vector<double> expected(shape[1], 0.0);
    for (int64_t r = 0; r < shape[0]; ++r) {
      for (int64_t c = 0; c < shape[1]; ++c) {
        expected[c] += value_at(dout.f64, r * shape[1] + c) * value_at(x.f64, r * shape[1] + c) *
                       value_at(rstd[1], r);
      }
    }
    for (int64_t c = 0; c < shape[1]; ++c) {
      EXPECT_NEAR(value_at(dw[1], c), expected[c], 1e-12 * (1.0 + std::fabs(expected[c])));
    }
  }
}

// Training's own reductions do not depend on the thread count (OpenBLAS's products do: that is
// why a run records its count, docs/training.md): RMSNorm's weight gradient and the dot
// product (gradient clipping's norm) give the same bits on 1, 2 and 3 threads.
TEST(Reductions, SameBitsOnAnyThreadCount) {
  Rng rng(29);
  const Shape shape{1000, 96};  // above both OpenMP thresholds
  const Pair x = random_pair(shape, rng), w = random_pair({shape[1]}, rng),
             dout = random_pair(shape, rng);
  Tensor dx[3], dw[3];
  double dot[3];
  for (int t = 0; t < 3; ++t) {
    test::with_threads(t + 1, [&] {
      Tensor out = zeros_like(x.f32), rstd = Tensor::zeros({shape[0]}, DType::f32);
      dx[t] = zeros_like(x.f32);
      dw[t] = zeros_like(w.f32);
      cpu.rmsnorm_forward(out, rstd, x.f32, w.f32, kNormEps);
      cpu.rmsnorm_backward(dx[t], dw[t], dout.f32, x.f32, w.f32, rstd);
      dot[t] = cpu.dot(x.f32, dout.f32);
    });
  }
  for (int t = 1; t < 3; ++t) {
    EXPECT_TRUE(bitwise_equal(dw[t], dw[0])) << t + 1 << " threads";
    EXPECT_TRUE(bitwise_equal(dx[t], dx[0])) << t + 1 << " threads";
    EXPECT_EQ(dot[t], dot[0]) << t + 1 << " threads";
  }
}

// ================================ RoPE ==========================================================

constexpr double kTheta = 10000.0;

TEST(Rope, ForwardMatchesFormula) {
  Rng rng(20);
  const int64_t B = 2, T = 5, H = 3, hd = 6, offset = 11;
  const Tensor x = random_normal({B, T, H, hd}, DType::f64, rng);
  Tensor y = clone(x);
  cpu.rope_forward(y, kTheta, offset);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t m = 0; m < hd / 2; ++m) {
          const int64_t i = ((b * T + t) * H + h) * hd + 2 * m;
          const double angle = (offset + t) * std::pow(kTheta, -2.0 * m / hd);
          const double x0 = value_at(x, i), x1 = value_at(x, i + 1);
          EXPECT_NEAR(value_at(y, i), x0 * std::cos(angle) - x1 * std::sin(angle), 1e-13);
          EXPECT_NEAR(value_at(y, i + 1), x0 * std::sin(angle) + x1 * std::cos(angle), 1e-13);
        }
      }
    }
  }
}

TEST(Rope, GradientMatchesFiniteDifferences) {
  Rng rng(21);
  Tensor x = random_normal({2, 5, 3, 6}, DType::f64, rng);
  const Tensor r = random_normal(x.shape(), DType::f64, rng);
  const int64_t offset = 4;
  Tensor dx = clone(r);
  cpu.rope_backward(dx, kTheta, offset);  // d/dx sum(rope(x) * r) = rope^T r
  Tensor base = clone(x);
  cpu.rope_forward(base, kTheta, offset);
  const auto loss = [&] {
    Tensor y = clone(x);
    cpu.rope_forward(y, kTheta, offset);
    return test::projected_change(y, base, r);
  };
  const auto result = check_gradient(x, dx, loss);
  EXPECT_LT(result.max_error, kGradTolerance) << result.describe();
}

TEST(Rope, BackwardInvertsForwardAndPreservesPairNorms) {
  Rng rng(22);
  for (DType dtype : {DType::f64, DType::f32}) {
    const Tensor x = random_normal({2, 5, 4, 8}, dtype, rng);
    Tensor y = clone(x);
    cpu.rope_forward(y, kTheta, 37);
    EXPECT_GT(max_abs_difference(x, y), 0.1) << "rotation did nothing";
    for (int64_t i = 0; i < x.numel(); i += 2) {
      const double n_in = std::hypot(value_at(x, i), value_at(x, i + 1));
      const double n_out = std::hypot(value_at(y, i), value_at(y, i + 1));
      EXPECT_NEAR(n_out, n_in, (dtype == DType::f64 ? 1e-14 : 1e-6) * (1.0 + n_in));
    }
    cpu.rope_backward(y, kTheta, 37);
    EXPECT_LT(max_abs_difference(x, y), dtype == DType::f64 ? 1e-14 : 1e-6);
  }
}

TEST(Rope, PositionOffsetEqualsLaterPositions) {
  Rng rng(23);
  const int64_t B = 2, T = 4, H = 3, hd = 6, offset = 9;
  const Tensor x = random_normal({B, T, H, hd}, DType::f64, rng);
  Tensor shifted = clone(x);
  cpu.rope_forward(shifted, kTheta, offset);
  // The same vectors placed at positions offset..offset+T-1 of a longer sequence, offset 0.
  Tensor longer = Tensor::zeros({B, offset + T, H, hd}, DType::f64);
  const int64_t row = H * hd;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < row; ++i) {
        longer.data<double>()[(b * (offset + T) + offset + t) * row + i] =
            value_at(x, (b * T + t) * row + i);
      }
    }
  }
  cpu.rope_forward(longer, kTheta, 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < row; ++i) {
        EXPECT_NEAR(value_at(shifted, (b * T + t) * row + i),
                    value_at(longer, (b * (offset + T) + offset + t) * row + i), 1e-14);
      }
    }
  }
}

TEST(Rope, Fp32MatchesFp64) {
  Rng rng(24);
  const Pair x = random_pair({2, 5, 4, 8}, rng);
  Tensor y32 = clone(x.f32), y64 = clone(x.f64);
  cpu.rope_forward(y32, kTheta, 1000);  // a large position: angles must be computed in double
  cpu.rope_forward(y64, kTheta, 1000);
  EXPECT_LT(max_relative_error(y32, y64), kFp32Tolerance);
  cpu.rope_backward(y32, kTheta, 1000);
  cpu.rope_backward(y64, kTheta, 1000);
  EXPECT_LT(max_relative_error(y32, y64), kFp32Tolerance);
}

// ================================ attention =====================================================

struct AttentionCase {
  const char* name;
  int64_t batch, q_len, kv_len, q_heads, kv_heads, head_dim;
  AttentionMask mask;
};

std::ostream& operator<<(std::ostream& os, const AttentionCase& c) { return os << c.name; }

struct AttentionInputs {
  Tensor q, k, v;
};

AttentionInputs attention_inputs(const AttentionCase& c, DType dtype, Rng& rng) {
  return {random_normal({c.batch, c.q_len, c.q_heads, c.head_dim}, dtype, rng),
          random_normal({c.batch, c.kv_len, c.kv_heads, c.head_dim}, dtype, rng),
          random_normal({c.batch, c.kv_len, c.kv_heads, c.head_dim}, dtype, rng)};
}

struct AttentionResult {
  Tensor out, lse;
};

AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, AttentionMask mask) {
  AttentionResult r{zeros_like(q), Tensor::zeros({q.dim(0), q.dim(2), q.dim(1)}, q.dtype())};
  cpu.attention_forward(r.out, r.lse, q, k, v, mask);
  return r;
}

// The mask written straight from its definition in core/backend.h.
bool visible(int64_t t, int64_t j, int64_t kv_len, AttentionMask mask) {
  return j >= 0 && j < kv_len && j <= t - mask.shift &&
         (mask.window == 0 || j >= t - mask.shift - mask.window + 1);
}

// Dense reference in double: explicit mask, softmax, weighted sum.
AttentionResult dense_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                AttentionMask mask) {
  const int64_t B = q.dim(0), Tq = q.dim(1), Hq = q.dim(2), hd = q.dim(3);
  const int64_t Tk = k.dim(1), Hkv = k.dim(2);
  AttentionResult r{Tensor::zeros(q.shape(), DType::f64), Tensor::zeros({B, Hq, Tq}, DType::f64)};
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / (Hq / Hkv);
      for (int64_t t = 0; t < Tq; ++t) {
        std::vector<double> score(Tk, -std::numeric_limits<double>::infinity());
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Tk; ++j) {
          if (!visible(t, j, Tk, mask)) continue;
          double s = 0.0;
          for (int64_t d = 0; d < hd; ++d) {
            s += value_at(q, ((b * Tq + t) * Hq + h) * hd + d) *
                 value_at(k, ((b * Tk + j) * Hkv + kvh) * hd + d);
          }
          score[j] = s / std::sqrt(static_cast<double>(hd));
          max_score = std::max(max_score, score[j]);
        }
        double* lse = r.lse.data<double>() + (b * Hq + h) * Tq + t;
        if (max_score == -std::numeric_limits<double>::infinity()) {
          *lse = max_score;  // nothing visible: out stays 0
          continue;
        }
        double total = 0.0;
        for (int64_t j = 0; j < Tk; ++j) total += std::exp(score[j] - max_score);
        *lse = max_score + std::log(total);
        for (int64_t j = 0; j < Tk; ++j) {
          const double p = std::exp(score[j] - max_score) / total;
          for (int64_t d = 0; d < hd; ++d) {
            r.out.data<double>()[((b * Tq + t) * Hq + h) * hd + d] +=
                p * value_at(v, ((b * Tk + j) * Hkv + kvh) * hd + d);
          }
        }
      }
    }
  }
  return r;
}

// max relative error of two lse tensors, where -inf must match -inf exactly.
double lse_error(const Tensor& a, const Tensor& b) {
  double worst = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = value_at(a, i), y = value_at(b, i);
    if (std::isinf(x) || std::isinf(y)) {
      if (x != y) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::fabs(x - y) / std::max(std::fabs(x) + std::fabs(y), 1e-3));
  }
  return worst;
}

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionTest, ForwardMatchesDenseReference) {
  const AttentionCase& c = GetParam();
  Rng rng(30);
  const AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const AttentionResult got = attention(in.q, in.k, in.v, c.mask);
  const AttentionResult want = dense_attention(in.q, in.k, in.v, c.mask);
  EXPECT_LT(max_relative_error(got.out, want.out), 1e-12);
  EXPECT_LT(lse_error(got.lse, want.lse), 1e-12);
  EXPECT_GT(max_abs_difference(want.out, Tensor::zeros(want.out.shape(), DType::f64)), 0.1);
}

TEST_P(AttentionTest, GradientsMatchFiniteDifferences) {
  const AttentionCase& c = GetParam();
  Rng rng(31);
  AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const Tensor r = random_normal(in.q.shape(), DType::f64, rng);
  const AttentionResult fwd = attention(in.q, in.k, in.v, c.mask);
  Tensor dq = zeros_like(in.q), dk = zeros_like(in.k), dv = zeros_like(in.v);
  cpu.attention_backward(dq, dk, dv, r, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask);
  const auto loss = [&] {
    return test::projected_change(attention(in.q, in.k, in.v, c.mask).out, fwd.out, r);
  };
  const auto gq = check_gradient(in.q, dq, loss);
  EXPECT_LT(gq.max_error, kGradTolerance) << "dq: " << gq.describe();
  const auto gk = check_gradient(in.k, dk, loss);
  EXPECT_LT(gk.max_error, kGradTolerance) << "dk: " << gk.describe();
  const auto gv = check_gradient(in.v, dv, loss);
  EXPECT_LT(gv.max_error, kGradTolerance) << "dv: " << gv.describe();
}

TEST_P(AttentionTest, Fp32MatchesFp64) {
  const AttentionCase& c = GetParam();
  Rng rng(32);
  const AttentionInputs in32 = attention_inputs(c, DType::f32, rng);
  const AttentionInputs in64{convert(in32.q, DType::f64), convert(in32.k, DType::f64),
                             convert(in32.v, DType::f64)};
  const Tensor r32 = random_normal(in32.q.shape(), DType::f32, rng);
  const Tensor r64 = convert(r32, DType::f64);
  const AttentionResult f32 = attention(in32.q, in32.k, in32.v, c.mask);
  const AttentionResult f64 = attention(in64.q, in64.k, in64.v, c.mask);
  EXPECT_LT(max_relative_error(f32.out, f64.out), kFp32Tolerance);
  EXPECT_LT(lse_error(f32.lse, f64.lse), kFp32Tolerance);
  Tensor g32[3] = {zeros_like(in32.q), zeros_like(in32.k), zeros_like(in32.v)};
  Tensor g64[3] = {zeros_like(in64.q), zeros_like(in64.k), zeros_like(in64.v)};
  cpu.attention_backward(g32[0], g32[1], g32[2], r32, f32.out, f32.lse, in32.q, in32.k, in32.v,
                         c.mask);
  cpu.attention_backward(g64[0], g64[1], g64[2], r64, f64.out, f64.lse, in64.q, in64.k, in64.v,
                         c.mask);
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(max_relative_error(g32[i], g64[i]), kFp32Tolerance) << "gradient " << i;
  }
}

TEST_P(AttentionTest, BackwardOverwritesGradients) {
  const AttentionCase& c = GetParam();
  Rng rng(33);
  const AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const Tensor dout = random_normal(in.q.shape(), DType::f64, rng);
  const AttentionResult fwd = attention(in.q, in.k, in.v, c.mask);
  Tensor dq = zeros_like(in.q), dk = zeros_like(in.k), dv = zeros_like(in.v);
  cpu.attention_backward(dq, dk, dv, dout, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask);
  // NaN garbage: any read of the old content (+=) would show up in the result.
  Tensor gq = filled(dq.shape(), DType::f64, kNaN), gk = filled(dk.shape(), DType::f64, kNaN),
         gv = filled(dv.shape(), DType::f64, kNaN);
  cpu.attention_backward(gq, gk, gv, dout, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask);
  EXPECT_TRUE(bitwise_equal(gq, dq));
  EXPECT_TRUE(bitwise_equal(gk, dk));
  EXPECT_TRUE(bitwise_equal(gv, dv));
}

INSTANTIATE_TEST_SUITE_P(
    Masks, AttentionTest,
    ::testing::Values(AttentionCase{"causal", 2, 5, 5, 4, 4, 6, {0, 0}},
                      AttentionCase{"causal_gqa_2", 2, 5, 5, 4, 2, 6, {0, 0}},
                      AttentionCase{"causal_gqa_1", 2, 5, 5, 4, 1, 6, {0, 0}},
                      AttentionCase{"sliding_window_3", 2, 7, 7, 4, 2, 6, {0, 3}},
                      AttentionCase{"cross_shift1_unbounded", 2, 5, 5, 4, 2, 6, {1, 0}},
                      AttentionCase{"cross_shift1_window1", 2, 5, 5, 4, 2, 6, {1, 1}},
                      AttentionCase{"cross_shift1_window2", 2, 6, 6, 4, 2, 6, {1, 2}},
                      AttentionCase{"short_queries_long_keys", 2, 3, 7, 4, 2, 6, {0, 0}},
                      AttentionCase{"long_queries_short_keys", 2, 7, 4, 4, 2, 6, {0, 0}},
                      AttentionCase{"cross_tq_ne_tk", 1, 6, 4, 2, 1, 4, {1, 2}}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

// The Backend contract lets attention and SwiGLU write their gradients as column ranges of one
// wider matrix (what the model's packed projections read). The CPU computes them contiguous and
// copies the rows into place: the same values, and the columns between them untouched.
TEST(RowStridedGradients, AttentionAndSwiGluWriteColumnRanges) {
  Rng rng(35);
  const AttentionCase c{"", 2, 6, 6, 4, 2, 4, {1, 3}};
  const AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const Tensor dout = random_normal(in.q.shape(), DType::f64, rng);
  const AttentionResult fwd = attention(in.q, in.k, in.v, c.mask);
  Tensor dq = zeros_like(in.q), dk = zeros_like(in.k), dv = zeros_like(in.v);
  cpu.attention_backward_rope(dq, dk, dv, dout, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask, true,
                              true, 100.0);
  const int64_t rows = c.batch * c.q_len, Q = c.q_heads * c.head_dim, KV = c.kv_heads * c.head_dim;
  const int64_t gap = 3, width = Q + 2 * KV + gap;  // a gap column range that nobody writes
  Tensor packed = Tensor::zeros({rows, width}, DType::f64);
  for (int64_t i = 0; i < packed.numel(); ++i) packed.data<double>()[i] = 7.0;
  auto heads = [&](int64_t start, const Tensor& like) {
    return packed.slice(1, start, like.dim(2) * like.dim(3))
        .unflatten(0, {like.dim(0), like.dim(1)})
        .unflatten(2, {like.dim(2), like.dim(3)});
  };
  Tensor sq = heads(0, in.q), sk = heads(Q, in.k), sv = heads(Q + KV, in.v);
  EXPECT_EQ(sq.row_stride(2), width);
  cpu.attention_backward_rope(sq, sk, sv, dout, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask, true,
                              true, 100.0);
  EXPECT_EQ(max_abs_difference(columns(packed, 0, Q), dq.view({rows, Q})), 0.0);
  EXPECT_EQ(max_abs_difference(columns(packed, Q, KV), dk.view({rows, KV})), 0.0);
  EXPECT_EQ(max_abs_difference(columns(packed, Q + KV, KV), dv.view({rows, KV})), 0.0);
  const Tensor untouched = columns(packed, Q + 2 * KV, gap);
  for (int64_t i = 0; i < untouched.numel(); ++i) ASSERT_EQ(untouched.data<double>()[i], 7.0);

  const int64_t F = 5;
  const Tensor g = random_normal({rows, F}, DType::f64, rng), u = random_normal({rows, F}, DType::f64, rng);
  const Tensor dy = random_normal({rows, F}, DType::f64, rng);
  Tensor dg = Tensor::zeros({rows, F}, DType::f64), du = Tensor::zeros({rows, F}, DType::f64);
  cpu.swiglu_backward(dg, du, dy, g, u);
  Tensor gate_up = Tensor::zeros({rows, 2 * F}, DType::f64);
  Tensor sg = gate_up.slice(1, 0, F), su = gate_up.slice(1, F, F);
  cpu.swiglu_backward(sg, su, dy, g, u);
  EXPECT_EQ(max_abs_difference(columns(gate_up, 0, F), dg), 0.0);
  EXPECT_EQ(max_abs_difference(columns(gate_up, F, F), du), 0.0);
}

TEST(TensorLayout, UnflattenAndRowStride) {
  const Tensor m = Tensor::zeros({6, 10});
  EXPECT_EQ(m.row_stride(1), 10);
  EXPECT_EQ(m.row_stride(2), 60);  // the whole tensor is one contiguous row
  const Tensor cols = m.slice(1, 2, 4);
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.row_stride(1), 10);
  EXPECT_EQ(cols.row_stride(2), -1);  // its rows are not one block
  const Tensor heads = cols.unflatten(0, {2, 3}).unflatten(2, {2, 2});
  EXPECT_EQ(heads.shape(), (Shape{2, 3, 2, 2}));
  EXPECT_EQ(heads.strides(), (Shape{30, 10, 2, 1}));
  EXPECT_EQ(heads.row_stride(2), 10);
  EXPECT_EQ(m.slice(0, 0, 3).row_stride(1), 10);  // a row range is contiguous
  EXPECT_EQ(m.view({10, 6}).slice(1, 0, 4).slice(0, 0, 5).row_stride(1), 6);
  // Every other row (the size-1 dimension does not step): rows 20 apart.
  const Tensor strided_outer = m.unflatten(0, {3, 2}).slice(1, 0, 1).slice(2, 0, 4);
  EXPECT_EQ(strided_outer.row_stride(1), 20);
  EXPECT_EQ(m.unflatten(0, {3, 2}).slice(0, 0, 2).slice(1, 0, 1).row_stride(1), 20);
  const Tensor gapped = Tensor::zeros({4, 3, 10}).slice(1, 0, 2).slice(2, 0, 4);
  EXPECT_EQ(gapped.row_stride(1), -1);  // rows 10 apart within a block, 30 between blocks
  EXPECT_THROW(m.unflatten(1, {3, 4}), Error);
}

TEST(Attention, QueryThatSeesNoKeyOutputsZero) {
  Rng rng(34);
  const AttentionCase c{"", 2, 5, 5, 4, 2, 6, {1, 0}};
  for (DType dtype : {DType::f64, DType::f32}) {
    const AttentionInputs in = attention_inputs(c, dtype, rng);
    const AttentionResult fwd = attention(in.q, in.k, in.v, c.mask);
    const int64_t row = c.q_heads * c.head_dim;
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t i = 0; i < row; ++i) {
        EXPECT_EQ(value_at(fwd.out, b * c.q_len * row + i), 0.0);  // query 0, every head
      }
      for (int64_t h = 0; h < c.q_heads; ++h) {
        const double lse = value_at(fwd.lse, (b * c.q_heads + h) * c.q_len);
        EXPECT_TRUE(std::isinf(lse) && lse < 0) << "lse of query 0 is " << lse;
        EXPECT_TRUE(std::isfinite(value_at(fwd.lse, (b * c.q_heads + h) * c.q_len + 1)));
      }
    }
    const Tensor dout = random_normal(in.q.shape(), dtype, rng);
    Tensor dq = zeros_like(in.q), dk = zeros_like(in.k), dv = zeros_like(in.v);
    cpu.attention_backward(dq, dk, dv, dout, fwd.out, fwd.lse, in.q, in.k, in.v, c.mask);
    EXPECT_TRUE(all_finite(dq) && all_finite(dk) && all_finite(dv));
    const int64_t kv_row = c.kv_heads * c.head_dim;
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t i = 0; i < row; ++i) EXPECT_EQ(value_at(dq, b * c.q_len * row + i), 0.0);
      // The last key is seen by no query (t - 1 < Tk - 1): no gradient reaches it.
      for (int64_t i = 0; i < kv_row; ++i) {
        EXPECT_EQ(value_at(dk, (b * c.kv_len + c.kv_len - 1) * kv_row + i), 0.0);
        EXPECT_EQ(value_at(dv, (b * c.kv_len + c.kv_len - 1) * kv_row + i), 0.0);
      }
    }
  }
}

TEST(Attention, KeysOutsideTheWindowDoNotMatter) {
  Rng rng(35);
  const AttentionCase c{"", 2, 7, 7, 4, 2, 6, {1, 2}};
  const AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const AttentionResult base = attention(in.q, in.k, in.v, c.mask);
  const int64_t changed_key = 2, kv_row = c.kv_heads * c.head_dim, row = c.q_heads * c.head_dim;
  Tensor k2 = clone(in.k), v2 = clone(in.v);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < kv_row; ++i) {
      k2.data<double>()[(b * c.kv_len + changed_key) * kv_row + i] += 1.5;
      v2.data<double>()[(b * c.kv_len + changed_key) * kv_row + i] -= 2.0;
    }
  }
  const AttentionResult moved = attention(in.q, k2, v2, c.mask);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < c.q_len; ++t) {
      // Key 2 is visible exactly to queries t with t - 2 <= 2 <= t - 1, i.e. t = 3 and 4.
      const bool sees = visible(t, changed_key, c.kv_len, c.mask);
      EXPECT_EQ(sees, t == 3 || t == 4);
      double diff = 0.0;
      for (int64_t i = 0; i < row; ++i) {
        const int64_t at = (b * c.q_len + t) * row + i;
        diff = std::max(diff, std::fabs(value_at(base.out, at) - value_at(moved.out, at)));
      }
      if (sees) {
        EXPECT_GT(diff, 1e-3) << "query " << t;
      } else {
        EXPECT_EQ(diff, 0.0) << "query " << t << " changed although key " << changed_key
                             << " is outside its window";
      }
    }
  }
}

TEST(Attention, LargeParallelProblemMatchesDenseReference) {
  // More (batch, head) tasks than threads, long rows: exercises the OpenMP split of both passes.
  Rng rng(36);
  const AttentionCase c{"", 3, 33, 33, 8, 2, 16, {1, 9}};
  AttentionInputs in = attention_inputs(c, DType::f64, rng);
  const AttentionResult got = attention(in.q, in.k, in.v, c.mask);
  const AttentionResult want = dense_attention(in.q, in.k, in.v, c.mask);
  EXPECT_LT(max_relative_error(got.out, want.out), 1e-12);
  EXPECT_LT(lse_error(got.lse, want.lse), 1e-12);
  const Tensor r = random_normal(in.q.shape(), DType::f64, rng);
  Tensor dq = zeros_like(in.q), dk = zeros_like(in.k), dv = zeros_like(in.v);
  cpu.attention_backward(dq, dk, dv, r, got.out, got.lse, in.q, in.k, in.v, c.mask);
  const auto loss = [&] {
    return test::projected_change(attention(in.q, in.k, in.v, c.mask).out, got.out, r);
  };
  test::GradCheckOptions subset;
  subset.max_elements = 60;
  for (auto [x, g, name] : {std::tuple{&in.q, &dq, "dq"}, std::tuple{&in.k, &dk, "dk"},
                            std::tuple{&in.v, &dv, "dv"}}) {
    const auto result = check_gradient(*x, *g, loss, subset);
    EXPECT_LT(result.max_error, kGradTolerance) << name << ": " << result.describe();
  }
}

// ================================ SwiGLU ========================================================

TEST(SwiGlu, ForwardMatchesDefinition) {
  Rng rng(40);
  const Tensor g = random_normal({7, 13}, DType::f64, rng, 2.0);
  const Tensor u = random_normal({7, 13}, DType::f64, rng);
  Tensor out = zeros_like(g);
  cpu.swiglu_forward(out, g, u);
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double gi = value_at(g, i);
    const double expected = gi / (1.0 + std::exp(-gi)) * value_at(u, i);
    EXPECT_NEAR(value_at(out, i), expected, 1e-14 * (1.0 + std::fabs(expected)));
  }
}

TEST(SwiGlu, GradientsMatchFiniteDifferences) {
  Rng rng(41);
  Tensor g = random_normal({7, 13}, DType::f64, rng, 2.0);
  Tensor u = random_normal({7, 13}, DType::f64, rng);
  const Tensor r = random_normal({7, 13}, DType::f64, rng);
  Tensor dg = zeros_like(g), du = zeros_like(u);
  cpu.swiglu_backward(dg, du, r, g, u);
  Tensor base = zeros_like(g);
  cpu.swiglu_forward(base, g, u);
  const auto loss = [&] {
    Tensor out = zeros_like(g);
    cpu.swiglu_forward(out, g, u);
    return test::projected_change(out, base, r);
  };
  const auto rg = check_gradient(g, dg, loss);
  EXPECT_LT(rg.max_error, kGradTolerance) << "dgate: " << rg.describe();
  const auto ru = check_gradient(u, du, loss);
  EXPECT_LT(ru.max_error, kGradTolerance) << "dup: " << ru.describe();
}

TEST(SwiGlu, BackwardOverwrites) {
  Rng rng(42);
  const Tensor g = random_normal({7, 13}, DType::f64, rng);
  const Tensor u = random_normal({7, 13}, DType::f64, rng);
  const Tensor dout = random_normal({7, 13}, DType::f64, rng);
  Tensor dg = zeros_like(g), du = zeros_like(u);
  cpu.swiglu_backward(dg, du, dout, g, u);
  Tensor dg2 = filled(g.shape(), DType::f64, kNaN), du2 = filled(g.shape(), DType::f64, 123.0);
  cpu.swiglu_backward(dg2, du2, dout, g, u);
  EXPECT_TRUE(bitwise_equal(dg, dg2));
  EXPECT_TRUE(bitwise_equal(du, du2));
}

TEST(SwiGlu, LargeGatesStayFinite) {
  for (DType dtype : {DType::f32, DType::f64}) {
    const std::vector<double> gates = {-1000.0, -100.0, -30.0, 30.0, 100.0, 1000.0};
    Tensor g = Tensor::zeros({6}, dtype), u = filled({6}, dtype, 0.5), dout = filled({6}, dtype, 1.0);
    for (int i = 0; i < 6; ++i) {
      if (dtype == DType::f64) g.data<double>()[i] = gates[i];
      else g.data<float>()[i] = static_cast<float>(gates[i]);
    }
    Tensor out = zeros_like(g), dg = zeros_like(g), du = zeros_like(g);
    cpu.swiglu_forward(out, g, u);
    cpu.swiglu_backward(dg, du, dout, g, u);
    EXPECT_TRUE(all_finite(out) && all_finite(dg) && all_finite(du));
    EXPECT_EQ(value_at(out, 0), 0.0);     // silu(-1000) underflows to (-)0
    EXPECT_EQ(value_at(out, 5), 500.0);   // silu(1000) * 0.5
    EXPECT_NEAR(value_at(dg, 5), 0.5, 1e-6);  // d silu / dg -> 1 for large g
    EXPECT_NEAR(value_at(dg, 0), 0.0, 1e-30);
  }
}

TEST(SwiGlu, Fp32MatchesFp64) {
  Rng rng(43);
  const Pair g = random_pair({300, 300}, rng, 3.0), u = random_pair({300, 300}, rng),
             dout = random_pair({300, 300}, rng);  // above the OpenMP threshold
  Tensor out32 = zeros_like(g.f32), out64 = zeros_like(g.f64);
  cpu.swiglu_forward(out32, g.f32, u.f32);
  cpu.swiglu_forward(out64, g.f64, u.f64);
  EXPECT_LT(max_relative_error(out32, out64), kFp32Tolerance);
  Tensor dg32 = zeros_like(g.f32), du32 = zeros_like(g.f32);
  Tensor dg64 = zeros_like(g.f64), du64 = zeros_like(g.f64);
  cpu.swiglu_backward(dg32, du32, dout.f32, g.f32, u.f32);
  cpu.swiglu_backward(dg64, du64, dout.f64, g.f64, u.f64);
  EXPECT_LT(max_relative_error(dg32, dg64), kFp32Tolerance);
  EXPECT_LT(max_relative_error(du32, du64), kFp32Tolerance);
}

// ================================ cross entropy =================================================

TEST(CrossEntropy, ForwardMatchesDefinitionAndSkipsIgnoredRows) {
  Rng rng(50);
  const int64_t rows = 7, vocab = 13;
  const Tensor logits = random_normal({rows, vocab}, DType::f64, rng, 3.0);
  const Tensor targets = ids({rows}, {3, -1, 12, 0, -1, 7, 3});
  Tensor losses = filled({rows}, DType::f64, kNaN);
  EXPECT_EQ(cpu.cross_entropy_forward(losses, logits, targets), 5);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t target = targets.data<int32_t>()[r];
    if (target < 0) {
      EXPECT_EQ(value_at(losses, r), 0.0);
      continue;
    }
    double total = 0.0;
    for (int64_t c = 0; c < vocab; ++c) total += std::exp(value_at(logits, r * vocab + c));
    const double expected = -std::log(std::exp(value_at(logits, r * vocab + target)) / total);
    EXPECT_NEAR(value_at(losses, r), expected, 1e-13 * (1.0 + expected));
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  Rng rng(51);
  const int64_t rows = 7, vocab = 13;
  const double scale = 0.37;
  Tensor logits = random_normal({rows, vocab}, DType::f64, rng, 2.0);
  const Tensor targets = ids({rows}, {5, 0, -1, 12, 5, 9, 1});
  Tensor dlogits = zeros_like(logits);
  cpu.cross_entropy_backward(dlogits, logits, targets, scale);
  // L = scale * sum(losses): the projection weights are all equal to `scale`.
  const Tensor weights = filled({rows}, DType::f64, scale);
  Tensor base = Tensor::zeros({rows}, DType::f64);
  cpu.cross_entropy_forward(base, logits, targets);
  const auto loss = [&] {
    Tensor losses = Tensor::zeros({rows}, DType::f64);
    cpu.cross_entropy_forward(losses, logits, targets);
    return test::projected_change(losses, base, weights);
  };
  const auto result = check_gradient(logits, dlogits, loss);
  EXPECT_LT(result.max_error, kGradTolerance) << result.describe();
  for (int64_t c = 0; c < vocab; ++c) EXPECT_EQ(value_at(dlogits, 2 * vocab + c), 0.0);
}

TEST(CrossEntropy, BackwardOverwrites) {
  Rng rng(52);
  const Tensor logits = random_normal({7, 13}, DType::f64, rng);
  const Tensor targets = ids({7}, {1, -1, 2, 3, 4, -1, 6});
  Tensor fresh = zeros_like(logits);
  cpu.cross_entropy_backward(fresh, logits, targets, 0.5);
  Tensor garbage = filled(logits.shape(), DType::f64, kNaN);
  cpu.cross_entropy_backward(garbage, logits, targets, 0.5);
  EXPECT_TRUE(bitwise_equal(fresh, garbage));
}

TEST(CrossEntropy, OutOfRangeTargetThrows) {
  Rng rng(53);
  const Tensor logits = random_normal({3, 13}, DType::f32, rng);
  for (int32_t bad : {13, -2, 999}) {
    const Tensor targets = ids({3}, {0, bad, 1});
    Tensor losses = Tensor::zeros({3}, DType::f32);
    test::expect_error([&] { cpu.cross_entropy_forward(losses, logits, targets); },
                        {std::to_string(bad), "13"});
    Tensor dlogits = zeros_like(logits);
    test::expect_error([&] { cpu.cross_entropy_backward(dlogits, logits, targets, 1.0); },
                        {std::to_string(bad), "13"});
  }
}

TEST(CrossEntropy, LargeLogitsAreStable) {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tensor logits = Tensor::zeros({2, 3}, dtype);
    const double values[6] = {1000.0, 0.0, -1000.0, 500.0, 501.0, 499.0};
    for (int i = 0; i < 6; ++i) {
      if (dtype == DType::f64) logits.data<double>()[i] = values[i];
      else logits.data<float>()[i] = static_cast<float>(values[i]);
    }
    const Tensor targets = ids({2}, {2, 1});
    Tensor losses = Tensor::zeros({2}, dtype), dlogits = zeros_like(logits);
    cpu.cross_entropy_forward(losses, logits, targets);
    cpu.cross_entropy_backward(dlogits, logits, targets, 1.0);
    EXPECT_NEAR(value_at(losses, 0), 2000.0, 1e-9);
    const double lse = 501.0 + std::log(1.0 + std::exp(-1.0) + std::exp(-2.0));
    EXPECT_NEAR(value_at(losses, 1), lse - 501.0, 1e-6);
    EXPECT_TRUE(all_finite(dlogits));
    EXPECT_NEAR(value_at(dlogits, 0), 1.0, 1e-12);
    EXPECT_NEAR(value_at(dlogits, 2), -1.0, 1e-12);
  }
}

TEST(CrossEntropy, Fp32MatchesFp64) {
  Rng rng(54);
  const int64_t rows = 40, vocab = 500;  // above the OpenMP threshold
  const Pair logits = random_pair({rows, vocab}, rng, 3.0);
  Tensor targets = test::random_ids({rows}, vocab, rng);
  targets.data<int32_t>()[7] = -1;
  Tensor l32 = Tensor::zeros({rows}, DType::f32), l64 = Tensor::zeros({rows}, DType::f64);
  EXPECT_EQ(cpu.cross_entropy_forward(l32, logits.f32, targets), rows - 1);
  EXPECT_EQ(cpu.cross_entropy_forward(l64, logits.f64, targets), rows - 1);
  EXPECT_LT(max_relative_error(l32, l64), kFp32Tolerance);
  Tensor d32 = zeros_like(logits.f32), d64 = zeros_like(logits.f64);
  cpu.cross_entropy_backward(d32, logits.f32, targets, 1.0 / (rows - 1));
  cpu.cross_entropy_backward(d64, logits.f64, targets, 1.0 / (rows - 1));
  EXPECT_LT(max_relative_error(d32, d64), kFp32Tolerance);
}

}  // namespace
}  // namespace sf
