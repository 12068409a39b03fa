// stack_workers.cpp — fork-join over persistent per-stack threads.
#include "infer/stack_workers.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

namespace sf {

namespace {

// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

}  // namespace

StackWorkers::StackWorkers(int64_t count, int threads_per_worker) {
  // When the groups fit the machine side by side, worker i and its OpenMP team (whose threads
  // inherit the worker's affinity) get CPUs [i*k, (i+1)*k) of the allowed set: the stacks' thread
  // groups then never spin on each other's cores.
  const std::vector<int> cpus = allowed_cpus();
  const bool pin = static_cast<int64_t>(cpus.size()) >= count * threads_per_worker;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<int> mine;
    if (pin)
      mine.assign(cpus.begin() + i * threads_per_worker, cpus.begin() + (i + 1) * threads_per_worker);
    threads_.emplace_back([this, i, threads_per_worker, mine] {
      if (!mine.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : mine) CPU_SET(c, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
      }
      loop(i, threads_per_worker);
    });
  }
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
