// interrupt.cpp — async-signal-safe interrupt flag.
#include "train/interrupt.h"

#include <unistd.h>

#include <csignal>

namespace sf {

namespace {

volatile std::sig_atomic_t g_requested = 0;
struct sigaction g_old_int, g_old_term;

extern "C" void on_signal(int sig) {
  if (g_requested) {  // second signal: give up gracefully stopping
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_requested = 1;
  // Said at once (write(2) is async-signal-safe): a step can take seconds, and a user who sees
  // nothing presses again, which aborts without the checkpoint.
  static const char kMessage[] =
      "\nstopping after this step: writing a checkpoint (press Ctrl-C again to abort without "
      "one)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  (void)ignored;
}

}  // namespace

InterruptGuard::InterruptGuard() {
  clear();
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &g_old_int);
  sigaction(SIGTERM, &action, &g_old_term);
}

InterruptGuard::~InterruptGuard() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

bool InterruptGuard::requested() { return g_requested != 0; }
void InterruptGuard::request() { g_requested = 1; }
void InterruptGuard::clear() { g_requested = 0; }

}  // namespace sf
