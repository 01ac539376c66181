// Deterministic simulator for the metadata protocol (DESIGN.md, "Metadata", "Cluster
// configuration"). One simulated run drives the real AcceptorCore and Proposer code over the
// fake network and fake disks of sim_network.h (delays, loss, duplication, reordering, crashes,
// lost disks) on one kj event loop whose clock is a kj::TimerImpl advanced by hand:
//
//  - Clients run random reads, writes, compare-and-sets, read-modify-writes and create-fresh
//    operations on a few keys, and shared creates and tombstone writes on directory-entry
//    keys, through one Proposer each, and record every operation for the linearizability
//    checker.
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
#include "tests/sim/sim_network.h"

namespace quorumfs::sim {

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
  // DirEntryKey(1, "s<i>"): keys any client may create with Proposer::CreateShared (the
  // one-round Fast Paxos create of a directory entry) and remove by writing a tombstone, so a
  // create meets absent keys, tombstones and live values, and a key lives past the window of
  // recent change ids (the birth id decides then).
  int shared_keys = 0;
  int max_ops_per_shared_key = 100;
  int max_think_us = 3000;  // a client waits uniform [0, max_think_us] between operations
  FaultOptions faults;
  bool membership_change = false;
  int nodes_changed = 1;  // nodes added at once by the membership change, then removed at once

  // Negative controls: each must make the checker find violations.
  ClientKind client_kind = ClientKind::kProposer;
  bool unsafe_reply_before_durable = false;    // acceptor replies before its write is synced
  bool unsafe_read_unsynced = false;           // readAccepted reports writes not yet synced
  bool unsafe_wiped_node_votes = false;        // a wiped node comes back voting (no --rejoin)
  bool unsafe_round0_first_group = false;      // ProposerOptions knob
  bool unsafe_fast_read_single_reply = false;  // ProposerOptions knob
  // Acceptors accept without promising the proposer's next ballot, while proposers still make
  // one-round changes (AcceptorCore::UnsafeNoNextPromiseForTesting).
  bool unsafe_accept_without_next_promise = false;
  bool one_round_changes = true;            // ProposerOptions knob
  bool unsafe_trust_any_refusal = false;    // ProposerOptions knob (negative control)
  bool unsafe_round0_highest_wins = false;  // ProposerOptions knob (negative control)
  int batched_read_percent = 40;            // reads done with Proposer::ReadMany (0: no draw)
  bool unsafe_ignore_joint_quorum = false;  // ProposerOptions knob
  // ProposerOptions::no_quorum_retry in ms (0: a prepare that reached too few replicas fails
  // the operation at once, so runs end many operations in failure and unknown outcomes).
  int64_t no_quorum_retry_ms = 0;

  int64_t max_sim_time_ms = 120'000;  // a run that takes longer is reported as stuck
  int64_t checker_max_states = 1'000'000;
  bool trace = false;  // print every event to stderr (for replaying one seed)
};

struct SimStats {
  int64_t ops = 0, ok = 0, failed = 0, unknown = 0;
  int64_t reads = 0, writes = 0, cas = 0, cas_succeeded = 0, cas_mismatch = 0, updates = 0;
  int64_t creates = 0, shared_creates = 0, shared_created = 0, tombstones = 0;
  int64_t rebalance_ops = 0;
  int64_t messages = 0, dropped = 0, duplicated = 0, refused = 0;
  int64_t crashes = 0, wipes = 0;
  int64_t fast_reads = 0, slow_reads = 0, batched_reads = 0, conflicts = 0;
  int64_t no_quorum_retries = 0;  // prepare rounds tried again for want of replies
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
