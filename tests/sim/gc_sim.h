// Deterministic simulator for garbage collection (DESIGN.md, "Chunks" and "Removing keys"):
// chunk GC and tombstone removal running while writers publish layouts, unlink and re-create
// files, readers read them, and nodes crash and messages are lost, delayed and duplicated.
//
// One run, all in simulated time on the fake network of sim_network.h (one kj loop, a clock
// advanced by hand, every random choice from the seed):
//  - N acceptor nodes (SimStorage + the real AcceptorCore); every node also has a simulated
//    chunk store: chunk id -> last-put time on the node's clock (simulated time plus a fixed
//    per-node offset within the configured skew bound). A put of a stored chunk refreshes its
//    last-put time; deleteChunk applies the chunkserver's rule (common/gc_rules.h).
//  - Writers, each with the real Proposer, repeatedly write a file: fresh chunk ids put to all
//    N nodes (done once W acknowledge), a wait before publishing (sometimes longer than half
//    the grace period), a re-put of every chunk ChunkNeedsRefresh() names, then a CAS of the
//    key to a layout listing the chunks. Or they unlink: CAS the key to a tombstone carrying the
//    unlink time. Writing a tombstoned (or removed) key re-creates it.
//  - Readers read keys with Proposer::Read; for every layout they get, the simulator checks at
//    that instant whether each of its chunks is still stored on some node.
//  - A GC client runs rounds like `quorumfs fsck --gc`: mark start = now; every node must
//    answer (else the round is skipped); scan every node's rows (every accepted value, chosen
//    or not) and chunk list; mark the chunks of every layout in any row; optionally pause (a
//    long sweep); delete every unmarked chunk with deleteChunk(mark start, grace); then, for a
//    key whose rows on every replica hold the same accepted ballot and a tombstone older than
//    the tombstone grace, deleteRecord(key, that ballot) on every replica.
//
// Invariants checked (each run):
//  1. No referenced chunk is ever deleted: whenever a layout is the key's current value, every
//     chunk it lists is stored on some node. A layout is current over one contiguous interval
//     (values are unique), which contains [earliest return, latest invocation] of the
//     operations that returned it, and the linearization point of each of them; a chunk of it
//     that was stored nowhere during that time is a violation. (Readers seeing a missing chunk
//     of a layout that was overwritten while they read it is legitimate and only counted.)
//  2. No removed key comes back: once GC's deleteRecord succeeded on every replica, no
//     operation invoked afterwards returns the removed tombstone or any value observed before
//     that GC round's mark began. (With the chunkserver's deleteRecord rule the tombstone
//     itself could come back under the first deleteRecord rule; see
//     unsafe_unfenced_record_delete. That case is reported separately.)
//  3. Nothing acknowledged is lost, and every key behaves as a linearizable register (tombstone
//     and absent being the same value): the checker of linearizability.h runs on every key's
//     history, final reads after the run included; and the last acknowledged write of a key,
//     with no later write or unlink, is what the final read returns.
//
// Negative controls (each must produce violations within a few hundred seeds):
//  - unsafe_sweep_uses_own_clock: the sweep passes the time it runs, not the mark start, as
//    deleteChunk's mark start; a layout published after the mark read its key then references
//    a chunk the sweep deletes (invariant 1).
//  - unsafe_unconditional_record_delete: deleteRecord deletes the row whatever ballot it holds
//    (raising the floor as usual), so a re-create accepted after GC read the tombstone is
//    wiped or the old tombstone resurfaces (invariants 2 and 3).
//  - unsafe_writer_skips_refresh: a writer publishes without re-putting chunks it put more than
//    half the grace ago; a layout published after the mark then references chunks older than
//    the cutoff, which the (correct) sweep deletes (invariant 1). This shows the sweep's rule
//    alone is not enough and the refresh path is exercised.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/sim/linearizability.h"
#include "tests/sim/sim_network.h"

namespace quorumfs::sim {

struct GcSimOptions {
  uint64_t seed = 1;
  int replicas = 3;      // N
  int write_quorum = 2;  // W
  int read_quorum = 2;   // R
  int writers = 4;
  int readers = 2;
  int keys = 3;  // InodeKey(1..keys), shared by every client

  // Clients start operations until this simulated time; GC rounds too.
  int64_t workload_ms = 4000;
  int64_t writer_think_max_ms = 40;
  int64_t reader_think_max_ms = 60;
  double unlink_rate = 0.4;  // a writer's operation is an unlink, otherwise it writes a file
  int max_chunks_per_file = 3;
  // How long a writer waits between putting its chunks and publishing the layout: short, up
  // to half the grace (no refresh needed), or up to 1.5 grace (a refresh is needed).
  double medium_wait_rate = 0.5;
  double long_wait_rate = 0.15;

  // GC timing.
  int64_t chunk_grace_ms = 800;
  int64_t tombstone_grace_ms = 150;
  int64_t gc_interval_min_ms = 100;
  int64_t gc_interval_max_ms = 500;
  double long_sweep_rate = 0.5;        // a round pauses between mark and sweep ...
  int64_t sweep_pause_max_ms = 2000;   // ... for a uniform time up to this
  int64_t max_clock_skew_us = 10'000;  // every node's clock is off by at most this

  // Proposer timeouts: with the network's longest delay they bound how long after a writer's
  // refresh check its accepts can land, which must stay below half the grace minus the skew
  // (the run reports an error otherwise).
  int64_t round_timeout_ms = 30;
  int64_t op_timeout_ms = 150;

  FaultOptions faults;

  // GC removes a key with the chunkserver's rule, AcceptorCore::DeleteRecord(key, b, p, F):
  // delete iff the row still holds accepted ballot b and the promised ballot p the scan saw on
  // that replica, raising the floor to F, the highest promise the scan saw on any replica.

  // Negative controls.
  // The first rule (until 2026-11-26): delete iff the row's accepted ballot is still b, raising
  // that replica's floor to its own row's ballots only. It lets the removed tombstone come
  // back: a proposer promised on replica X before X's delete, whose prepare reaches replica Y
  // only after Y's delete (Y's floor does not know its ballot), gets the tombstone from X and
  // "absent" from Y and accepts the tombstone again on Y (kTombstoneResurrected; seed 537).
  bool unsafe_unfenced_record_delete = false;
  bool unsafe_sweep_uses_own_clock = false;
  bool unsafe_unconditional_record_delete = false;
  bool unsafe_writer_skips_refresh = false;

  int64_t max_sim_time_ms = 60'000;  // a run that takes longer is reported as stuck
  int64_t checker_max_states = 1'000'000;
  bool trace = false;  // print every message, crash and operation to stderr
};

struct GcSimStats {
  int64_t writes = 0, writes_ok = 0, writes_failed = 0, writes_unknown = 0;
  int64_t abandoned = 0;  // files whose chunks never reached W nodes: nothing published
  int64_t recreates = 0;  // acknowledged writes over a tombstone or a removed key
  int64_t refreshes = 0;  // re-put rounds before publishing
  int64_t unlinks = 0, unlinks_ok = 0;
  int64_t reads = 0, reads_ok = 0;
  int64_t missing_at_read = 0;  // reads that returned a layout with a chunk stored nowhere
  int64_t gc_rounds = 0, gc_completed = 0, gc_skipped = 0;
  int64_t chunks_swept = 0, chunks_deleted = 0, chunks_kept_young = 0;
  int64_t records_deleted = 0;    // deleteRecord calls that deleted a row
  int64_t removals_complete = 0;  // keys whose tombstone was deleted on every replica
  int64_t messages = 0, dropped = 0, duplicated = 0, crashes = 0;
  int64_t sim_time_us = 0;
  int64_t keys_checked = 0, checker_gave_up = 0;

  void Add(const GcSimStats& o);
  std::string ToString() const;
};

// What a violation is about; the negative controls check they are caught by the right one.
enum class GcViolation {
  kChunkDeleted,          // invariant 1
  kKeyCameBack,           // invariant 2: a value from before the removal, other than the tombstone
  kTombstoneResurrected,  // invariant 2: the removed tombstone itself (see fenced_record_delete)
  kAcknowledgedLost,      // invariant 3: the final value is not the last acknowledged write
  kNotLinearizable,       // invariant 3: the register checker
};

const char* GcViolationName(GcViolation v);

struct GcSimResult {
  uint64_t seed = 0;
  std::vector<std::pair<GcViolation, std::string>> violations;
  std::vector<std::string> errors;  // unexpected statuses, a stuck run, broken assumptions
  std::vector<std::string> violating_keys;
  GcSimStats stats;
  std::map<std::string, std::vector<Operation>> histories;  // by printable key

  bool ok() const { return violations.empty() && errors.empty(); }
  bool Has(GcViolation v) const;
  std::string Report() const;
};

// Runs one simulation. Deterministic: the same options give the same result.
GcSimResult RunGcSimulation(const GcSimOptions& options);

}  // namespace quorumfs::sim
