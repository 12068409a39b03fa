// cross_entropy.cpp — per-row softmax cross-entropy of logits against integer targets.
//
// loss = logsumexp(logits) - logits[target], computed with max subtraction in double.
// Target -1 marks an ignored row (padding): loss 0, gradient 0, not counted.
#include <cmath>

#include "core/error.h"
#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

void check_targets(const int32_t* targets, int64_t rows, int64_t vocab, const char* op) {
  for (int64_t r = 0; r < rows; ++r) {
    SF_CHECK(targets[r] >= -1 && targets[r] < vocab,
             "{}: target id {} at row {} is outside the vocabulary [0, {}) (or -1 = ignored)", op,
             targets[r], r, vocab);
  }
}

// log(sum(exp(row))), stable: the largest term is factored out.
template <class T>
double row_logsumexp(const T* row, int64_t vocab) {
  double max_logit = -INFINITY;
  for (int64_t c = 0; c < vocab; ++c) max_logit = std::fmax(max_logit, static_cast<double>(row[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < vocab; ++c) sum += std::exp(static_cast<double>(row[c]) - max_logit);
  return max_logit + std::log(sum);
}

}  // namespace

template <class T>
int64_t cross_entropy_forward(T* losses, const T* logits, const int32_t* targets, int64_t rows,
                              int64_t vocab) {
  check_targets(targets, rows, vocab, "cross_entropy_forward");
  int64_t counted = 0;
#pragma omp parallel for reduction(+ : counted) if (rows * vocab > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) {
      losses[r] = T(0);
      continue;
    }
    const T* row = logits + r * vocab;
    losses[r] = static_cast<T>(row_logsumexp(row, vocab) - static_cast<double>(row[targets[r]]));
    ++counted;
  }
  return counted;
}

template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, int64_t rows,
                            int64_t vocab, double scale) {
  check_targets(targets, rows, vocab, "cross_entropy_backward");
#pragma omp parallel for if (rows * vocab > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    T* grad = dlogits + r * vocab;
    if (targets[r] < 0) {
      for (int64_t c = 0; c < vocab; ++c) grad[c] = T(0);
      continue;
    }
    const T* row = logits + r * vocab;
    const double lse = row_logsumexp(row, vocab);
    for (int64_t c = 0; c < vocab; ++c) {
      const double p = std::exp(static_cast<double>(row[c]) - lse);
      grad[c] = static_cast<T>(scale * (p - (c == targets[r] ? 1.0 : 0.0)));
    }
  }
}

template int64_t cross_entropy_forward<float>(float*, const float*, const int32_t*, int64_t,
                                              int64_t);
template int64_t cross_entropy_forward<double>(double*, const double*, const int32_t*, int64_t,
                                               int64_t);
template void cross_entropy_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t,
                                            double);
template void cross_entropy_backward<double>(double*, const double*, const int32_t*, int64_t,
                                             int64_t, double);

}  // namespace sf::cpu
