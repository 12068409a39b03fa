// kernel_trace.cpp — a CUPTI injection library that records every GPU kernel, memory copy and
// memset of a CUDA program (ours or the PyTorch twin) with its start and end time, for finding
// where a training step goes. The GPU machines have no Nsight Systems; this is the part of it we
// need, with the GPU's own timestamps (no events, no serialisation, no replay).
//
// Use:  CUDA_INJECTION64_PATH=/path/libsf_kernel_trace.so SF_KERNEL_TRACE=trace.tsv  <program>
// The CUDA driver loads the library at the program's first CUDA call and calls
// InitializeInjection(); at exit every record is written to SF_KERNEL_TRACE as
//   kind <TAB> start_ns <TAB> end_ns <TAB> name
// (kind: kernel, memcpy_htod, memcpy_dtoh, memcpy_dtod, memcpy_other, memset), sorted by start.
// bench/kernel_trace/summarize.py turns that into a per-step table.
#include <cupti.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  const char* kind;
  uint64_t start, end;
  std::string name;
};

std::mutex records_mutex;
std::vector<Record> records;

constexpr size_t kBufferBytes = 8u << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;  // as many as fit
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy_htod";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy_dtoh";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy_dtod";
    default: return "memcpy_other";
  }
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid_size) {
  std::vector<Record> batch;
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid_size, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_KERNEL:
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(record);
        batch.push_back({"kernel", k->start, k->end, k->name ? k->name : "?"});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        auto* m = reinterpret_cast<CUpti_ActivityMemcpy6*>(record);
        batch.push_back({copy_kind(m->copyKind), m->start, m->end, std::to_string(m->bytes) + " B"});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        auto* m = reinterpret_cast<CUpti_ActivityMemset4*>(record);
        batch.push_back({"memset", m->start, m->end, std::to_string(m->bytes) + " B"});
        break;
      }
      default: break;
    }
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  if (dropped) std::fprintf(stderr, "kernel_trace: CUPTI dropped %zu records\n", dropped);
  std::free(buffer);
  std::lock_guard<std::mutex> lock(records_mutex);
  records.insert(records.end(), std::make_move_iterator(batch.begin()),
                 std::make_move_iterator(batch.end()));
}

void write_trace() {
  cuptiActivityFlushAll(1);
  const char* path = std::getenv("SF_KERNEL_TRACE");
  if (!path) path = "kernel_trace.tsv";
  std::lock_guard<std::mutex> lock(records_mutex);
  std::sort(records.begin(), records.end(),
            [](const Record& a, const Record& b) { return a.start < b.start; });
  FILE* f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "kernel_trace: cannot write %s\n", path);
    return;
  }
  for (const Record& r : records)
    std::fprintf(f, "%s\t%llu\t%llu\t%s\n", r.kind, static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu records -> %s\n", records.size(), path);
}

bool check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return true;
  const char* message = nullptr;
  cuptiGetResultString(r, &message);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, message ? message : "?");
  return false;
}

}  // namespace

extern "C" int InitializeInjection(void) {
  if (!check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register"))
    return 0;
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernels");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enable memcpy");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enable memset");
  std::atexit(write_trace);
  return 1;
}
