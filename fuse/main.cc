// quorumfs-mount (also installed as mount.quorumfs): mounts a quorumfs cluster.
//   quorumfs-mount --cluster FILE MOUNTPOINT [-f] [-d] [-o opt,...]
//   mount.quorumfs FILE MOUNTPOINT [-o opt,...]        (as called by mount(8) and fstab)
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/memory.h"
#include "fuse/filesystem.h"

namespace quorumfs {
namespace {

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: quorumfs-mount --cluster FILE MOUNTPOINT [-f] [-d] [-o opt,...]\n"
      "       mount.quorumfs FILE MOUNTPOINT [-o opt,...]\n"
      "\n"
      "options (-o):\n"
      "  attr_timeout=S     kernel attribute cache, seconds (default 1)\n"
      "  entry_timeout=S    kernel name cache, seconds (default 1); missing names are "
      "not cached\n"
      "  negative_timeout=S a miss in a directory with many misses may be answered from a\n"
      "                     listing of its names up to S old (default 0: never; at most\n"
      "                     3600), so another mount's new name may take S to show;\n"
      "                     faster creates\n"
      "  max_dirty=SIZE     write-back memory before writers wait (default 256M)\n"
      "  cache_size=SIZE    verified chunks cached for reads (default 256M)\n"
      "  op_timeout=S       how long an operation waits for a quorum before EIO "
      "(default 10)\n"
      "  hedge_ms=N         a chunk read asks the next replica too when the one it asked\n"
      "                     has not answered in N ms (default 500; 0: never)\n"
      "  read_ahead_kb=N    kernel read-ahead of the mount (default 4096)\n"
      "  lock_lease=S       fcntl/flock locks of a mount that stopped renewing them free\n"
      "                     up after this, seconds (default 20; at least 1)\n"
      "  selinux            store SELinux labels (security.selinux); without it the\n"
      "                     attribute is refused with EOPNOTSUPP, as on GlusterFS\n"
      "  ro, allow_other    as for any FUSE file system; default_permissions is always on\n"
      "                     (POSIX ACLs are not supported: their attributes are refused\n"
      "                     with EOPNOTSUPP)\n"
      "  _netdev, nofail, defaults, auto, noauto   accepted for /etc/fstab\n"
      "  -f                 stay in the foreground;  -d  debug (implies -f)\n");
}

// The mount whose chunk cache (and name listings) SIGUSR1 empties (null while none).
std::atomic<QuorumFs*> g_fs{nullptr};

// Raises the mount's read-ahead so sequential reads arrive as large requests.
void RaiseReadAhead(const std::string& mountpoint, uint32_t kb) {
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) != 0) return;
  std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                     std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  std::ofstream f(path);
  if (f) f << kb << "\n";
}

int Run(int argc, char** argv) {
  MountOptions options;
  std::string fuse_opts;
  std::vector<std::string> positional;
  std::string self = argv[0];
  bool helper = self.size() >= 14 && self.substr(self.size() - 14) == "mount.quorumfs";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    } else if (a == "--cluster" && i + 1 < argc) {
      options.cluster_file = argv[++i];
    } else if (a.rfind("--cluster=", 0) == 0) {
      options.cluster_file = a.substr(10);
    } else if (a == "-f") {
      options.foreground = true;
    } else if (a == "-d") {
      options.debug = options.foreground = true;
    } else if (a == "-o" && i + 1 < argc) {
      Status s = ParseMountOptions(argv[++i], &options, &fuse_opts);
      if (!s.ok()) {
        std::fprintf(stderr, "quorumfs-mount: %s\n", s.message().c_str());
        return 1;
      }
    } else if (a == "-s" || a == "-n" || a == "-v") {
      // mount(8) helper flags: sloppy, no mtab, verbose.
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "quorumfs-mount: unknown option %s\n", a.c_str());
      Usage(stderr);
      return 1;
    } else {
      positional.push_back(a);
    }
  }
  if (helper && positional.size() == 2) {
    options.cluster_file = positional[0];
    positional.erase(positional.begin());
  }
  if (positional.size() != 1) {
    Usage(stderr);
    return 1;
  }
  options.mountpoint = positional[0];

  auto config = ClusterConfig::Load(options.cluster_file);
  if (!config.ok()) {
    std::fprintf(stderr, "quorumfs-mount: %s\n", config.status().message().c_str());
    return 1;
  }

  std::vector<std::string> fargs = {"quorumfs-mount", "-o",
                                    "default_permissions,fsname=quorumfs,subtype=quorumfs"};
  if (!fuse_opts.empty()) fargs.insert(fargs.end(), {"-o", fuse_opts});
  if (options.debug) fargs.push_back("-d");
  std::vector<char*> cargs;
  for (auto& a : fargs) cargs.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(cargs.size()), cargs.data());
  QuorumFs* fs_slot = nullptr;  // filled in once the cluster client runs
  fuse_session* se = fuse_session_new(&args, &QuorumFs::Ops(), sizeof(fuse_lowlevel_ops), &fs_slot);
  if (!se) {
    std::fprintf(stderr, "quorumfs-mount: bad FUSE options\n");
    return 1;
  }
  if (fuse_set_signal_handlers(se) != 0) return 1;
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "quorumfs-mount: cannot mount at %s\n", options.mountpoint.c_str());
    fuse_session_destroy(se);
    return 1;
  }
  // Before any thread exists: daemonizing forks, and only the calling thread survives a fork.
  fuse_daemonize(options.foreground ? 1 : 0);
  // SIGUSR1 empties the chunk cache and drops the name listings (benchmarks measure cold
  // reads with it). Blocked here, before any thread starts, so only the thread below
  // receives it.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  ClusterClientOptions copts;
  auto op_timeout = static_cast<int64_t>(options.op_timeout * 1e9) * kj::NANOSECONDS;
  copts.proposer.op_timeout = op_timeout;
  copts.proposer.round_timeout = std::min(op_timeout / 2, 2 * kj::SECONDS);
  copts.rpc.call_timeout = std::min(op_timeout, 5 * kj::SECONDS);
  copts.rpc.connect_timeout = std::min(op_timeout / 2, 1 * kj::SECONDS);
  copts.rpc.log = [](const std::string& m) { LogLine("quorumfs-mount", m); };
  copts.chunks.hedge_after = static_cast<int64_t>(options.hedge_ms * 1e6) * kj::NANOSECONDS;
  // An operation that meets a transaction a crashed client left pending waits until anyone may
  // abort it (its deadline, plus the clock-skew bound): with a shorter wait it would fail
  // with EBUSY although the cluster is healthy, at the very moment the transaction expires.
  const int64_t txn_wait_ns =
      copts.ns.txn_timeout_ns + copts.ns.clock_skew_ns + int64_t{2'000'000'000};
  copts.ns.busy_timeout = std::max(op_timeout, txn_wait_ns * kj::NANOSECONDS);
  copts.ns.lock_lease_ns = static_cast<int64_t>(options.lock_lease * 1e9);
  auto shared = std::make_shared<const ClusterConfig>(std::move(config).value());
  int rc = 0;
  {
    ClusterClient client(shared, copts);
    QuorumFs fs(client, options);
    fs.set_session(se);
    fs_slot = &fs;
    auto root = client.RunSync<Result<Inode>>([&]() { return client.ns().EnsureRoot(); });
    if (!root.ok()) {
      std::fprintf(stderr, "quorumfs-mount: warning: cannot reach the root directory yet: %s\n",
                   root.status().ToString().c_str());
    }
    g_fs.store(&fs);
    std::thread([usr1]() {
      for (;;) {
        int sig = 0;
        if (sigwait(&usr1, &sig) != 0) return;
        if (QuorumFs* f = g_fs.load()) f->DropCaches();
      }
    }).detach();
    std::thread([mp = options.mountpoint, kb = options.read_ahead_kb]() {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      RaiseReadAhead(mp, kb);
    }).detach();
    fuse_loop_config loop_config;
    std::memset(&loop_config, 0, sizeof(loop_config));
    loop_config.clone_fd = 0;
    loop_config.max_idle_threads = 16;
    rc = fuse_session_loop_mt(se, &loop_config);
    // libfuse reports the termination signal that ended the loop as the loop's result: a
    // shutdown asked for, not a failure.
    if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP) rc = 0;
    // SIGTERM or unmount: publish what is still buffered before going away.
    fs.FlushAllSync();
    fs.ReleaseLocksSync();
    g_fs.store(nullptr);
    fs_slot = nullptr;
  }
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  return rc == 0 ? 0 : 1;
}

}  // namespace
}  // namespace quorumfs

int main(int argc, char** argv) {
  quorumfs::KeepLargeBuffersInHeap();
  return quorumfs::Run(argc, argv);
}
