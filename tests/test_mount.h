// TestMount: a real quorumfs-mount process (FUSE, foreground) on a directory, for the FUSE
// tests. The destructor always tears it down: lazy unmount, abort the FUSE connection if the
// daemon does not exit, SIGKILL, reap. FUSE test binaries run inside their own mount namespace
// (`unshare -m --propagation private`, see tests/CMakeLists.txt), so even a crashed test leaves
// no mount behind on the host.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/test_cluster.h"
#include "tests/test_netns.h"

namespace quorumfs {
namespace testing {

// Whether this process can mount FUSE file systems; if not, `*why` says why (for GTEST_SKIP).
bool FuseAvailable(std::string* why);

// GTEST_SKIP()s the current test (or suite, in SetUpTestSuite) when FUSE is unavailable.
#define QUORUMFS_REQUIRE_FUSE()                            \
  do {                                                     \
    std::string fuse_why_;                                 \
    if (!::quorumfs::testing::FuseAvailable(&fuse_why_)) { \
      GTEST_SKIP() << "FUSE tests skipped: " << fuse_why_; \
    }                                                      \
  } while (0)

struct TestMountOptions {
  double op_timeout = 10;               // -o op_timeout=
  std::vector<std::string> extra_opts;  // more -o options, e.g. "attr_timeout=0"
  double start_timeout = 20;            // s to wait for the mount to appear
  std::string netns;  // run the daemon in this network namespace (tests/test_netns.h)
};

class TestMount {
 public:
  // Mounts the cluster described by `cluster_file` at `dir` (created if missing). Failures are
  // reported with ADD_FAILURE; check ok() (or use ASSERT_TRUE(m.ok())).
  TestMount(std::string cluster_file, std::string dir, TestMountOptions options = {});
  ~TestMount();
  TestMount(const TestMount&) = delete;
  TestMount& operator=(const TestMount&) = delete;

  bool ok() const { return pid_ > 0 && mounted_; }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }
  pid_t pid() const { return pid_; }
  std::string Log() const;  // the daemon's stdout and stderr so far

  // SIGKILL the daemon (no flush), then abort its connection and unmount lazily.
  void Kill();
  // Unmounts (gracefully when the daemon still runs) and mounts again on the same directory.
  bool Remount();
  // Unmounts and stops the daemon; safe to call twice.
  void Stop();
  // Waits up to `seconds` for the daemon to exit by itself (after SIGTERM or an unmount); true
  // if it did, with status 0.
  bool WaitCleanExit(double seconds);
  // Unmounts lazily and waits for the daemon to exit by itself (WaitCleanExit); whatever is left
  // is torn down as Stop does.
  bool UnmountAndWait(double seconds);

 private:
  bool Start();
  bool FindInMountinfo(int* minor_out) const;
  void AbortConnection();
  void LazyUnmount();
  bool WaitExit(double seconds);

  std::string cluster_file_;
  std::string dir_;
  std::string log_;
  TestMountOptions options_;
  pid_t pid_ = -1;
  int exit_status_ = -1;  // waitpid status of the last daemon reaped
  bool mounted_ = false;
  int minor_ = -1;  // the FUSE connection id (device minor of the mount)
};

// Partition tests: a cluster of `servers` nodes, node i in `lab`'s server namespace i, and one
// mount (op_timeout=3, and `extra_opts`) per lab client, in that client's namespace, at
// <cluster dir>/m<c>. Stops at the first mount that does not come up (ADD_FAILURE); check every
// mount's ok().
void StartLabCluster(NetLab& lab, int servers, int clients, std::unique_ptr<TestCluster>* cluster,
                     std::vector<std::unique_ptr<TestMount>>* mounts,
                     std::vector<std::string> extra_opts = {});

}  // namespace testing
}  // namespace quorumfs
