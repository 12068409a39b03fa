// rendezvous_test.cpp — the data-parallel launch environment and the rendezvous (CPU only):
// every bad variable named with its value; rank 0's blob reaching every rank of forked
// processes over TCP and through a shared file; timeouts that name the address or file and
// fire quickly; mismatched WORLD_SIZE, stale files, busy ports and stray connections.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "distributed/rendezvous.h"
#include "support/free_port.h"
#include "support/test_util.h"

namespace sf {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

DistEnv env_from(const std::map<std::string, std::string>& vars) {
  return dist_env_parse([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(DistEnv, UnsetMeansOneProcess) {
  const DistEnv env = env_from({});
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.rank, 0);
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(rendezvous_share(env, "id"), "id");
}

TEST(DistEnv, ReadsTorchrunVariables) {
  const DistEnv env = env_from({{"WORLD_SIZE", "8"}, {"RANK", "5"}, {"LOCAL_RANK", "1"},
                                {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"},
                                {"SF_DIST_INIT_TIMEOUT", "0.5"}, {"SF_DIST_TIMEOUT", "60"}});
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node0");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_DOUBLE_EQ(env.init_timeout_s, 0.5);
  EXPECT_DOUBLE_EQ(env.op_timeout_s, 60);
  EXPECT_EQ(dist_env_describe(env), "rank 5 of 8 (local rank 1), rendezvous tcp://node0:29500");
}

TEST(DistEnv, AnInitFileReplacesMasterAddrAndPort) {
  const DistEnv env = env_from({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"LOCAL_RANK", "1"},
                                {"SF_DIST_INIT_FILE", "/shared/job42.init"}});
  EXPECT_EQ(env.init_file, "/shared/job42.init");
  EXPECT_NE(dist_env_describe(env).find("file /shared/job42.init"), std::string::npos);
}

TEST(DistEnv, NamesEveryBadVariableWithItsValue) {
  test::expect_error(
      [] {
        env_from({{"WORLD_SIZE", "2"}, {"RANK", "two"}, {"LOCAL_RANK", "-1"},
                  {"MASTER_PORT", "70000"}, {"SF_DIST_TIMEOUT", "soon"}});
      },
      {"invalid data-parallel environment", "RANK='two' is not an integer", "LOCAL_RANK=-1",
       "MASTER_PORT=70000 is out of range", "MASTER_ADDR is not set", "SF_DIST_TIMEOUT='soon'"});
  test::expect_error([] { env_from({{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"LOCAL_RANK", "0"},
                                    {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}); },
                     {"RANK=2 is not below WORLD_SIZE=2"});
  test::expect_error([] { env_from({{"WORLD_SIZE", "abc"}}); },
                     {"WORLD_SIZE='abc' is not an integer"});
  test::expect_error([] { env_from({{"WORLD_SIZE", "0"}}); }, {"WORLD_SIZE=0 is out of range"});
  test::expect_error([] { env_from({{"RANK", "3"}}); }, {"RANK=3 is set but WORLD_SIZE is not"});
  test::expect_error([] { env_from({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}); },
                     {"RANK is not set", "LOCAL_RANK is not set"});
  test::expect_error([] { env_from({{"SF_DIST_INIT_TIMEOUT", "-1"}}); },
                     {"SF_DIST_INIT_TIMEOUT='-1' is not a positive number of seconds"});
}

// ---- forked ranks ------------------------------------------------------------------------------

// A rank running in a child process; its result comes back through a pipe as "OK<blob>" or
// "ERR<message>".
struct ChildRank {
  pid_t pid;
  int read_fd;
};

ChildRank start_rank(const std::function<std::string()>& exchange) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    try {
      out = "OK" + exchange();
    } catch (const std::exception& e) {
      out = std::string("ERR") + e.what();
    }
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

std::string finish_rank(const ChildRank& child) {
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(child.read_fd, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<size_t>(n));
  ::close(child.read_fd);
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return out;
}

// 128 bytes, like an NCCL unique id, with zeros and high bytes in it.
std::string id_blob() {
  std::string blob(128, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 37 + 11) % 256);
  blob[5] = '\0';
  return blob;
}

DistEnv tcp_env(int rank, int world, int port, double timeout_s = 20) {
  DistEnv env;
  env.rank = rank;
  env.world_size = world;
  env.local_rank = rank;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  env.init_timeout_s = timeout_s;
  return env;
}

DistEnv file_env(int rank, int world, const std::string& path, double timeout_s = 20) {
  DistEnv env = tcp_env(rank, world, 0, timeout_s);
  env.init_file = path;
  return env;
}

TEST(Rendezvous, TcpGivesEveryRankTheRootBlob) {
  const int port = test::free_tcp_port();
  const std::string blob = id_blob();
  std::vector<ChildRank> ranks;
  // The others start first: they must keep retrying until rank 0 listens.
  for (int r = 1; r < 3; ++r)
    ranks.push_back(start_rank([=] {
      DistEnv env = tcp_env(r, 3, port);
      env.master_addr = "localhost";  // may resolve to ::1 first: rank 0 listens on both
      return rendezvous_share(env, "");
    }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ranks.insert(ranks.begin(), start_rank([=] { return rendezvous_share(tcp_env(0, 3, port), blob); }));
  for (size_t r = 0; r < ranks.size(); ++r) EXPECT_EQ(finish_rank(ranks[r]), "OK" + blob) << "rank " << r;
}

TEST(Rendezvous, FileGivesEveryRankTheRootBlob) {
  const std::string dir = test::fresh_temp_dir("rendezvous_file");
  const std::string path = dir + "/job.init";
  const std::string blob = id_blob();
  std::vector<ChildRank> ranks;
  for (int r = 1; r < 3; ++r)
    ranks.push_back(start_rank([=] { return rendezvous_share(file_env(r, 3, path), ""); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ranks.insert(ranks.begin(), start_rank([=] { return rendezvous_share(file_env(0, 3, path), blob); }));
  for (size_t r = 0; r < ranks.size(); ++r) EXPECT_EQ(finish_rank(ranks[r]), "OK" + blob) << "rank " << r;
  // Nothing is left behind for the next job.
  EXPECT_TRUE(fs::is_empty(dir)) << fs::directory_iterator(dir)->path();
}

TEST(Rendezvous, TcpTimeoutNamesTheAddressAndFiresQuickly) {
  const int port = test::free_tcp_port();  // nobody listens there
  const auto t0 = Clock::now();
  test::expect_error([&] { rendezvous_share(tcp_env(1, 2, port, 0.5), ""); },
                     {"rank 1 could not reach rank 0", "MASTER_ADDR=127.0.0.1",
                      "MASTER_PORT=" + std::to_string(port), "within 0.5 s", "SF_DIST_INIT_TIMEOUT"});
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
}

TEST(Rendezvous, RankZeroNamesTheRanksThatNeverCame) {
  const auto t0 = Clock::now();
  test::expect_error([&] { rendezvous_share(tcp_env(0, 3, test::free_tcp_port(), 0.3), "x"); },
                     {"rank(s) 1, 2 of WORLD_SIZE=3 never connected"});
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
}

TEST(Rendezvous, MismatchedWorldSizeFailsBothSides) {
  const int port = test::free_tcp_port();
  const ChildRank root = start_rank([=] { return rendezvous_share(tcp_env(0, 2, port), "id"); });
  test::expect_error([&] { rendezvous_share(tcp_env(1, 3, port), ""); },
                     {"rank 0 refused", "rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2"});
  const std::string root_result = finish_rank(root);
  EXPECT_NE(root_result.find("ERR"), std::string::npos) << root_result;
  EXPECT_NE(root_result.find("WORLD_SIZE=3"), std::string::npos) << root_result;
}

TEST(Rendezvous, AStrayConnectionIsIgnored) {
  const int port = test::free_tcp_port();
  const ChildRank root = start_rank([=] { return rendezvous_share(tcp_env(0, 2, port), "the id"); });
  // A client that does not speak the protocol (a port scanner, a browser) connects first.
  bool sent = false;
  for (int attempt = 0; attempt < 100 && !sent; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const char request[] = "GET / HTTP/1.0\r\n\r\n";
      sent = ::send(fd, request, sizeof request - 1, 0) > 0;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::close(fd);
  }
  ASSERT_TRUE(sent);
  EXPECT_EQ(rendezvous_share(tcp_env(1, 2, port), ""), "the id");
  EXPECT_EQ(finish_rank(root), "OKthe id");
}

TEST(Rendezvous, ABusyPortIsNamed) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  test::expect_error([&] { rendezvous_share(tcp_env(0, 2, port, 0.5), "x"); },
                     {"MASTER_PORT=" + std::to_string(port), "already in use"});
  ::close(fd);
}

TEST(Rendezvous, FileProblemsAreNamed) {
  const std::string dir = test::fresh_temp_dir("rendezvous_file_errors");
  const std::string path = dir + "/job.init";
  // A rank waiting for a file that never comes.
  const auto t0 = Clock::now();
  test::expect_error([&] { rendezvous_share(file_env(1, 2, path, 0.3), ""); },
                     {"rank 1 waited 0.3 s for SF_DIST_INIT_FILE=" + path});
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
  // Rank 0 alone: names the rank that never read the file, and removes it.
  test::expect_error([&] { rendezvous_share(file_env(0, 2, path, 0.3), "x"); },
                     {"rank(s) 1 of WORLD_SIZE=2 did not read it"});
  EXPECT_FALSE(fs::exists(path));
  // A leftover file: rank 0 refuses it, the others refuse what is not ours.
  std::ofstream(path) << "something else\n";
  test::expect_error([&] { rendezvous_share(file_env(0, 2, path), "x"); },
                     {"SF_DIST_INIT_FILE=" + path + " already exists"});
  test::expect_error([&] { rendezvous_share(file_env(1, 2, path), ""); },
                     {path, "is not a stagformer rendezvous file"});
  // A file written for another WORLD_SIZE.
  std::ofstream(path, std::ios::trunc) << "stagformer-dist-init 1\nworld_size 4\nblob 00ff\n";
  test::expect_error([&] { rendezvous_share(file_env(1, 2, path), ""); },
                     {"WORLD_SIZE=4 but this rank has WORLD_SIZE=2"});
}

}  // namespace
}  // namespace sf
