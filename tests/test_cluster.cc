#include "tests/test_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/test_netns.h"

namespace quorumfs {
namespace testing {
namespace {

bool ConnectHere(const std::string& host, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Whether host:port accepts a connection, tried from inside network namespace `netns` (a
// forked child enters it) when one is given.
bool CanConnect(const std::string& host, int port, const std::string& netns) {
  if (netns.empty()) return ConnectHere(host, port);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!EnterNetns(netns)) ::_exit(2);
    ::_exit(ConnectHere(host, port) ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

pid_t Spawn(const std::vector<std::string>& args, const std::string& log,
            const std::string& netns = "") {
  pid_t pid = ::fork();
  if (pid == 0) {
    // Die with the test, and do not hold the test's descriptors (a FUSE fd kept open by a
    // server would keep a mount busy).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!netns.empty() && !EnterNetns(netns)) ::_exit(125);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    for (int i = 3; i < 4096; ++i) ::close(i);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

int PickFreePort() {
  // The kernel may hand the same ephemeral port out again once its socket is closed (a CI run
  // got two nodes on one port): never return a port this process returned before.
  static std::mutex mu;
  static std::set<int> given;
  std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0;; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    int port = ntohs(addr.sin_port);
    if (port != 0 && given.insert(port).second) return port;
    if (attempt >= 1000) {
      ADD_FAILURE() << "no fresh loopback port after 1000 tries";
      return port;
    }
  }
}

TestCluster::TestCluster(TestClusterOptions options) : options_(options) {
  char tmpl[] = "/tmp/quorumfs-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  cluster_file_ = dir_ + "/cluster.conf";
  std::ostringstream conf;
  conf << "epoch = " << options.epoch << "\nreplicas = " << options.replicas
       << "\nwrite_quorum = " << options.write_quorum << "\nread_quorum = " << options.read_quorum
       << "\n";
  if (options.chunk_size) conf << "chunk_size = " << options.chunk_size << "\n";
  for (int i = 0; i < options.nodes; ++i) {
    ports_.push_back(options.hosts.empty() ? PickFreePort() : 7100);
    conf << "node " << node_id(i) << " " << host(i) << ":" << ports_.back() << "\n";
  }
  std::ofstream(cluster_file_) << conf.str();
  auto parsed = ClusterConfig::Parse(conf.str(), cluster_file_);
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  config_ = std::make_shared<const ClusterConfig>(parsed.value());
  pids_.assign(options.nodes, -1);
  if (options.start) {
    for (int i = 0; i < options.nodes; ++i) Start(i);
  }
}

TestCluster::~TestCluster() {
  for (size_t i = 0; i < pids_.size(); ++i) {
    if (pids_[i] > 0) Kill(static_cast<int>(i));
  }
  if (!::testing::Test::HasFailure() || !std::getenv("QUORUMFS_KEEP_TEST_DIRS")) {
    std::string cmd = "rm -rf '" + dir_ + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir_.c_str());
  }
}

std::string TestCluster::node_id(int i) const { return std::string(1, static_cast<char>('a' + i)); }

std::string TestCluster::host(int i) const {
  return i < static_cast<int>(options_.hosts.size()) ? options_.hosts[i] : "127.0.0.1";
}

std::string TestCluster::netns(int i) const {
  return i < static_cast<int>(options_.netns.size()) ? options_.netns[i] : "";
}

std::string TestCluster::data_dir(int i) const { return dir_ + "/" + node_id(i); }

std::string TestCluster::Log(int i) const {
  std::ifstream in(dir_ + "/" + node_id(i) + ".log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void TestCluster::Start(int i, bool rejoin) {
  ASSERT_LE(pids_[i], 0) << "node " << node_id(i) << " already running";
  std::vector<std::string> args = {QUORUMFS_CHUNKSERVER_BIN,
                                   "--id",
                                   node_id(i),
                                   "--data",
                                   data_dir(i),
                                   "--cluster",
                                   cluster_file_};
  if (rejoin) args.push_back("--rejoin");
  args.insert(args.end(), options_.server_args.begin(), options_.server_args.end());
  for (int attempt = 0; attempt < 3; ++attempt) {
    pids_[i] = Spawn(args, dir_ + "/" + node_id(i) + ".log", netns(i));
    for (int t = 0; t < 500; ++t) {
      if (CanConnect(host(i), ports_[i], netns(i))) return;
      int status;
      if (::waitpid(pids_[i], &status, WNOHANG) == pids_[i]) {
        pids_[i] = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pids_[i] > 0) break;
    // The port may have been taken by someone else meanwhile (or the previous process of this
    // node is still releasing its lock): retry.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GT(pids_[i], 0) << "node " << node_id(i) << " did not start:\n" << Log(i);
  ASSERT_TRUE(CanConnect(host(i), ports_[i], netns(i)))
      << "node " << node_id(i) << " not listening:\n"
      << Log(i);
}

void TestCluster::Kill(int i) {
  if (pids_[i] <= 0) return;
  ::kill(pids_[i], SIGKILL);
  int status;
  ::waitpid(pids_[i], &status, 0);
  pids_[i] = -1;
}

int TestCluster::Terminate(int i) {
  if (pids_[i] <= 0) return -1;
  ::kill(pids_[i], SIGTERM);
  int status = 0;
  ::waitpid(pids_[i], &status, 0);
  pids_[i] = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::pair<int, std::string> TestCluster::RunOnce(const std::vector<std::string>& args) {
  std::vector<std::string> full = {QUORUMFS_CHUNKSERVER_BIN};
  full.insert(full.end(), args.begin(), args.end());
  std::string log = dir_ + "/runonce.log";
  ::unlink(log.c_str());
  pid_t pid = Spawn(full, log);
  int status = 0;
  for (int t = 0; t < 500; ++t) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      std::ifstream in(log);
      std::stringstream ss;
      ss << in.rdbuf();
      return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return {-1, "did not exit within 5 s"};
}

std::shared_ptr<const ClusterConfig> TestCluster::ConfigWithEpoch(uint64_t epoch) const {
  ClusterConfig c = *config_;
  c.epoch = epoch;
  return std::make_shared<const ClusterConfig>(c);
}

int TestCluster::AddNode() {
  ports_.push_back(PickFreePort());
  pids_.push_back(-1);
  return nodes() - 1;
}

std::string TestCluster::NodeLine(int i) const {
  return "node " + node_id(i) + " " + host(i) + ":" + std::to_string(ports_[i]);
}

void TestCluster::Reconfigure(const std::string& text) {
  auto parsed = ClusterConfig::Parse(text, cluster_file_);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  for (int i = 0; i < nodes(); ++i) {
    if (Running(i)) {
      EXPECT_EQ(Terminate(i), 0) << Log(i);
    }
  }
  std::ofstream(cluster_file_) << text;
  config_ = std::make_shared<const ClusterConfig>(parsed.value());
  for (int i = 0; i < nodes(); ++i) {
    if (config_->FindNode(node_id(i))) Start(i);
  }
}

std::string MountTmpfs(const std::string& dir, const std::string& size) {
  static bool private_ns = false;
  if (!private_ns) {
    if (::unshare(CLONE_NEWNS) != 0) return std::string("unshare: ") + std::strerror(errno);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return std::string("make / private: ") + std::strerror(errno);
    }
    private_ns = true;
  }
  std::string options = "size=" + size;
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) != 0) {
    return "mount tmpfs on " + dir + ": " + std::strerror(errno);
  }
  return "";
}

TmpfsDisks::~TmpfsDisks() {
  for (const auto& d : dirs) ::umount2(d.c_str(), MNT_DETACH);
}

void StartOnTmpfs(TestCluster& cluster, const std::string& size, TmpfsDisks* disks) {
  for (int i = 0; i < cluster.nodes(); ++i) {
    std::string d = cluster.data_dir(i);
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0) << d << ": " << std::strerror(errno);
    ASSERT_EQ(MountTmpfs(d, size), "");
    disks->dirs.push_back(d);
  }
  for (int i = 0; i < cluster.nodes(); ++i) ASSERT_NO_FATAL_FAILURE(cluster.Start(i));
}

void FillWithBallast(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::string zeros(4096, '\0');
  while (::write(fd, zeros.data(), zeros.size()) > 0) {
  }
  ::close(fd);
}

}  // namespace testing
}  // namespace quorumfs
