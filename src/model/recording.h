// recording.h — recording a fixed sequence of backend operations to replay it (CUDA graphs),
// with the fallback every recorded caller wants: what cannot be recorded runs directly.
#pragma once

#include <cstdio>
#include <exception>

#include "core/backend.h"

namespace sf {

// Records `work` (begin_recording, work(), end_recording) and returns the recording's id. When
// the work cannot be recorded, ends the recording, says so on stderr (naming `what`), runs the
// work directly and returns -1: the caller then runs directly from now on.
template <class Work>
int record_or_run(Backend& backend, const char* what, Work&& work) {
  backend.begin_recording();
  try {
    work();  // recorded, not run
  } catch (const std::exception& e) {
    backend.abort_recording();
    std::fprintf(stderr, "note: recording the %s failed (%s); running it directly\n", what, e.what());
    work();
    return -1;
  }
  return backend.end_recording();
}

}  // namespace sf
