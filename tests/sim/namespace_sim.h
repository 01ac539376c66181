// Deterministic simulator for the namespace (DESIGN.md, "Namespace operations", "Removing
// keys", "fsck"). One run drives the real Namespace, Proposer and InodeAllocator of several
// simulated clients over the fake network and acceptors of sim_network.h, on one kj event loop
// whose clock is advanced by hand; everything random comes from the run's seed.
//
// What a run does:
//  - Setup: the root, three shared directories /s0 /s1 /s2, and for every client a private
//    directory under /priv where only that client operates, one operation at a time.
//  - Rounds of concurrent operations by every client: creates (files and directories, O_EXCL),
//    unlinks, rmdirs, links, renames (files and directories, within and across directories,
//    sometimes RENAME_NOREPLACE or RENAME_EXCHANGE), readdirs and lookups, on a small pool of
//    names in the shared directories (so they conflict all the time) and in the private ones;
//    plus special rounds: every client racing to create one fresh name (at most one O_EXCL
//    winner); an rmdir racing creates into the directory it removes; two crossing directory
//    moves (a into b while b into a); renames in the private directories whose clients crash
//    late, while they resolve their intents; bursts of creates and unlinks in one directory,
//    several in flight per client. In random rounds a client may also have more than one
//    operation in flight; a crash ends all of them.
//  - Client crashes: an operation's promise is dropped at a random simulated time (the fiber
//    is destroyed, the transaction abandoned midway) and the client replaced by a fresh one
//    with a new proposer id. Acceptor crashes and restarts, message loss, duplication and
//    reordering (FaultOptions). Unknown outcomes: the replies of some accepts are lost and the
//    proposer's next round fails, so the Namespace must retry a change that was chosen.
//  - A repair client calls Namespace::ResolveTransactions now and then.
//  - Then faults stop, every node comes up, clients go idle, time passes every deadline, and
//    the registers are settled (a full-replica identity round per key, as any proposer could
//    run). The checks run twice: first with the namespace's own read path only (Lookup,
//    ReadDir, GetAttr: reads that follow intents), then after recovery (ResolveTransactions,
//    FixInode for every inode, FixDirectoryCounts for every directory).
//
// Invariants checked (a violation names the seed that shows it):
//  - O_EXCL: at most one client's create of a racing name succeeds, and its entry survives.
//  - Every entry names a live inode of the entry's type; readdir lists each name once, and
//    lookups agree with readdir (listed names are found, unlisted names of the pool are not).
//  - No directory cycle: the walk from the root meets every directory once, and every live
//    directory reaches the root through its parent back-pointers.
//  - No entry inside a removed directory; no directory the clients made is live but
//    unreachable.
//  - Counts: before recovery a directory's entry count and nlink, and a file's nlink, are never
//    lower than the entries say (crashed or failed operations may leave them high; fsck lowers
//    them); exact in runs without client crashes and faults; exact everywhere after recovery.
//  - Each private directory matches a model built from the acknowledged results of its
//    client's operations (nothing acknowledged lost, nothing applied twice, every errno as
//    predicted; the one allowed difference: rmdir, or a rename over a directory, answers
//    ENOTEMPTY for an empty directory whose entry count a failed unlink left high, as the
//    design allows until fsck, never in runs without faults). An operation with an ambiguous result
//    (crash, NoQuorum, unknown outcome...) retires the directory: its final content must be the
//    model before or after that operation, and the client moves on to a fresh private directory.
//  - Recovery changes no entry: the namespace after recovery is the one reads showed before.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/namespace.h"
#include "tests/sim/sim_network.h"

namespace quorumfs::sim {

struct NamespaceSimOptions {
  uint64_t seed = 1;
  int nodes = 3;         // acceptor nodes; every key lives on `replicas` of them
  int replicas = 3;      // N
  int write_quorum = 2;  // W
  int read_quorum = 2;   // R
  int clients = 4;
  int rounds = 10;            // rounds of concurrent operations
  int ops_per_round = 3;      // per client in a random round
  int names = 4;              // the pool of entry names
  double private_rate = 0.4;  // fraction of a client's random operations in its private area
  // In a random round, the probability that a client also runs shared-area operations
  // concurrently with its others (one process, several operations in flight).
  double concurrent_rate = 0.35;
  // Special rounds, each with this probability per round (otherwise a random round).
  double exclusive_round_rate = 0.15;
  double rmdir_race_rate = 0.15;
  double cross_move_rate = 0.15;
  // Every client renames a file in its private directory, and crashes with probability
  // crashing_rename_rate late in the rename (after its commit, while it resolves its intents).
  double crash_rename_round_rate = 0.15;
  double crashing_rename_rate = 0.5;
  // Every client runs three creates or unlinks at once in one directory (its changes of the
  // directory's record are combined into one CAS).
  double burst_round_rate = 0.1;
  // Client crashes: each operation is cancelled with this probability at a time uniform in
  // [0, crash_window_us] after it starts (if it has not finished by then).
  double client_crash_rate = 0.08;
  int64_t crash_window_us = 60'000;
  // Per plain accept of a directory's inode: its replies are lost and the proposer's next
  // prepare of the key fails, so the change it made is chosen but reported UnknownOutcome.
  double unknown_outcome_rate = 0.03;
  FaultOptions faults;
  // Namespace options of every client (timeouts in simulated time, negative controls).
  NamespaceOptions ns;
  // Negative control (ProposerOptions): a create's one-round entry write counts as chosen once
  // W replicas accept it, instead of all N.
  bool unsafe_shared_first_write_at_w = false;
  // The run has no client crash and no fault that can leave a count high (no message loss,
  // no node crash, no round timeout): counts must be exact even before recovery, and every
  // O_EXCL race must have a winner.
  bool expect_exact_counts = false;
  // The repair loop also recounts a random shared directory now and then, while the clients
  // create and unlink in it (fsck --repair on a live cluster).
  double concurrent_recount_rate = 0.5;
  int64_t max_sim_time_ms = 600'000;  // a run that takes longer is reported as stuck
  bool trace = false;                 // print operations (and every message) to stderr
};

// Options with simulated-time timeouts small enough for abandoned transactions to expire
// within a run.
NamespaceSimOptions DefaultNamespaceSimOptions();

struct NamespaceSimStats {
  int64_t ops = 0, ok = 0, expected_errors = 0, ambiguous = 0, client_crashes = 0;
  int64_t creates = 0, mkdirs = 0, unlinks = 0, rmdirs = 0, links = 0, renames = 0;
  int64_t readdirs = 0, lookups = 0;
  int64_t exclusive_rounds = 0, exclusive_winners = 0, rmdir_races = 0, rmdir_race_wins = 0;
  int64_t cross_moves = 0, cross_moves_both_failed = 0, crashing_rename_rounds = 0;
  int64_t burst_rounds = 0;
  int64_t retired_areas = 0, unknown_injected = 0, repair_runs = 0;
  int64_t high_counts = 0;             // counts found high (never low) before recovery
  int64_t refused_for_high_count = 0;  // ENOTEMPTY for an empty directory whose count is high
  int64_t fixes = 0;                   // records changed by FixInode / FixDirectoryCounts
  int64_t live_recounts = 0, live_recounts_written = 0;  // recounts during the workload
  int64_t batches_found_applied = 0;  // retried count changes found applied (not reapplied)
  int64_t batches_lost_track = 0;     // ... that could not tell (UnknownOutcome)
  int64_t messages = 0, dropped = 0, duplicated = 0, node_crashes = 0;
  int64_t sim_time_us = 0;

  void Add(const NamespaceSimStats& o);
  std::string ToString() const;
};

struct NamespaceSimResult {
  uint64_t seed = 0;
  std::vector<std::string> violations;  // broken invariants
  std::vector<std::string> errors;      // unexpected statuses, a stuck run, exceptions
  NamespaceSimStats stats;
  bool exact_counts = false;  // the run had no fault that may leave counts high

  bool ok() const { return violations.empty() && errors.empty(); }
  std::string Report() const;
};

// Runs one simulation. Deterministic: the same options give the same result.
NamespaceSimResult RunNamespaceSimulation(const NamespaceSimOptions& options);

}  // namespace quorumfs::sim
