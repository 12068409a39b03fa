// collective.h — the collective operations data-parallel training needs (sum all-reduce of
// gradients and host scalars, a barrier), behind one interface, and the single-process one.
//
// A Collective connects the `world_size()` processes of one training job; rank() numbers this
// process 0..world_size()-1. Every operation is collective: each rank must call the same
// operations in the same order with tensors of the same shapes, and each call returns when this
// rank has the result. The NCCL implementation lives in cuda/nccl_collective.h; the one here is
// the world of one process (every operation leaves its input as it is), usable on any backend,
// so the trainer runs the same code with or without data parallelism.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace sf {

class Collective {
 public:
  virtual ~Collective() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  bool is_root() const { return rank() == 0; }

  // In place: every tensor becomes the element-wise sum of that tensor over all ranks.
  // Tensors are contiguous F32 on the implementation's device. Several tensors in one call
  // travel together (one grouped operation instead of one per tensor).
  virtual void all_reduce_sum(std::vector<Tensor>& tensors) = 0;
  void all_reduce_sum(Tensor& tensor) {
    std::vector<Tensor> one{tensor};  // a Tensor copy shares the buffer: still in place
    all_reduce_sum(one);
  }
  // The sum of `value` over all ranks (a host scalar, e.g. the training loss), in fp64.
  virtual double all_reduce_sum(double value) = 0;
  // Returns when every rank has called it.
  virtual void barrier() = 0;
};

// The world of one process: rank 0 of 1; sums are the values themselves.
class SingleProcessCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  using Collective::all_reduce_sum;
  void all_reduce_sum(std::vector<Tensor>&) override {}
  double all_reduce_sum(double value) override { return value; }
  void barrier() override {}
};

}  // namespace sf
