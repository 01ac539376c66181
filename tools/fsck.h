// `quorumfs fsck`: checks the cluster and, with --repair, heals what failures left behind
// (DESIGN.md, "fsck"). Talks to the cluster only through common/ (ClusterClient, Namespace).
//
// Exit codes as fsck(8): 0 no errors, 1 errors found and all corrected, 4 errors left
// uncorrected, 8 operational error (cluster file unreadable, no quorum reachable).
#pragma once

#include <cstdint>
#include <string>

namespace quorumfs {

struct FsckOptions {
  std::string cluster_file;
  bool repair = false;
  bool gc = false;
  bool deep = false;
  bool rebalance = false;
  bool json = false;
  std::string path = "/";
  int jobs = 16;
  double grace_s = 86400;
  // The operator confirms no mount is writing, which allows a --grace below kMinGcGraceNs
  // (common/gc_rules.h): mounts refresh only chunks older than half of that.
  bool no_writers = false;
  // With --repair: also drop record copies outside their replica sets that no replica holds as
  // new (README, "Record copies outside their replica sets are dropped").
  bool drop_stale_copies = false;
  double timeout_s = 10;
  // How long a directory must have been unchanged before --repair rewrites its counts; 0: the
  // birth grace plus twice the skew bound (62 s), which no create or unlink outlasts between
  // its two rounds without giving up its second.
  double recount_quiet_s = 0;
};

int RunFsck(const FsckOptions& options);

}  // namespace quorumfs
