// attention.cpp — scaled dot-product attention with grouped query heads and shift/window masks.
//
// Layouts: q, out [B, Tq, Hq, hd]; k, v [B, Tk, Hkv, hd]; lse [B, Hq, Tq]. Query head h reads kv
// head h / (Hq / Hkv). Query t sees key j iff max(0, t - shift - window + 1 if window > 0)
// <= j <= min(t - shift, Tk - 1) (see AttentionMask in core/backend.h). A query that sees no key
// outputs exactly 0, has lse = -inf, and contributes nothing to the gradients.
//
// The reference is the plain O(Tq * Tk) algorithm per head, with every dot product, softmax and
// weighted sum accumulated in double. Backward recomputes the probabilities from lse:
//   p = exp(s - lse) (renormalised to sum 1),
//   D_t = dout_t . out_t (formed here as sum_j p_j dout_t . v_j),  ds = p * (dout_t . v_j - D_t),
//   dq_t = scale * sum_j ds k_j,  dk_j = scale * sum_t ds q_t,  dv_j = sum_t p dout_t.
// Forming D_t from p in double means this backward does not read `out`; the parameter is part of
// the Backend contract (a fused GPU kernel uses dout . out).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

// The visible key range [first, last] of query t (the mask's range, clipped to the keys
// there are); empty when last < first.
struct VisibleKeys {
  int64_t first, last;
  bool empty() const { return last < first; }
};

VisibleKeys visible_keys(int64_t t, int64_t kv_len, AttentionMask mask) {
  const KeyRange range = mask.keys_visible(t);
  return {range.begin, std::min(range.end, kv_len) - 1};
}

double dot(const double* a, const double* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Copies the [Tk, hd] slice of kv head `kv_head` of batch `b` out of a [B, Tk, Hkv, hd] tensor
// into a dense double matrix, so that inner loops stream through contiguous memory.
template <class T>
void gather_head(std::vector<double>& dst, const T* src, const AttentionShape& s, int64_t b,
                 int64_t kv_head) {
  dst.resize(static_cast<size_t>(s.kv_len * s.head_dim));
  for (int64_t j = 0; j < s.kv_len; ++j) {
    const T* row = src + ((b * s.kv_len + j) * s.kv_heads + kv_head) * s.head_dim;
    for (int64_t d = 0; d < s.head_dim; ++d) dst[j * s.head_dim + d] = row[d];
  }
}

void check_mask(AttentionMask mask) {
  SF_CHECK(mask.window >= 0, "attention: mask window must be >= 0 (0 = unbounded), got {}",
           mask.window);
}

// Multiply-adds of one attention call (upper bound, ignoring the mask). Below kParallelWork a
// parallel region costs more than it saves: thread wake-up and the barrier dominate.
int64_t attention_work(const AttentionShape& s) {
  return s.batch * s.q_heads * s.q_len * s.kv_len * s.head_dim;
}
constexpr int64_t kParallelWork = 1 << 16;

}  // namespace

template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, AttentionShape s,
                       AttentionMask mask) {
  check_mask(mask);
  const int64_t hd = s.head_dim, group = s.q_heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
#pragma omp parallel if (attention_work(s) > kParallelWork)
  {
    std::vector<double> kh, vh, qrow(hd), acc(hd), scores(static_cast<size_t>(s.kv_len));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        gather_head(kh, k, s, b, h / group);
        gather_head(vh, v, s, b, h / group);
        for (int64_t t = 0; t < s.q_len; ++t) {
          const int64_t qo = ((b * s.q_len + t) * s.q_heads + h) * hd;
          T* lse_t = lse + (b * s.q_heads + h) * s.q_len + t;
          const VisibleKeys keys = visible_keys(t, s.kv_len, mask);
          if (keys.empty()) {
            for (int64_t d = 0; d < hd; ++d) out[qo + d] = T(0);
            *lse_t = -std::numeric_limits<T>::infinity();
            continue;
          }
          for (int64_t d = 0; d < hd; ++d) qrow[d] = q[qo + d];
          double max_score = -std::numeric_limits<double>::infinity();
          for (int64_t j = keys.first; j <= keys.last; ++j) {
            scores[j] = scale * dot(qrow.data(), kh.data() + j * hd, hd);
            max_score = std::max(max_score, scores[j]);
          }
          double sum = 0.0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t j = keys.first; j <= keys.last; ++j) {
            const double w = std::exp(scores[j] - max_score);
            sum += w;
            const double* vj = vh.data() + j * hd;
            for (int64_t d = 0; d < hd; ++d) acc[d] += w * vj[d];
          }
          for (int64_t d = 0; d < hd; ++d) out[qo + d] = static_cast<T>(acc[d] / sum);
          *lse_t = static_cast<T>(max_score + std::log(sum));
        }
      }
    }
  }
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q,
                        const T* k, const T* v, AttentionShape s, AttentionMask mask) {
  check_mask(mask);
  const int64_t hd = s.head_dim, group = s.q_heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // One task per (batch, kv head): it owns dk and dv of that head and dq of the group's query
  // heads, so no element is written by two threads.
#pragma omp parallel if (attention_work(s) > kParallelWork)
  {
    std::vector<double> kh, vh, dkh, dvh, qrow(hd), dorow(hd), dqrow(hd);
    std::vector<double> prob(static_cast<size_t>(s.kv_len)), dprob(static_cast<size_t>(s.kv_len));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh) {
        gather_head(kh, k, s, b, kvh);
        gather_head(vh, v, s, b, kvh);
        dkh.assign(static_cast<size_t>(s.kv_len * hd), 0.0);
        dvh.assign(static_cast<size_t>(s.kv_len * hd), 0.0);
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          for (int64_t t = 0; t < s.q_len; ++t) {
            const int64_t qo = ((b * s.q_len + t) * s.q_heads + h) * hd;
            const VisibleKeys keys = visible_keys(t, s.kv_len, mask);
            if (keys.empty()) {  // nothing visible: out was a constant 0, its gradient is 0
              for (int64_t d = 0; d < hd; ++d) dq[qo + d] = T(0);
              continue;
            }
            const double lse_t = lse[(b * s.q_heads + h) * s.q_len + t];
            for (int64_t d = 0; d < hd; ++d) {
              qrow[d] = q[qo + d];
              dorow[d] = dout[qo + d];
            }
            // First pass: p_j, dp_j = dout_t . v_j and D_t = sum_j p_j dp_j. exp(s - lse) sums
            // to 1 only up to the rounding of the stored lse (fp32: ~1e-7 * |lse|), so p is
            // renormalised in double; D_t equals dout_t . out_t but is formed from the same p
            // rather than from the rounded out. Both keep ds = p * (dp - D) accurate where dp - D
            // cancels (a query seeing one key has ds = 0 exactly).
            double total = 0.0;
            for (int64_t j = keys.first; j <= keys.last; ++j) {
              prob[j] = std::exp(scale * dot(qrow.data(), kh.data() + j * hd, hd) - lse_t);
              total += prob[j];
            }
            double delta = 0.0;
            for (int64_t j = keys.first; j <= keys.last; ++j) {
              prob[j] /= total;
              dprob[j] = dot(dorow.data(), vh.data() + j * hd, hd);
              delta += prob[j] * dprob[j];
            }
            std::fill(dqrow.begin(), dqrow.end(), 0.0);
            for (int64_t j = keys.first; j <= keys.last; ++j) {
              const double* kj = kh.data() + j * hd;
              const double p = prob[j];
              const double ds = p * (dprob[j] - delta);
              double* dkj = dkh.data() + j * hd;
              double* dvj = dvh.data() + j * hd;
              for (int64_t d = 0; d < hd; ++d) {
                dqrow[d] += ds * kj[d];
                dkj[d] += ds * qrow[d];
                dvj[d] += p * dorow[d];
              }
            }
            for (int64_t d = 0; d < hd; ++d) dq[qo + d] = static_cast<T>(scale * dqrow[d]);
          }
        }
        for (int64_t j = 0; j < s.kv_len; ++j) {
          const int64_t ko = ((b * s.kv_len + j) * s.kv_heads + kvh) * hd;
          for (int64_t d = 0; d < hd; ++d) {
            dk[ko + d] = static_cast<T>(scale * dkh[j * hd + d]);
            dv[ko + d] = static_cast<T>(dvh[j * hd + d]);
          }
        }
      }
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       AttentionShape, AttentionMask);
template void attention_forward<double>(double*, double*, const double*, const double*,
                                        const double*, AttentionShape, AttentionMask);
template void attention_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        AttentionShape, AttentionMask);
template void attention_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, AttentionShape, AttentionMask);

}  // namespace sf::cpu
