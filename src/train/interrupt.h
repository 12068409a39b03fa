// interrupt.h — Ctrl-C (SIGINT) and SIGTERM handling for long jobs.
//
// While an InterruptGuard lives, the first SIGINT/SIGTERM sets a flag that the training loop
// polls between steps (it then writes a checkpoint and exits cleanly) and says so on stderr at
// once; a second one
// restores the default action and re-raises, so a stuck process can still be killed.
#pragma once

namespace sf {

class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  static bool requested();
  static void request();  // what the signal handler does; also usable from tests
  static void clear();
};

}  // namespace sf
