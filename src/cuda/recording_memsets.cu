// recording_memsets.cu — the kernel that does a memset node's work, and the graph rewrite that
// puts it in the node's place (see recording_memsets.h).
#include "cuda/recording_memsets.h"

#include <cstdint>
#include <vector>

#include "cuda/cuda_check.h"

namespace sf::cuda {

namespace {

// What a memset node writes: `height` rows `pitch` bytes apart, each of `width` elements of
// `element_size` bytes (1, 2 or 4) set to the low bytes of `value`.
__global__ void memset_node_kernel(char* dst, size_t pitch, unsigned value, unsigned element_size,
                                   size_t width, size_t height) {
  const size_t total = width * height;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total;
       i += size_t(gridDim.x) * blockDim.x) {
    char* p = dst + (i / width) * pitch + (i % width) * element_size;
    if (element_size == 4)
      *reinterpret_cast<uint32_t*>(p) = value;
    else if (element_size == 2)
      *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(value);
    else
      *reinterpret_cast<uint8_t*>(p) = static_cast<uint8_t>(value);
  }
}

std::vector<cudaGraphNode_t> nodes_of(cudaGraph_t graph) {
  size_t count = 0;
  SF_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  SF_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
  nodes.resize(count);
  return nodes;
}

// A node's edges on one side: the nodes at their other ends and each edge's data.
struct Edges {
  std::vector<cudaGraphNode_t> nodes;
  std::vector<cudaGraphEdgeData> data;
};

Edges incoming(cudaGraphNode_t node) {
  size_t count = 0;
  SF_CUDA_CHECK(cudaGraphNodeGetDependencies(node, nullptr, nullptr, &count));
  Edges e{std::vector<cudaGraphNode_t>(count), std::vector<cudaGraphEdgeData>(count)};
  if (count) SF_CUDA_CHECK(cudaGraphNodeGetDependencies(node, e.nodes.data(), e.data.data(), &count));
  return e;
}

Edges outgoing(cudaGraphNode_t node) {
  size_t count = 0;
  SF_CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, nullptr, nullptr, &count));
  Edges e{std::vector<cudaGraphNode_t>(count), std::vector<cudaGraphEdgeData>(count)};
  if (count)
    SF_CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, e.nodes.data(), e.data.data(), &count));
  return e;
}

bool all_plain(const Edges& e) {
  for (const cudaGraphEdgeData& d : e.data)
    if (d.type != cudaGraphDependencyTypeDefault || d.from_port != 0 || d.to_port != 0) return false;
  return true;
}

}  // namespace

int replace_small_memsets(cudaGraph_t graph) {
  int replaced = 0;
  for (cudaGraphNode_t node : nodes_of(graph)) {
    cudaGraphNodeType type;
    SF_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
    if (type != cudaGraphNodeTypeMemset) continue;
    cudaMemsetParams m{};
    SF_CUDA_CHECK(cudaGraphMemsetNodeGetParams(node, &m));
    const size_t elements = m.width * m.height;
    if (elements * m.elementSize > kMaxReplacedMemsetBytes || elements == 0) continue;

    char* dst = static_cast<char*>(m.dst);
    size_t pitch = m.height > 1 ? m.pitch : 0;  // unused (maybe unset) for one row
    unsigned value = m.value, element_size = m.elementSize;
    size_t width = m.width, height = m.height;
    void* args[] = {&dst, &pitch, &value, &element_size, &width, &height};
    cudaKernelNodeParams k{};
    k.func = reinterpret_cast<void*>(&memset_node_kernel);
    k.blockDim = dim3(256);
    k.gridDim = dim3(static_cast<unsigned>((elements + 255) / 256));
    k.kernelParams = args;

    const Edges in = incoming(node), out = outgoing(node);
    // Only plain "after it has finished" edges: a programmatic one (a kernel that may start
    // early) is for kernels that wait for their inputs themselves, which this one does not.
    if (!all_plain(in) || !all_plain(out)) continue;
    cudaGraphNode_t kernel = nullptr;
    SF_CUDA_CHECK(cudaGraphAddKernelNode(&kernel, graph, nullptr, 0, &k));
    for (size_t i = 0; i < in.nodes.size(); ++i)
      SF_CUDA_CHECK(cudaGraphAddDependencies(graph, &in.nodes[i], &kernel, &in.data[i], 1));
    for (size_t i = 0; i < out.nodes.size(); ++i)
      SF_CUDA_CHECK(cudaGraphAddDependencies(graph, &kernel, &out.nodes[i], &out.data[i], 1));
    SF_CUDA_CHECK(cudaGraphDestroyNode(node));  // and its edges
    ++replaced;
  }
  return replaced;
}

}  // namespace sf::cuda
