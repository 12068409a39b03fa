// step_program.h — a recorded decode step's runs of small products and attention steps as one
// persistent kernel (a "program"), instead of one launch each.
//
// Why: at d_model 768 a decode product moves 0.4-2 us of bytes but costs 3-5 us as a launch,
// and the attention step 7 us: each launch waits for the whole previous grid, and its blocks
// can request their weights only once the previous grid's blocks have left the
// multiprocessors (the product kernels fill the register file). A program's blocks stay
// resident: after a block's share of one instruction it requests the next instruction's
// weights, then waits at a counter for every block to have finished the instruction before
// (an acquire load of a count in L2, not a grid launch). The blocks compute exactly what the
// kernels compute (the same device functions, linear_small.cuh and attention_step.cuh, over the
// same block decomposition), so a program equals its launches bit for bit.
//
// How it is used (CudaBackend): while a recording is open, the launchers of the small-product
// kernel and the attention step hand their launches to the pending program (add_small,
// add_attention) instead of launching them; anything else the backend enqueues flushes it
// first, so the stream's order is kept. A program of one launch is launched as it is.
// Off unless SF_STEP_PROGRAM=1 in the environment: programs compute exactly what the kernels do
// (the GPU decode tests pass with them), but their first version made decoding slower, not
// faster (bench/results/gpu-step-program-20261207-h100.md: 1.6x slower, its one kernel
// spilling registers); the version here, one kernel per product row count with one output per
// warp (fewer spills), is 1.35x slower: its grid-wide count costs more than a dependent launch
// (bench/results/gpu-step-program-v3-20261207-h100.md). Since then programs also take the
// streamed products (linear_stream.cu's, 4 MB and more: every product of a d_model 2048 model):
// their weight tiles stream through each block's shared memory across the instructions'
// boundaries, which the prototype bench/cuda/stream_program_bench.cu measured at 76% of the
// peak bandwidth for the 1B model's products against 61% as kernels (not yet run in the
// decoder: tests/cuda_decode_test.cpp's CudaDecodeStreamed checks it with SF_STEP_PROGRAM=1).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"

namespace sf::cuda {

namespace small { struct ProductTable; }
struct SmallProduct;
namespace step { struct AttentionStepArgs; }

class StepProgram {
 public:
  StepProgram();
  ~StepProgram();
  StepProgram(const StepProgram&) = delete;
  StepProgram& operator=(const StepProgram&) = delete;

  // Whether launches are collected (the backend turns it on while a recording is open); off
  // whatever `on` says unless SF_STEP_PROGRAM=1.
  void set_collecting(bool on);
  bool collecting() const;

  // The launchers' side: true when the launch was taken into the pending program; false when
  // the caller must launch it itself (the program was flushed first where needed).
  //   small: a product table of linear_small.cu for `rows` (1, 2, 4, 8) rows and `features`
  //   outputs per warp, over `blocks` blocks with `shared` bytes of dynamic shared memory;
  //   attention: the step's arguments, its grid (rows * q_heads, splits), the pieces each lane
  //   holds (CPL) and whether its loads are 16 bytes wide.
  bool add_small(DType dtype, const small::ProductTable& table, int rows, int features, int blocks,
                 size_t shared, cudaStream_t stream);
  bool add_attention(DType dtype, const step::AttentionStepArgs& args, int grid_x, int grid_y,
                     int pieces_per_lane, bool vector, cudaStream_t stream);
  //   streamed: products linear_stream_suits() accepted (one instruction per launch table of
  //   linear_stream_many); their weight tiles stream through every block's shared memory across
  //   the instructions' boundaries (step_program.cu).
  bool add_stream(DType dtype, const SmallProduct* products, int count, cudaStream_t stream);

  // Launches the pending program on `stream` (nothing when none is pending).
  void flush(cudaStream_t stream);
  // Forgets the pending program (an aborted recording).
  void discard();
  // The device memory of the programs launched since the last call: a recording keeps it for
  // as long as it may be replayed (free_buffers when it is released).
  std::vector<void*> take_buffers();
  static void free_buffers(std::vector<void*>& buffers);

 private:
  struct Pending;
  std::unique_ptr<Pending> pending_;
  std::vector<void*> buffers_;
  bool collecting_ = false;
};

// Whether SF_STEP_PROGRAM=1 asks for programs (read once per process).
bool step_programs_enabled();
// Programs launched (recorded) so far in this process: the tests check that a recorded step
// used them.
int64_t step_programs_launched();

}  // namespace sf::cuda
