// fuzz_rendezvous_tcp.cpp — fuzzes the TCP rendezvous of data-parallel jobs
// (rendezvous_share_tcp, distributed/rendezvous.h; wire format in rendezvous_tcp.cpp) with the
// bytes another rank sends. The message parsing is not public, so the harness talks to the real
// code over loopback sockets. The first input byte picks the side:
//   even: the engine is rank 1 of 2 and fetches its blob; the harness plays rank 0 and answers
//         every hello with the rest of the input (status, length, blob as it comes). An accepted
//         answer must be status 0 with the blob the engine returns.
//   odd:  the engine is rank 0 of 2 serving the blob "root-blob"; the harness connects once and
//         sends the rest of the input as the hello, then once more with a valid hello of rank 1,
//         so that the engine returns without waiting for its timeout. It must return
//         "root-blob" or throw sf::Error (a refused hello).
// Rendezvous timeouts are a few tens of milliseconds, so an input the engine retries or waits on
// costs that much: this harness runs at hundreds, not thousands, of inputs per second.
//
// fuzz-dict: rendezvous   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "distributed/rendezvous.h"
#include "fuzz_util.h"

namespace {

std::mutex answer_mutex;
std::string answer;  // what the harness's rank 0 sends to every hello
int answer_port = 0;
int serve_port = 0;

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void send_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void drain(int fd) {
  char buffer[4096];
  while (::recv(fd, buffer, sizeof buffer, 0) > 0) {
  }
}

int loopback_listener(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0)
    sf::fuzz::finding("harness: cannot listen on loopback");
  return fd;
}

int port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// The harness's rank 0: answers every connection's 16-byte hello with `answer`.
void answer_forever(int listener) {
  for (;;) {
    const int peer = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (peer < 0) continue;
    set_timeouts(peer, 200);
    char hello[16];
    size_t got = 0;
    while (got < sizeof hello) {
      const ssize_t n = ::recv(peer, hello + got, sizeof hello - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    std::string reply;
    {
      std::lock_guard<std::mutex> lock(answer_mutex);
      reply = answer;
    }
    if (got == sizeof hello) send_all(peer, reply);
    ::close(peer);
  }
}

// Connects to 127.0.0.1:port, retrying while the engine is not listening yet, until `stop`.
int connect_loopback(int port, const std::atomic<bool>& stop) {
  while (!stop.load()) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      set_timeouts(fd, 200);
      return fd;
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return -1;
}

std::string big_endian(uint32_t v) {
  const uint32_t wire = htonl(v);
  return std::string(reinterpret_cast<const char*>(&wire), 4);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const int listener = loopback_listener(0);
  answer_port = port_of(listener);
  std::thread(answer_forever, listener).detach();
  // A port for the engine's own listener: free now, reused for every input (SO_REUSEADDR).
  const int probe = loopback_listener(0);
  serve_port = port_of(probe);
  ::close(probe);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string message(reinterpret_cast<const char*>(data + 1), size - 1);
  sf::DistEnv env;
  env.world_size = 2;
  env.master_addr = "127.0.0.1";
  env.init_timeout_s = 0.03;

  if (data[0] % 2 == 0) {  // the engine fetches: `message` is rank 0's answer
    {
      std::lock_guard<std::mutex> lock(answer_mutex);
      answer = message;
    }
    env.rank = env.local_rank = 1;
    env.master_port = answer_port;
    std::string blob;
    if (sf::fuzz::run_loader("rendezvous_share_tcp (rank 1)",
                             [&] { blob = sf::rendezvous_share_tcp(env, ""); })) {
      sf::fuzz::require(
          message.size() >= 8 && message.compare(0, 4, big_endian(0)) == 0 &&
              message.compare(4, 4, big_endian(static_cast<uint32_t>(blob.size()))) == 0 &&
              message.compare(8, blob.size(), blob) == 0,
          "rank 1 returns the blob of an answer with status 0 and that length");
    }
    return 0;
  }

  // The engine serves: `message` is a hello from a would-be rank.
  env.rank = env.local_rank = 0;
  env.master_port = serve_port;
  std::atomic<bool> done{false};
  std::thread peer([&] {
    for (const std::string& hello :
         {message, std::string("SFRDZV01") + big_endian(1) + big_endian(2)}) {
      const int fd = connect_loopback(serve_port, done);
      if (fd < 0) return;
      send_all(fd, hello);
      ::shutdown(fd, SHUT_WR);
      drain(fd);
      ::close(fd);
    }
  });
  std::string blob;
  const bool ok = sf::fuzz::run_loader("rendezvous_share_tcp (rank 0)",
                                       [&] { blob = sf::rendezvous_share_tcp(env, "root-blob"); });
  done = true;
  peer.join();
  if (ok) sf::fuzz::require(blob == "root-blob", "rank 0 returns its own blob");
  return 0;
}
