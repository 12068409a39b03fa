// rendezvous.h — how the processes of a data-parallel job find each other: the launch
// environment (torchrun's variables) and the one-time exchange that gives every rank a blob of
// bytes made by rank 0 (the NCCL unique id), over TCP or through a shared file. No CUDA here.
//
// The environment (docs/data-parallel.md):
//   WORLD_SIZE            processes in the job; unset: 1 (no data parallelism)
//   RANK                  this process, 0..WORLD_SIZE-1          (required when WORLD_SIZE > 1)
//   LOCAL_RANK            this process's GPU on its host         (required when WORLD_SIZE > 1)
//   MASTER_ADDR, MASTER_PORT   rank 0's host and a free TCP port (the TCP rendezvous)
//   SF_DIST_INIT_FILE     a path on a file system every rank sees: rendezvous through it
//                         instead of TCP (for clusters where no port is reachable)
//   SF_DIST_INIT_TIMEOUT  seconds the rendezvous waits for the other ranks (default 300)
//   SF_DIST_TIMEOUT       seconds one collective operation may wait for the others (default 900)
//
// TCP: rank 0 listens on MASTER_PORT on all its interfaces (so whichever of its addresses
// MASTER_ADDR names reaches it) and answers every other rank's hello with the blob; the others
// connect to MASTER_ADDR:MASTER_PORT, retrying until the timeout, since rank 0 may start after
// them. Rank 0 returns once every rank has its copy. The hello carries the rank and WORLD_SIZE:
// a WORLD_SIZE that differs from rank 0's, or a rank out of range, fails both sides with one
// message; a stranger that does not speak the protocol is ignored.
//
// File: rank 0 refuses a file that already exists (a leftover of an earlier job would hand out a
// stale id), writes it atomically (temporary + rename), waits until every other rank has
// acknowledged it (PATH.ack.RANK files) and then removes the file and the acknowledgements; the
// others poll for it. Use a fresh path per job.
#pragma once

#include <functional>
#include <string>

namespace sf {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  std::string init_file;        // non-empty: file rendezvous instead of TCP
  double init_timeout_s = 300;  // rendezvous
  double op_timeout_s = 900;    // one collective operation
  bool distributed() const { return world_size > 1; }
};

// Looks an environment variable up; nullptr when unset.
using EnvLookup = std::function<const char*(const char* name)>;

// Reads and validates the variables above. Throws one sf::Error listing every bad variable
// with its value (e.g. "RANK=2 is not below WORLD_SIZE=2").
DistEnv dist_env_parse(const EnvLookup& lookup);
// dist_env_parse over this process's environment.
DistEnv dist_env_from_process();
// "rank 1 of 4 (local rank 1), rendezvous tcp://node0:29500" (for logs and messages).
std::string dist_env_describe(const DistEnv& env);

// Every rank returns rank 0's `root_bytes` (ignored on the other ranks), exchanged over TCP or,
// when env.init_file is set, through the file. With world_size 1 returns root_bytes at once.
// Throws sf::Error naming the address or file on a timeout or a protocol mismatch.
std::string rendezvous_share(const DistEnv& env, const std::string& root_bytes);
std::string rendezvous_share_tcp(const DistEnv& env, const std::string& root_bytes);
std::string rendezvous_share_file(const DistEnv& env, const std::string& root_bytes);

}  // namespace sf
