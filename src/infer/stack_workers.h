// stack_workers.h — one persistent worker thread per stack, for the concurrent decode schedule.
//
// run(task) calls task(s) for every stack s at the same time, stack s on worker s, and returns
// when all are done (a fork-join barrier). Each worker sets its own OpenMP thread count once, so
// every OpenMP region inside task(s) uses a private team of that size: the stacks are separate
// thread groups sharing the machine. Workers are created once and sleep between calls.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sf {

class StackWorkers {
 public:
  // `count` workers with `threads_per_worker` OpenMP threads each.
  StackWorkers(int64_t count, int threads_per_worker);
  ~StackWorkers();
  StackWorkers(const StackWorkers&) = delete;
  StackWorkers& operator=(const StackWorkers&) = delete;

  // Runs task(0) .. task(count-1) concurrently; rethrows the first exception of a task.
  void run(const std::function<void(int64_t)>& task);
  int64_t count() const { return static_cast<int64_t>(threads_.size()); }

 private:
  void loop(int64_t index, int threads);

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  uint64_t generation_ = 0;
  int64_t remaining_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace sf
