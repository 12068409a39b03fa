// data_parallel.cpp — micro-batch ownership, gradient all-reduce and stop agreement for
// data-parallel training.
#include "train/data_parallel.h"

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"

namespace sf {

MicroBatchSchedule::MicroBatchSchedule(int rank, int world_size, int64_t grad_accum)
    : rank_(rank), world_size_(world_size), per_update_(grad_accum * world_size) {
  SF_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
           "micro-batch schedule: rank {} is not in a world of {}", rank, world_size);
  SF_CHECK(grad_accum >= 1, "--grad-accum must be >= 1, got {}", grad_accum);
}

void all_reduce_gradients(Collective& collective, ParameterSet& params) {
  if (collective.world_size() == 1) return;
  std::vector<Tensor> grads = params.gradients();  // shares the buffers: in place
  collective.all_reduce_sum(grads);
}

namespace {

// Throws on this rank when `value` differs from the average over the ranks by more than the
// rounding of a GPU reduction (whose summation order may vary): ranks that really differ
// (another seed, another checkpoint) differ by far more.
void check_same(Collective& collective, double value, const std::string& what,
                const std::string& hint) {
  const double mean = collective.all_reduce_sum(value) / collective.world_size();
  SF_CHECK(std::abs(value - mean) <= 1e-6 * std::abs(mean),
           "data parallel: rank {} of {} starts from a different {} than the others ({} here, {} "
           "on average over the ranks); {}",
           collective.rank(), collective.world_size(), what, value, mean, hint);
}

}  // namespace

void check_ranks_agree(Collective& collective, Backend& backend, const ParameterSet& params,
                       int64_t step) {
  if (collective.world_size() == 1) return;
  const std::string hint =
      "every rank must resume from the same run folder (on several hosts: a shared file system) "
      "with the same config";
  check_same(collective, static_cast<double>(step), "step", hint);
  double checksum = 0.0;
  for (const Parameter& p : params.all()) checksum += backend.sum_squares(p.value);
  check_same(collective, checksum, "set of weights (sum of squares)", hint);
}

bool any_rank(Collective& collective, bool flag) {
  if (collective.world_size() == 1) return flag;
  return collective.all_reduce_sum(flag ? 1.0 : 0.0) > 0.0;
}

}  // namespace sf
