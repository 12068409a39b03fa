// data_parallel.h — what training does differently with several ranks (docs/data-parallel.md):
// which micro-batches of the one data stream are this rank's, the gradient sum over ranks, and
// agreeing on a stop.
//
// One update reads world_size × grad_accum consecutive micro-batches from the data stream on
// every rank; rank r trains on those whose index i (0-based within the update) has
// i % world_size == r. The union over ranks is exactly the micro-batches one process with
// --grad-accum world_size × grad_accum would train on, in the same order, so the two runs agree
// up to floating-point reduction order. Every rank's loader stays at the same position, which
// makes checkpoints rank-independent.
#pragma once

#include <cstdint>

#include "distributed/collective.h"
#include "model/parameters.h"

namespace sf {

class MicroBatchSchedule {
 public:
  MicroBatchSchedule(int rank, int world_size, int64_t grad_accum);

  // Micro-batches every rank reads per update (its own and the others').
  int64_t per_update() const { return per_update_; }
  // True when micro-batch `index` (0 <= index < per_update()) of an update is this rank's.
  bool is_mine(int64_t index) const { return index % world_size_ == rank_; }
  // What each trained micro-batch's loss and gradient are scaled by: 1 / per_update(), so the
  // sum over all ranks is the gradient of the mean loss over the update.
  double loss_scale() const { return 1.0 / static_cast<double>(per_update_); }

 private:
  int rank_;
  int world_size_;
  int64_t per_update_;
};

// Sums every parameter's gradient over the ranks, in place (nothing to do for one rank).
void all_reduce_gradients(Collective& collective, ParameterSet& params);

// Checks that every rank starts from the same point: the same step and the same weights (a
// checksum of every parameter value). They differ when ranks resumed from different copies of
// a run folder (several hosts without a shared file system) or were given different configs.
// Every rank that differs from the average throws (so no rank is left waiting for the others);
// the message names the rank and what differs.
void check_ranks_agree(Collective& collective, Backend& backend, const ParameterSet& params,
                       int64_t step);

// True on every rank when `flag` is true on at least one (e.g. a Ctrl-C that reached only one
// rank must stop all of them at the same update, or the others would wait for it forever).
bool any_rank(Collective& collective, bool flag);

}  // namespace sf
