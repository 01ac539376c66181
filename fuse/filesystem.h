// QuorumFs: the FUSE low-level file system (DESIGN.md, "The mount"). FUSE worker threads queue
// each request on the client's event-loop thread (Submit); everything else, replies included,
// happens on that loop thread, which owns the cluster connections and the mount's state. A few
// requests are answered on the FUSE thread from small mirrors the loop thread keeps under
// mutexes: lookups from a fresh directory listing, cached xattrs, the close of a read-only
// descriptor, and writes into slots the mount already holds (queued for the loop thread, which
// applies them before it starts any other request).
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <kj/async.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/cluster_client.h"

namespace quorumfs {

struct MountOptions {
  std::string cluster_file = "/etc/quorumfs/cluster.conf";
  std::string mountpoint;
  bool foreground = false;
  bool debug = false;
  bool read_only = false;
  bool allow_other = false;
  double attr_timeout = 1.0;   // s, kernel attribute cache
  double entry_timeout = 1.0;  // s, kernel positive entry cache (missing names: negative_timeout)
  // s a lookup of a missing name may be answered from a listing of its directory's names that
  // old (after many misses there), so another mount's new name may take that long to show;
  // 0 (the default): every miss asks the cluster. As GlusterFS's negative-timeout.
  double negative_timeout = 0;
  uint64_t max_dirty = 256ull << 20;   // bytes of write-back data per mount
  uint64_t cache_size = 256ull << 20;  // bytes of verified chunks cached for reads
  double op_timeout = 10.0;            // s an operation waits for a quorum before EIO
  // ms a chunk read waits on one replica before it asks the next one too (0: never).
  double hedge_ms = 500;
  uint32_t read_ahead_kb = 4096;  // bdi read-ahead so reads arrive in large requests
  // Store SELinux labels (security.selinux). Off, as on GlusterFS: the attribute is refused
  // with EOPNOTSUPP, so `ls -l` asks for it once per mount, not once per file.
  bool selinux = false;
  // s a file lock outlives this mount without renewal (a crashed or cut-off mount's locks
  // free up this much, plus the clock-skew bound, after its last renewal).
  double lock_lease = 20.0;
};

class QuorumFs {
 public:
  QuorumFs(ClusterClient& client, MountOptions options);
  ~QuorumFs();

  static const fuse_lowlevel_ops& Ops();
  void set_session(fuse_session* se) { session_ = se; }

  // From any FUSE thread: queues `fn` on the loop thread and returns at once.
  void Submit(std::function<kj::Promise<void>()> fn);
  // Flushes every dirty file (SIGTERM, unmount). Blocks; not for FUSE threads.
  void FlushAllSync();
  // Releases every file lock this mount holds (unmount). Blocks; not for FUSE threads.
  void ReleaseLocksSync();
  // Empties the chunk read cache. Blocks briefly; not for FUSE threads.
  void DropCaches();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
  fuse_session* session_ = nullptr;
};

// Parses -o options into `options` (unknown ones are left in `rest` for libfuse).
Status ParseMountOptions(const std::string& opts, MountOptions* options, std::string* rest);

}  // namespace quorumfs
