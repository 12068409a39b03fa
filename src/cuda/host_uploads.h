// host_uploads.h — the CUDA backend's copies of host data to the device that must not make the
// host wait: small uploads through pinned staging buffers, and the pointer/size tables of
// multi-tensor launches (fill_many, convert_many, adamw_update_many, sum_squares), kept on the
// device by content.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <vector>

#include "cuda/kernels.h"

namespace sf::cuda {

// The device table of a multi-tensor launch: `columns` (one word per tensor each: pointers),
// then the sizes and their chunk starts (ManyLayout), then `extra` words.
struct ManyTable {
  uint64_t* words = nullptr;
  int count = 0;
  ManyLayout layout;
  const uint64_t* extra = nullptr;
  template <class T> T* const* column(int i) const {
    return reinterpret_cast<T* const*>(words + static_cast<size_t>(i) * count);
  }
};

class HostUploads {
 public:
  HostUploads() = default;
  ~HostUploads();
  HostUploads(const HostUploads&) = delete;
  HostUploads& operator=(const HostUploads&) = delete;

  // Host-to-device copies of up to kStagingBytes go through pinned staging buffers, so the host
  // never waits: a copy from pageable memory can make it wait until the stream has drained (the
  // batch's upload waited for the gradient zeroing, and the GPU then sat idle while the step was
  // launched). A buffer is reused once its previous copy has run (its event). Not while a
  // recording is open: a recorded copy would read the buffer again at every replay.
  static constexpr size_t kStagingBytes = 1u << 20;
  void staged(void* dst, const void* src, size_t bytes, cudaStream_t stream);

  // The table `words` on the device. Tables are kept by content: a training step passes the same
  // ones every time (the same parameters), so after the first step nothing is copied (a copy
  // from pageable host memory can make the host wait for the stream, which put a gap before each
  // optimizer launch). A table never changes once uploaded; when too many accumulate (shapes
  // keep changing) they are all dropped, after `before_drop` (the caller marks its recordings
  // stale and waits for the stream). While `recording`, a new table is copied outside the
  // stream (a recorded copy would read `words`, gone by then, at every replay).
  uint64_t* table(const std::vector<uint64_t>& words, cudaStream_t stream, bool recording,
                  const std::function<void()>& before_drop);
  ManyTable many(std::initializer_list<std::vector<uint64_t>> columns,
                 const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& extra,
                 cudaStream_t stream, bool recording, const std::function<void()>& before_drop);

 private:
  static constexpr int kStagingSlots = 4;
  static constexpr size_t kMaxTables = 64;
  struct Staging {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  Staging staging_[kStagingSlots];
  int next_staging_ = 0;
  std::map<std::vector<uint64_t>, void*> tables_;
};

}  // namespace sf::cuda
