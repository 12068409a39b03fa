// rendezvous_tcp.cpp — the TCP rendezvous: rank 0 serves its blob on MASTER_PORT, every other
// rank fetches it from MASTER_ADDR:MASTER_PORT (see distributed/rendezvous.h for the rules).
//
// Wire format (integers are unsigned 32-bit big-endian):
//   hello  (rank r -> rank 0): the 8 bytes "SFRDZV01", rank, world_size
//   answer (rank 0 -> rank r): status (0 ok, 1 refused), length, `length` bytes: the blob, or
//                              for a refusal the reason, which rank r reports as its error.
// Every socket is non-blocking and every wait is a poll() bounded by the rendezvous deadline, so
// nothing here can hang past SF_DIST_INIT_TIMEOUT (a connect() to a host that drops packets
// included).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

#include "core/error.h"
#include "distributed/rendezvous.h"

namespace sf {

namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

constexpr std::array<char, 8> kHelloMagic = {'S', 'F', 'R', 'D', 'Z', 'V', '0', '1'};
constexpr uint32_t kStatusOk = 0;
constexpr uint32_t kStatusRefused = 1;
constexpr uint32_t kMaxBlobBytes = 1 << 20;  // an NCCL id is 128 bytes; anything huge is garbage
// A peer that connected gets this long (at most) to say hello, so a stray connection cannot
// hold rank 0 up for the whole rendezvous.
constexpr std::chrono::seconds kPeerGrace{5};
constexpr std::chrono::milliseconds kRetryPause{100};

// A transient failure of one connection (refused, reset, closed early, timed out): the client
// retries, the server drops that connection. Never escapes this file.
struct ConnectionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string errno_text(int err) { return std::strerror(err); }

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    throw ConnectionError("fcntl(O_NONBLOCK): " + errno_text(errno));
}

int millis_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

// Waits until `fd` is ready for `events`; false on timeout.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, millis_until(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw ConnectionError("poll: " + errno_text(errno));
  }
}

void send_all(int fd, const void* data, size_t bytes, Clock::time_point deadline) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_ready(fd, POLLOUT, deadline)) throw ConnectionError("timed out sending");
    } else {
      throw ConnectionError("send: " + errno_text(errno));
    }
  }
}

void recv_all(int fd, void* data, size_t bytes, Clock::time_point deadline) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
    } else if (n == 0) {
      throw ConnectionError("the peer closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!wait_ready(fd, POLLIN, deadline))
        throw ConnectionError("timed out waiting for an answer");
    } else {
      throw ConnectionError("recv: " + errno_text(errno));
    }
  }
}

void send_u32(int fd, uint32_t value, Clock::time_point deadline) {
  const uint32_t wire = htonl(value);
  send_all(fd, &wire, sizeof wire, deadline);
}

uint32_t recv_u32(int fd, Clock::time_point deadline) {
  uint32_t wire = 0;
  recv_all(fd, &wire, sizeof wire, deadline);
  return ntohl(wire);
}

void send_answer(int fd, uint32_t status, const std::string& payload, Clock::time_point deadline) {
  send_u32(fd, status, deadline);
  send_u32(fd, static_cast<uint32_t>(payload.size()), deadline);
  send_all(fd, payload.data(), payload.size(), deadline);
}

// ---- rank 0 -----------------------------------------------------------------------------------

// A listening socket on `port` on every interface: IPv6 accepting IPv4 too where the host has
// IPv6, plain IPv4 otherwise.
Socket listen_on(int port, int backlog) {
  std::string why;
  for (const int family : {AF_INET6, AF_INET}) {
    Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.fd() < 0) {
      why = "socket: " + errno_text(errno);
      continue;
    }
    const int on = 1, off = 0;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // restart over TIME_WAIT
    int rc;
    if (family == AF_INET6) {
      ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
      sockaddr_in6 addr{};
      addr.sin6_family = AF_INET6;
      addr.sin6_addr = in6addr_any;
      addr.sin6_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } else {
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
      addr.sin_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    }
    if (rc != 0) {
      if (errno == EADDRINUSE)
        fail(fmt::format("rendezvous: rank 0 cannot listen on MASTER_PORT={}: the port is already "
                         "in use on this host (another job?); choose another MASTER_PORT",
                         port));
      why = "bind: " + errno_text(errno);
      continue;
    }
    if (::listen(s.fd(), backlog) != 0) {
      why = "listen: " + errno_text(errno);
      continue;
    }
    set_nonblocking(s.fd());
    return s;
  }
  fail(fmt::format("rendezvous: rank 0 cannot listen on MASTER_PORT={} ({})", port, why));
}

std::string missing_ranks(int world_size, const std::set<int>& served) {
  std::string list;
  for (int r = 1; r < world_size; ++r)
    if (!served.count(r)) list += (list.empty() ? "" : ", ") + std::to_string(r);
  return list;
}

std::string serve(const DistEnv& env, const std::string& blob) {
  SF_CHECK(blob.size() <= kMaxBlobBytes, "rendezvous: a blob of {} bytes is too large",
           blob.size());
  const Socket listener = listen_on(env.master_port, std::min(env.world_size, 4096));
  const auto deadline = deadline_after(env.init_timeout_s);
  std::set<int> served;
  while (static_cast<int>(served.size()) < env.world_size - 1) {
    if (!wait_ready(listener.fd(), POLLIN, deadline))
      fail(fmt::format("rendezvous: rank 0 (listening on port {}) waited {} s but rank(s) {} of "
                       "WORLD_SIZE={} never connected; were they started, with MASTER_ADDR naming "
                       "this host and MASTER_PORT={}? (SF_DIST_INIT_TIMEOUT sets the wait)",
                       env.master_port, env.init_timeout_s, missing_ranks(env.world_size, served),
                       env.world_size, env.master_port));
    Socket peer(::accept4(listener.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (peer.fd() < 0) continue;  // e.g. the peer gave up between poll and accept
    const auto peer_deadline = std::min(deadline, Clock::now() + kPeerGrace);
    try {
      std::array<char, 8> magic{};
      recv_all(peer.fd(), magic.data(), magic.size(), peer_deadline);
      if (magic != kHelloMagic) continue;  // not one of ours: ignore it
      const uint32_t rank = recv_u32(peer.fd(), peer_deadline);
      const uint32_t world = recv_u32(peer.fd(), peer_deadline);
      std::string refusal;
      if (world != static_cast<uint32_t>(env.world_size))
        refusal = fmt::format("rank {} has WORLD_SIZE={} but rank 0 has WORLD_SIZE={}; every rank "
                              "of a job needs the same WORLD_SIZE",
                              rank, world, env.world_size);
      else if (rank == 0 || rank >= world)
        refusal = fmt::format("a process claiming RANK={} connected to rank 0 (WORLD_SIZE={}); "
                              "ranks other than 0 must be in 1..{}",
                              rank, env.world_size, env.world_size - 1);
      if (!refusal.empty()) {
        send_answer(peer.fd(), kStatusRefused, refusal, peer_deadline);
        fail("rendezvous: " + refusal);
      }
      // A rank that asks twice (its first answer got lost) simply gets the blob again.
      send_answer(peer.fd(), kStatusOk, blob, peer_deadline);
      served.insert(static_cast<int>(rank));
    } catch (const ConnectionError&) {
      // A broken or stray connection: a rank that did not get its answer will connect again.
    }
  }
  return blob;
}

// ---- ranks 1.. --------------------------------------------------------------------------------

struct AddrinfoFree {
  void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};
using Addresses = std::unique_ptr<addrinfo, AddrinfoFree>;

// Resolves MASTER_ADDR. A name that does not exist is an error at once; a temporary resolver
// failure is retried like a refused connection.
Addresses resolve(const DistEnv& env) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const std::string port = std::to_string(env.master_port);
  const int rc = ::getaddrinfo(env.master_addr.c_str(), port.c_str(), &hints, &result);
  if (rc == EAI_AGAIN) throw ConnectionError(fmt::format("resolving: {}", ::gai_strerror(rc)));
  if (rc != 0)
    fail(fmt::format("rendezvous: MASTER_ADDR={} does not resolve to an address ({})",
                     env.master_addr, ::gai_strerror(rc)));
  return Addresses(result);
}

Socket connect_to(const addrinfo& ai, Clock::time_point deadline) {
  Socket s(::socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC, ai.ai_protocol));
  if (s.fd() < 0) throw ConnectionError("socket: " + errno_text(errno));
  set_nonblocking(s.fd());
  if (::connect(s.fd(), ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) throw ConnectionError("connect: " + errno_text(errno));
    if (!wait_ready(s.fd(), POLLOUT, deadline)) throw ConnectionError("connect: timed out");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) throw ConnectionError("connect: " + errno_text(err));
  }
  return s;
}

// One attempt at every address of MASTER_ADDR; the blob, or a ConnectionError.
std::string fetch_once(const DistEnv& env, Clock::time_point deadline) {
  const Addresses addresses = resolve(env);
  std::string last_error = "no address";
  for (const addrinfo* ai = addresses.get(); ai != nullptr; ai = ai->ai_next) {
    uint32_t status = kStatusOk;
    std::string payload;
    try {
      const Socket s = connect_to(*ai, deadline);
      send_all(s.fd(), kHelloMagic.data(), kHelloMagic.size(), deadline);
      send_u32(s.fd(), static_cast<uint32_t>(env.rank), deadline);
      send_u32(s.fd(), static_cast<uint32_t>(env.world_size), deadline);
      status = recv_u32(s.fd(), deadline);
      const uint32_t length = recv_u32(s.fd(), deadline);
      if (length > kMaxBlobBytes || (status != kStatusOk && status != kStatusRefused))
        throw ConnectionError("the answer is not from a stagformer rank 0");
      payload.resize(length);
      recv_all(s.fd(), payload.data(), length, deadline);
    } catch (const ConnectionError& e) {
      last_error = e.what();
      continue;
    }
    if (status == kStatusRefused) fail("rendezvous: rank 0 refused this rank: " + payload);
    return payload;
  }
  throw ConnectionError(last_error);
}

std::string fetch(const DistEnv& env) {
  const auto deadline = deadline_after(env.init_timeout_s);
  std::string last_error;
  while (Clock::now() < deadline) {
    try {
      return fetch_once(env, deadline);
    } catch (const ConnectionError& e) {
      last_error = e.what();
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(kRetryPause, deadline - Clock::now()));
  }
  fail(fmt::format("rendezvous: rank {} could not reach rank 0 at MASTER_ADDR={} MASTER_PORT={} "
                   "within {} s (last error: {}); is rank 0 running, and is the port reachable "
                   "from this host? (SF_DIST_INIT_TIMEOUT sets the wait)",
                   env.rank, env.master_addr, env.master_port, env.init_timeout_s,
                   last_error.empty() ? "none" : last_error));
}

}  // namespace

std::string rendezvous_share_tcp(const DistEnv& env, const std::string& root_bytes) {
  if (!env.distributed()) return root_bytes;
  return env.rank == 0 ? serve(env, root_bytes) : fetch(env);
}

}  // namespace sf
