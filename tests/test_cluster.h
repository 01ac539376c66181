// TestCluster: real quorumfs-chunkserver processes on ephemeral loopback ports in a temp dir,
// for integration tests. The destructor kills every process it started (SIGKILL) and removes
// the directory, so a failing test cleans up too.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/cluster_config.h"

namespace quorumfs {
namespace testing {

struct TestClusterOptions {
  int nodes = 3;
  int replicas = 3;
  int write_quorum = 2;
  int read_quorum = 2;
  uint64_t epoch = 1;
  bool start = true;                     // start every node in the constructor
  uint64_t chunk_size = 0;               // bytes; 0: the cluster file's default (1 MiB)
  std::vector<std::string> server_args;  // more arguments for every chunkserver
  // Partition tests (tests/test_netns.h): node i runs inside the network namespace netns[i]
  // and listens on hosts[i]:7100 there. Empty: every node on 127.0.0.1, ports picked.
  std::vector<std::string> netns;
  std::vector<std::string> hosts;
};

class TestCluster {
 public:
  explicit TestCluster(TestClusterOptions options = {});
  ~TestCluster();

  // Starts node i and waits until it accepts connections (fails the test otherwise).
  void Start(int i, bool rejoin = false);
  void Kill(int i);      // SIGKILL and reap
  int Terminate(int i);  // SIGTERM, reap, return the exit status (-1 if killed by a signal)
  bool Running(int i) const { return pids_[i] > 0; }
  pid_t pid(int i) const { return pids_[i]; }  // -1 when node i is not running

  // Runs the chunkserver with extra args and returns (exit code, stderr); for startup checks.
  std::pair<int, std::string> RunOnce(const std::vector<std::string>& args);

  std::shared_ptr<const ClusterConfig> config() const { return config_; }
  const std::string& dir() const { return dir_; }
  const std::string& cluster_file() const { return cluster_file_; }
  std::string data_dir(int i) const;
  std::string node_id(int i) const;
  int port(int i) const { return ports_[i]; }
  std::string host(int i) const;
  std::string Log(int i) const;

  // Writes a cluster file with a different epoch (for epoch-mismatch tests).
  std::shared_ptr<const ClusterConfig> ConfigWithEpoch(uint64_t epoch) const;

  // Membership changes. AddNode reserves node nodes() (id node_id(i), a fresh port, data dir
  // data_dir(i)) without starting it or touching the cluster file, and returns its index.
  int AddNode();
  int nodes() const { return static_cast<int>(ports_.size()); }
  // "node <id> 127.0.0.1:<port>" for the cluster file.
  std::string NodeLine(int i) const;
  // Replaces the cluster file with `text` (every node it names must be one of this cluster's),
  // stops every running node with SIGTERM, then starts every node the new file names.
  void Reconfigure(const std::string& text);

 private:
  std::string netns(int i) const;

  TestClusterOptions options_;
  std::string dir_;
  std::string cluster_file_;
  std::vector<int> ports_;
  std::vector<pid_t> pids_;
  std::shared_ptr<const ClusterConfig> config_;
};

// A port that was free a moment ago on 127.0.0.1.
int PickFreePort();

// Full-disk tests. Mounts a tmpfs of `size` (e.g. "4m") over the existing directory `dir`, in a
// mount namespace private to this process (entered on first use, so the mount never shows on
// the host and goes with the process); needs root. Returns "" or why it failed.
std::string MountTmpfs(const std::string& dir, const std::string& size);
// Writes zeros to a new file `path` until its file system is full (ENOSPC).
void FillWithBallast(const std::string& path);
// The tmpfs data dirs of a full-disk test's cluster, unmounted (lazily) when this goes.
struct TmpfsDisks {
  std::vector<std::string> dirs;
  ~TmpfsDisks();
};
// Makes each data dir of `cluster` (made with start = false) a tmpfs of `size`, recorded in
// *disks, and starts every node.
void StartOnTmpfs(TestCluster& cluster, const std::string& size, TmpfsDisks* disks);

// A server stopped (SIGSTOP) for the scope: its kernel still accepts connections and bytes, the
// process answers nothing. Thawed however the test ends.
class Frozen {
 public:
  explicit Frozen(pid_t pid) : pid_(pid), ok_(pid > 0 && ::kill(pid, SIGSTOP) == 0) {}
  ~Frozen() {
    if (ok_) ::kill(pid_, SIGCONT);
  }
  bool ok() const { return ok_; }

 private:
  pid_t pid_;
  bool ok_;
};

}  // namespace testing
}  // namespace quorumfs
