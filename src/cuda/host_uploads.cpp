// host_uploads.cpp — HostUploads (host_uploads.h).
#include "cuda/host_uploads.h"

#include <cstring>

#include "cuda/cuda_check.h"

namespace sf::cuda {

HostUploads::~HostUploads() {
  for (auto& [key, table] : tables_) cudaFree(table);
  for (Staging& slot : staging_) {
    if (slot.host) cudaFreeHost(slot.host);
    if (slot.done) cudaEventDestroy(slot.done);
  }
}

void HostUploads::staged(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  Staging& slot = staging_[next_staging_];
  next_staging_ = (next_staging_ + 1) % kStagingSlots;
  if (!slot.host) {
    SF_CUDA_CHECK(cudaMallocHost(&slot.host, kStagingBytes));
    SF_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
  } else {
    SF_CUDA_CHECK(cudaEventSynchronize(slot.done));
  }
  std::memcpy(slot.host, src, bytes);
  SF_CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, stream));
  SF_CUDA_CHECK(cudaEventRecord(slot.done, stream));
}

uint64_t* HostUploads::table(const std::vector<uint64_t>& words, cudaStream_t stream, bool recording,
                             const std::function<void()>& before_drop) {
  auto it = tables_.find(words);
  if (it != tables_.end()) return static_cast<uint64_t*>(it->second);
  if (tables_.size() >= kMaxTables) {
    before_drop();
    for (auto& [key, table] : tables_) SF_CUDA_CHECK(cudaFree(table));
    tables_.clear();
  }
  const size_t bytes = words.size() * sizeof(uint64_t);
  void* table = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&table, bytes));
  tables_.emplace(words, table);
  if (recording) {
    // The table is new and never changes, so copying it now, outside the stream (the backend's
    // stream is non-blocking: the legacy stream does not wait for it), is enough.
    SF_CUDA_CHECK(cudaMemcpy(table, words.data(), bytes, cudaMemcpyHostToDevice));
  } else {
    SF_CUDA_CHECK(cudaMemcpyAsync(table, words.data(), bytes, cudaMemcpyHostToDevice, stream));
  }
  return static_cast<uint64_t*>(table);
}

ManyTable HostUploads::many(std::initializer_list<std::vector<uint64_t>> columns,
                            const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& extra,
                            cudaStream_t stream, bool recording,
                            const std::function<void()>& before_drop) {
  const std::vector<uint64_t> chunk_first = many_chunk_first(sizes);
  std::vector<uint64_t> words;
  for (const auto& column : columns) words.insert(words.end(), column.begin(), column.end());
  const size_t sizes_at = words.size();
  words.insert(words.end(), sizes.begin(), sizes.end());
  words.insert(words.end(), chunk_first.begin(), chunk_first.end());
  const size_t extra_at = words.size();
  words.insert(words.end(), extra.begin(), extra.end());
  ManyTable t;
  t.words = table(words, stream, recording, before_drop);
  t.count = static_cast<int>(sizes.size());
  t.layout.sizes = reinterpret_cast<const int64_t*>(t.words + sizes_at);
  t.layout.chunk_first = reinterpret_cast<const int64_t*>(t.words + sizes_at + sizes.size());
  t.layout.count = t.count;
  t.layout.chunks = static_cast<int64_t>(chunk_first.back());
  t.extra = t.words + extra_at;
  return t;
}

}  // namespace sf::cuda
