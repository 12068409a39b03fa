// recording_memsets.h — small memsets of a recorded step turned into kernel nodes.
//
// cuBLASLt zeroes 4 bytes before each product that writes BF16 (its algorithms for our shapes
// all ask for that much workspace, docs/training-gpu.md), and in a CUDA graph each memset is a
// node of its own kind: the GPU switches to it and back, ~3.5 us between the kernels around it
// where two kernel nodes follow each other within ~0.3 us (H100 trace of a 2x6 step: 137
// memsets, ~0.45 ms of a 37 ms step). A kernel that writes the same bytes costs a kernel node's
// gap and ~1 us. So before a recording is instantiated, every memset node of at most
// kMaxReplacedMemsetBytes becomes a kernel node with the same destination, value, element size,
// rows and pitch, and the same dependencies in and out (edge data kept). Larger memsets stay
// (a copy engine writes them faster than a small kernel would).
// SF_RECORDING_KEEP_MEMSETS=1 leaves every memset node as recorded (for comparisons).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace sf::cuda {

constexpr size_t kMaxReplacedMemsetBytes = 64u << 10;

// Replaces the small memset nodes of `graph` (not yet instantiated) as above; returns how many.
int replace_small_memsets(cudaGraph_t graph);

}  // namespace sf::cuda
