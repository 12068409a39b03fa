// attention_step_bench.cu — times the decode step's attention kernel (cuda::attention_step) on
// its own, to find where its time goes: the same launcher the decoder uses, with the arguments
// varied one at a time (RoPE on/off, the cache capacity that fixes the split count, one split
// instead of several, rows, visible keys), each case a recorded chain of back-to-back launches
// as in a decode step (dependent launches unless SF_PDL=0). An empty kernel's chain gives the
// launch floor, and the bytes each launch must read (visible keys' K and V rows) over the
// peak bandwidth measured as `stagformer bench` does give the memory floor.
//   .devbin/attention_step_bench [launches per chain, default 200]
// Prints one markdown row per case: microseconds per launch (best of 5 replays).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "cuda/kernels.h"

namespace {

using bench::check;
using bench::device_ints;

struct Case {
  std::string name;
  int64_t rows = 1, capacity = 1024, visible = 576, heads = 12, head_dim = 64;
  bool rope = true, split = true;
};

double run_case(const Case& c, cudaStream_t stream, int launches, std::mt19937& rng) {
  using T = __nv_bfloat16;
  const int64_t R = c.rows, C = c.capacity, H = c.heads, D = c.head_dim;
  T* k_cache = bench::device_random(size_t(R * C * H * D), rng);
  T* v_cache = bench::device_random(size_t(R * C * H * D), rng);
  T* q = bench::device_random(size_t(R * H * D), rng);
  T* k_new = bench::device_random(size_t(R * H * D), rng);
  T* v_new = bench::device_random(size_t(R * H * D), rng);
  T* out;
  check(cudaMalloc(&out, size_t(R * H * D) * sizeof(T)), "malloc");
  // The new token at position visible - 1 of every row, its keys [0, visible).
  const int32_t fresh = static_cast<int32_t>(c.visible - 1);
  int32_t* position = device_ints(std::vector<int32_t>(R, fresh));
  int32_t* slot = device_ints(std::vector<int32_t>(R, static_cast<int32_t>(fresh % C)));
  int32_t* begin = device_ints(std::vector<int32_t>(R, 0));
  int32_t* end = device_ints(std::vector<int32_t>(R, static_cast<int32_t>(c.visible)));
  sf::cuda::AttentionStepWorkspace ws;
  if (c.split) {
    const int64_t splits = (C + 63) / 64 + 1;
    ws.partial_floats = R * H * splits * (D + 2);
    check(cudaMalloc(&ws.partials, ws.partial_floats * sizeof(float)), "malloc");
    ws.counter_count = R * H;
    check(cudaMalloc(&ws.counters, ws.counter_count * sizeof(unsigned)), "malloc");
    check(cudaMemset(ws.counters, 0, ws.counter_count * sizeof(unsigned)), "memset");
  }
  const double us = bench::time_chain(stream, launches, [&](int) {
    sf::cuda::attention_step(sf::DType::bf16, out, q, k_new, v_new, k_cache, v_cache, position,
                             position, slot, begin, end, R, 0, 0, C, H, H, D, 10000.0, c.rope, c.rope,
                             ws, stream);
  });
  check(cudaStreamSynchronize(stream), "run");
  for (void* p : {(void*)k_cache, (void*)v_cache, (void*)q, (void*)k_new, (void*)v_new, (void*)out,
                  (void*)position, (void*)slot, (void*)begin, (void*)end, (void*)ws.partials,
                  (void*)ws.counters})
    cudaFree(p);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  const int launches = argc > 1 ? std::max(1, std::atoi(argv[1])) : 200;
  const bench::Setup setup = bench::begin("attention_step", launches);
  const cudaStream_t stream = setup.stream;
  const double bandwidth = setup.bandwidth;
  std::printf("| case | rows | capacity | visible | rope | splits | us/launch | memory floor us |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::vector<Case> cases;
  const Case decode{"decode step (gpt2-small, d512 + 64)"};
  cases.push_back(decode);
  Case c = decode; c.name = "no RoPE"; c.rope = false; cases.push_back(c);
  c = decode; c.name = "capacity = visible (no empty splits)"; c.capacity = 576; cases.push_back(c);
  c = decode; c.name = "one split (no workspace)"; c.split = false; cases.push_back(c);
  c = decode; c.name = "64 keys visible"; c.visible = 64; cases.push_back(c);
  c = decode; c.name = "1024 keys visible"; c.visible = 1024; cases.push_back(c);
  c = decode; c.name = "2 rows (two stacks)"; c.rows = 2; cases.push_back(c);
  c = decode; c.name = "8 rows"; c.rows = 8; cases.push_back(c);
  c = decode; c.name = "capacity 4096"; c.capacity = 4096; cases.push_back(c);
  std::mt19937 rng(7);
  for (const Case& k : cases) {
    const double us = run_case(k, stream, launches, rng);
    const double bytes = 2.0 * k.rows * k.visible * k.heads * k.head_dim * 2;
    std::printf("| %s | %lld | %lld | %lld | %s | %s | %.2f | %.2f |\n", k.name.c_str(),
                (long long)k.rows, (long long)k.capacity, (long long)k.visible,
                k.rope ? "yes" : "no", k.split ? "by capacity" : "1", us, 1e6 * bytes / bandwidth);
  }
  return 0;
}
