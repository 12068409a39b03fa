// cuda_backend.h — the CUDA backend: every Backend operation on one NVIDIA GPU.
//
// Activations are F32 or BF16 with fp32 arithmetic; weight gradients, master weights and AdamW
// state are F32 (see the conventions in src/core/backend.h). Matrix products go through
// cuBLASLt (src/cuda/matmul.h), attention through the tiled kernels of attention_kernels.h, the
// rest through the kernels declared in kernels.h. All work is queued on one stream; calls that
// return a host value (dot, sum_squares, cross_entropy_forward) and copies to the host wait
// for it. Memory comes from cudaMalloc when a tensor is made (the model plans its activations
// once per shape, so a training step allocates nothing); running out names the request.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "core/backend.h"

namespace sf {

// True when a CUDA device can be used (a driver and at least one GPU).
bool cuda_device_available();
// Number of usable CUDA devices (0 when none or no driver).
int cuda_device_count();

// The CUDA backend on GPU `device`; -1 picks LOCAL_RANK from the environment (one process per
// GPU), else 0. Throws sf::Error naming the problem when no usable GPU is there.
std::unique_ptr<Backend> make_cuda_backend(int device = -1);

// The stream a CUDA backend queues its work on (for NCCL and timing); fails for other backends.
cudaStream_t cuda_stream(Backend& backend);

// A one-line description of the backend's GPU ("NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB").
std::string cuda_device_description(Backend& backend);

}  // namespace sf
