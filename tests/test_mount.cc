#include "tests/test_mount.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/test_netns.h"

namespace quorumfs {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && s.size() - i > 3) {
      bool octal = true;
      int v = 0;
      for (size_t k = 1; k <= 3; ++k) {
        if (s[i + k] < '0' || s[i + k] > '7') octal = false;
        v = v * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

int RunCommand(const std::vector<std::string>& args) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid < 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

bool FuseAvailable(std::string* why) {
  struct stat st;
  if (::stat("/dev/fuse", &st) != 0) {
    *why = "/dev/fuse is missing (" + std::string(std::strerror(errno)) +
           "); run where the fuse module is loaded, e.g. a VM or a container with --device "
           "/dev/fuse";
    return false;
  }
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = "cannot open /dev/fuse: " + std::string(std::strerror(errno));
    return false;
  }
  ::close(fd);
  if (::geteuid() != 0 && ::access("/usr/bin/fusermount3", X_OK) != 0 &&
      ::access("/bin/fusermount3", X_OK) != 0) {
    *why = "not root and fusermount3 is not installed";
    return false;
  }
  return true;
}

TestMount::TestMount(std::string cluster_file, std::string dir, TestMountOptions options)
    : cluster_file_(std::move(cluster_file)), options_(std::move(options)) {
  ::mkdir(dir.c_str(), 0755);
  char real[PATH_MAX];
  dir_ = ::realpath(dir.c_str(), real) ? std::string(real) : dir;
  log_ = dir_ + ".mount.log";
  Start();
}

TestMount::~TestMount() { Stop(); }

std::string TestMount::Log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool TestMount::FindInMountinfo(int* minor_out) const {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  bool found = false;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::istringstream ls(line);
    std::string id, parent, dev, root, mp;
    if (!(ls >> id >> parent >> dev >> root >> mp)) continue;
    size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream rest(line.substr(sep + 3));
    std::string fstype;
    rest >> fstype;
    if (Unescape(mp) != dir_ || fstype.rfind("fuse", 0) != 0) continue;
    size_t colon = dev.find(':');
    if (colon == std::string::npos) continue;
    if (minor_out) *minor_out = std::atoi(dev.c_str() + colon + 1);
    found = true;  // keep going: the last one is the top of the stack
  }
  return found;
}

bool TestMount::Start() {
  mounted_ = false;
  std::string opts = "op_timeout=" + std::to_string(options_.op_timeout);
  for (const auto& o : options_.extra_opts) opts += "," + o;
  std::vector<std::string> args = {
      QUORUMFS_MOUNT_BIN, "--cluster", cluster_file_, dir_, "-f", "-o", opts};
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // If the test process dies (a timeout, a crash) the daemon goes with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (!options_.netns.empty() && !EnterNetns(options_.netns)) ::_exit(125);
    int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return false;
  }
  pid_ = pid;
  auto start = Clock::now();
  while (SecondsSince(start) < options_.start_timeout) {
    if (FindInMountinfo(&minor_)) {
      mounted_ = true;
      return true;
    }
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ADD_FAILURE() << "quorumfs-mount exited before mounting " << dir_ << " (status " << status
                    << "):\n"
                    << Log();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "quorumfs-mount did not mount " << dir_ << " within " << options_.start_timeout
                << " s:\n"
                << Log();
  Stop();
  return false;
}

void TestMount::AbortConnection() {
  if (minor_ < 0) return;
  std::string path = "/sys/fs/fuse/connections/" + std::to_string(minor_) + "/abort";
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;  // already gone
  if (::write(fd, "1", 1) < 0) {
  }
  ::close(fd);
}

void TestMount::LazyUnmount() {
  // Both ways, in case fusermount3 is missing or refuses: a lazy unmount never blocks.
  while (FindInMountinfo(nullptr)) {
    if (RunCommand({"fusermount3", "-u", "-z", dir_}) != 0 &&
        ::umount2(dir_.c_str(), MNT_DETACH) != 0) {
      break;
    }
  }
  mounted_ = false;
}

bool TestMount::WaitExit(double seconds) {
  if (pid_ <= 0) return true;
  auto start = Clock::now();
  while (true) {
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      exit_status_ = r == pid_ ? status : -1;
      pid_ = -1;
      return true;
    }
    if (SecondsSince(start) >= seconds) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void TestMount::Stop() {
  if (pid_ <= 0 && !mounted_ && !FindInMountinfo(nullptr)) return;
  // A lazy unmount detaches the mount at once; the daemon then flushes and exits by itself.
  LazyUnmount();
  if (!WaitExit(10)) {
    // Stuck (e.g. waiting for a quorum that never comes): say where, then abort the connection.
    std::fprintf(stderr, "quorumfs-mount (pid %d) did not exit 10 s after unmounting %s\n",
                 static_cast<int>(pid_), dir_.c_str());
    if (::access("/usr/bin/gdb", X_OK) == 0) {
      // Bounded: gdb inherits this process's descriptors, and one left open on the stopped
      // mount would hang gdb's own exit.
      std::string cmd = "timeout -s KILL 30 gdb -p " + std::to_string(pid_) +
                        " -batch -ex 'thread apply all bt' 2>/dev/null | grep -E '^(#|Thread)' "
                        "1>&2";
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "(no stacks)\n");
    }
    AbortConnection();
    if (!WaitExit(2)) {
      ::kill(pid_, SIGKILL);
      WaitExit(1e9);
    }
  }
  AbortConnection();
  LazyUnmount();
}

void TestMount::Kill() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    WaitExit(1e9);
  }
  AbortConnection();
  LazyUnmount();
}

bool TestMount::WaitCleanExit(double seconds) {
  if (pid_ <= 0) return false;
  return WaitExit(seconds) && exit_status_ != -1 && WIFEXITED(exit_status_) &&
         WEXITSTATUS(exit_status_) == 0;
}

bool TestMount::UnmountAndWait(double seconds) {
  if (pid_ <= 0) return false;
  LazyUnmount();
  bool clean = WaitCleanExit(seconds);
  Stop();
  return clean;
}

bool TestMount::Remount() {
  Stop();
  return Start();
}

void StartLabCluster(NetLab& lab, int servers, int clients, std::unique_ptr<TestCluster>* cluster,
                     std::vector<std::unique_ptr<TestMount>>* mounts,
                     std::vector<std::string> extra_opts) {
  TestClusterOptions co;
  for (int s = 0; s < servers; ++s) {
    co.netns.push_back(lab.server_ns(s));
    co.hosts.push_back(lab.server_host(s));
  }
  *cluster = std::make_unique<TestCluster>(co);
  for (int c = 0; c < clients; ++c) {
    TestMountOptions mo;
    mo.op_timeout = 3;
    mo.extra_opts = extra_opts;
    mo.netns = lab.client_ns(c);
    mounts->push_back(std::make_unique<TestMount>(
        (*cluster)->cluster_file(), (*cluster)->dir() + "/m" + std::to_string(c), mo));
    if (!mounts->back()->ok()) return;
  }
}

}  // namespace testing
}  // namespace quorumfs
