// embedding.cpp — token embedding lookup (forward) and its scatter-add gradient (backward).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

// Validates every id before any write, so a bad id leaves the outputs untouched.
void check_token_ids(const int32_t* tokens, int64_t rows, int64_t vocab, const char* op) {
  for (int64_t r = 0; r < rows; ++r) {
    SF_CHECK(tokens[r] >= 0 && tokens[r] < vocab,
             "{}: token id {} at row {} is outside the vocabulary [0, {})", op, tokens[r], r,
             vocab);
  }
}

}  // namespace

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t rows, int64_t vocab,
                       int64_t dim) {
  check_token_ids(tokens, rows, vocab, "embedding_forward");
#pragma omp parallel for if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * dim, table + static_cast<int64_t>(tokens[r]) * dim, sizeof(T) * dim);
  }
}

template <class T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t rows,
                        int64_t vocab, int64_t dim) {
  check_token_ids(tokens, rows, vocab, "embedding_backward");
  // Several rows may carry the same token. Rows are grouped by token (a stable sort keeps row
  // order inside a group), each group is summed in double and added to its table row once.
  // Threads take whole groups, so no two threads write the same table row, and the summation
  // order does not depend on the thread count: the result is deterministic.
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [tokens](int64_t a, int64_t b) { return tokens[a] < tokens[b]; });
  std::vector<int64_t> group_start;  // positions in `order` where a new token begins
  for (int64_t i = 0; i < rows; ++i) {
    if (i == 0 || tokens[order[i]] != tokens[order[i - 1]]) group_start.push_back(i);
  }
  group_start.push_back(rows);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;
#pragma omp parallel if (rows * dim > 65536)
  {
    std::vector<double> sum(static_cast<size_t>(dim));
#pragma omp for schedule(dynamic, 16)
    for (int64_t g = 0; g < groups; ++g) {
      std::fill(sum.begin(), sum.end(), 0.0);
      for (int64_t i = group_start[g]; i < group_start[g + 1]; ++i) {
        const T* row = dout + order[i] * dim;
        for (int64_t c = 0; c < dim; ++c) sum[c] += row[c];
      }
      T* target = dtable + static_cast<int64_t>(tokens[order[group_start[g]]]) * dim;
      for (int64_t c = 0; c < dim; ++c) target[c] = static_cast<T>(target[c] + sum[c]);
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t,
                                       int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t,
                                         int64_t);

}  // namespace sf::cpu
