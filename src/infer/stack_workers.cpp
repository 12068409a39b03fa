// stack_workers.cpp — fork-join over persistent per-stack threads.
#include "infer/stack_workers.h"

#include <omp.h>

namespace sf {

StackWorkers::StackWorkers(int64_t count, int threads_per_worker) {
  for (int64_t i = 0; i < count; ++i)
    threads_.emplace_back([this, i, threads_per_worker] { loop(i, threads_per_worker); });
}

StackWorkers::~StackWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& t : threads_) t.join();
}

void StackWorkers::run(const std::function<void(int64_t)>& task) {
  std::unique_lock<std::mutex> lock(mutex_);
  task_ = &task;
  remaining_ = count();
  error_ = nullptr;
  ++generation_;
  start_.notify_all();
  done_.wait(lock, [this] { return remaining_ == 0; });
  task_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void StackWorkers::loop(int64_t index, int threads) {
  omp_set_num_threads(threads);  // this thread's OpenMP regions get a private team of this size
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t)>* task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      task = task_;
    }
    std::exception_ptr error;
    try {
      (*task)(index);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error && !error_) error_ = error;
    if (--remaining_ == 0) done_.notify_one();
  }
}

}  // namespace sf
