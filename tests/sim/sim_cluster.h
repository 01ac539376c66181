// Deterministic simulator for the metadata protocol (DESIGN.md, "Metadata", "Cluster
// configuration"). One simulated run drives the real AcceptorCore and Proposer code over a fake
// network and fake disks on one kj event loop whose clock is a kj::TimerImpl advanced by hand:
//
//  - Acceptor nodes keep their rows in a durable layer and a volatile (written, not yet synced)
//    layer. A request runs AcceptorCore; its write goes to the volatile layer and becomes durable
//    after a random disk delay (syncs complete in order, like one log); a reply leaves only once
//    every write the node made before it is durable. A crash drops the volatile layer and every
//    request in progress; a wipe (lost disk) drops everything, and the node comes back with
//    --rejoin: its replies carry voting=false.
//  - The network delays every message at random (so messages are reordered), drops some,
//    duplicates some (the acceptor processes the request twice; the caller's promise resolves
//    once). A request to a node that is down is lost (the proposer's round timeout deals with
//    it) or, sometimes, refused at once with Unavailable (like ECONNREFUSED).
//  - Clients run random reads, writes, compare-and-sets, read-modify-writes and create-fresh
//    operations on a few keys through one Proposer each, and record every operation for the
//    linearizability checker.
//  - Optionally the membership changes under load: {a,b,c} -> joint {a,b,c,d | a,b,c} ->
//    rebalance -> {a,b,c,d} -> joint {b,c,d | a,b,c,d} -> rebalance -> {b,c,d}, clients
//    switching one at a time at random points.
//
// Everything random comes from one std::mt19937_64 seeded from the run's seed, so a run is
// replayed exactly by running the same options again.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/sim/linearizability.h"

namespace quorumfs::sim {

struct FaultOptions {
  // Network: every message takes a uniform delay in [net_min_us, net_max_us]; with probability
  // net_slow_rate instead up to net_slow_max_us, with net_very_slow_rate up to
  // net_very_slow_max_us (longer than a proposer round, so stale messages arrive late).
  int64_t net_min_us = 50;
  int64_t net_max_us = 1500;
  double net_slow_rate = 0.08;
  int64_t net_slow_max_us = 20'000;
  double net_very_slow_rate = 0.01;
  int64_t net_very_slow_max_us = 150'000;
  double drop_rate = 0.03;  // per message (request or reply)
  double dup_rate = 0.02;   // per message
  // Disk: the time from a write to its sync completing.
  int64_t disk_min_us = 20;
  int64_t disk_max_us = 2000;
  double disk_slow_rate = 0.05;
  int64_t disk_slow_max_us = 15'000;
  // Crashes: one fault attempt every exponential(crash_interval_mean_us); a node that crashes
  // stays down for a uniform time in [downtime_min_us, downtime_max_us].
  bool crashes = true;
  int64_t crash_interval_mean_us = 40'000;
  int64_t downtime_min_us = 1'000;
  int64_t downtime_max_us = 60'000;
  // Normally at most N - W nodes are down (or not voting) at once; with this probability a
  // crash goes beyond that, so the NoQuorum paths run too.
  double over_budget_rate = 0.1;
  // Fraction of crashes that also lose the disk (at most max_wipes per run).
  double wipe_rate = 0.0;
  int max_wipes = 0;
  // A request to a node that is down fails at once with Unavailable with this probability
  // (otherwise it is lost).
  double fail_fast_rate = 0.5;
};

// A run without any fault but message delays.
FaultOptions NoFaults();

enum class ClientKind {
  kProposer,        // the real Proposer
  kLastWriterWins,  // negative control: accept at (time, client) without prepare; no repair
};

struct SimOptions {
  uint64_t seed = 1;
  int replicas = 3;      // N
  int write_quorum = 2;  // W
  int read_quorum = 2;   // R
  int clients = 4;
  int keys = 3;              // InodeKey(1..keys), used by every client
  int fresh_keys = 2;        // InodeKey(1000 + i): CreateFresh by one client, then shared
  int max_ops_per_key = 60;  // histories stay short so each check is fast
  int max_think_us = 3000;   // a client waits uniform [0, max_think_us] between operations
  FaultOptions faults;
  bool membership_change = false;

  // Negative controls: each must make the checker find violations.
  ClientKind client_kind = ClientKind::kProposer;
  bool unsafe_reply_before_durable = false;    // acceptor replies before its write is synced
  bool unsafe_read_unsynced = false;           // readAccepted reports writes not yet synced
  bool unsafe_wiped_node_votes = false;        // a wiped node comes back voting (no --rejoin)
  bool unsafe_fast_read_single_reply = false;  // ProposerOptions knob
  bool unsafe_ignore_joint_quorum = false;     // ProposerOptions knob

  int64_t max_sim_time_ms = 120'000;  // a run that takes longer is reported as stuck
  int64_t checker_max_states = 1'000'000;
  bool trace = false;  // print every event to stderr (for replaying one seed)
};

struct SimStats {
  int64_t ops = 0, ok = 0, failed = 0, unknown = 0;
  int64_t reads = 0, writes = 0, cas = 0, cas_succeeded = 0, cas_mismatch = 0, updates = 0;
  int64_t creates = 0;
  int64_t rebalance_ops = 0;
  int64_t messages = 0, dropped = 0, duplicated = 0, refused = 0;
  int64_t crashes = 0, wipes = 0;
  int64_t fast_reads = 0, slow_reads = 0, conflicts = 0;
  int64_t sim_time_us = 0;
  int64_t keys_checked = 0, checker_gave_up = 0;
  int final_stage = 0;  // membership: index of the configuration every client ended on

  void Add(const SimStats& o);
  std::string ToString() const;
};

struct SimResult {
  uint64_t seed = 0;
  // Linearizability violations (one per key) and internal errors (unexpected statuses,
  // a stuck run, exceptions). Empty means the run passed.
  std::vector<std::string> violations;
  std::vector<std::string> errors;
  std::vector<std::string> violating_keys;
  SimStats stats;
  std::map<std::string, std::vector<Operation>> histories;  // by printable key

  bool ok() const { return violations.empty() && errors.empty(); }
  // Violations and errors with the offending histories, for a failure message.
  std::string Report() const;
};

// Runs one simulation. Deterministic: the same options give the same result.
SimResult RunSimulation(const SimOptions& options);

}  // namespace quorumfs::sim
