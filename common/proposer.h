// Proposer: CASPaxos over a key's replica set (DESIGN.md, "Metadata: linearizable records
// without a leader"). Runs on one kj event loop; no sockets or real clocks inside, so the
// simulator drives this exact code.
//
// Exactly-once changes. Every write a Change() attempt sends draws a change id; the value it
// writes carries the ids of the record's last RecordEnvelope::kRecentChanges changes and a
// version that rises by one per change. When an accept round ends without a quorum (conflict,
// lost replies) the change may or may not have been chosen. The next attempt reads the record
// through a full prepare round: if the id of one of its writes is there, that write was chosen
// and is the result (Paxos: any value chosen at a lower ballot is, or is an ancestor of, the
// value a completed prepare adopts); if none is while the window of recent ids still covers the
// versions they would have had, none has been chosen: f is applied afresh and the attempt's
// accept (made even when f keeps or aborts) rules out that a later proposer adopts an earlier
// write; otherwise the outcome is reported as UnknownOutcome. A write at version 1 (one that
// would create the record, e.g. a one-round create of a directory entry) is told by the record's
// birth id instead, which the envelope keeps for good: a name created and removed more than
// kRecentChanges/2 times must not make its next create "unknown" (NamespaceTest.
// OneNameCreatedAndRemovedManyTimes).
//
// One-round changes. An acceptor that accepts ballot b also promises b.Next() (the same
// proposer's next ballot; common/acceptor.h). Once this proposer's accept of a key at b has
// been accepted by a write quorum that is also a read (prepare) quorum, those acceptors have,
// in effect, answered a prepare of b.Next() reporting (b, value): the proposer's next change of
// that key applies f to the value it wrote and sends only the accept at b.Next(). If another
// proposer changed the key meanwhile, its prepare (above b.Next()) met that promise on some
// acceptor of every write quorum, so the accept fails and the change runs the full protocol
// (the change id still tells whether the one-round accept was chosen). f's kKeep and kAbort
// decisions need the current value confirmed, so they also take the full protocol.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/ballot.h"
#include "common/cluster_config.h"
#include "common/quorum.h"
#include "common/record_transport.h"
#include "common/status.h"

namespace quorumfs {

struct ProposerOptions {
  uint64_t proposer_id = 0;  // 0: draw a random one (production); the simulator sets it
  uint64_t rng_seed = 0;     // 0: seed from std::random_device
  kj::Duration round_timeout = 1 * kj::SECONDS;  // one prepare or accept round
  kj::Duration op_timeout = 10 * kj::SECONDS;    // a whole Change/Read, retries included
  kj::Duration backoff_min = 200 * kj::MICROSECONDS;
  kj::Duration backoff_max = 20 * kj::MILLISECONDS;
  // A prepare or accept round that a replica refused (another proposer is ahead) waits at most
  // this much longer for the replies still missing, instead of the whole round_timeout: with a
  // replica gone silent, two contending proposers would otherwise lose a second per round.
  kj::Duration conflict_grace = 50 * kj::MILLISECONDS;
  // A prepare round that fewer than a quorum of replicas answered (nodes down, unreachable or
  // slow; not a conflict) is tried again after this long, for as long as the operation has
  // time: a node that comes back meanwhile (restarted, its link healed, reconnected after its
  // backoff) is used instead of the operation failing. 0: fail at once.
  kj::Duration no_quorum_retry = 100 * kj::MILLISECONDS;
  bool one_round_changes = true;  // see the header comment
  // CreateShared's one round waits at most this long for every replica, then falls back; a
  // read that has R answers waits this long (or twice what it had taken) for the others.
  kj::Duration fast_round_timeout = 100 * kj::MILLISECONDS;
  // Keys remembered for one-round changes (two generations of half this many each, so a
  // directory of 10,000 files created, listed and removed by one client keeps its keys).
  size_t one_round_cache = 32768;

  // Negative controls for the simulator: each breaks one rule; never set in production.
  bool unsafe_fast_read_single_reply = false;   // fast read with fewer than W agreeing replies
  bool unsafe_ignore_joint_quorum = false;      // quorum only in the new replica set
  bool unsafe_shared_first_write_at_w = false;  // CreateShared done at W, not all N, replies
  bool unsafe_trust_any_refusal = false;        // refused everywhere = stored nowhere, any ballot
  bool unsafe_round0_highest_wins = false;      // adopt the highest round-0 value (see .cc)
  // Adopt the first group's round-0 value when two groups' answers disagree (see .cc).
  bool unsafe_round0_first_group = false;
};

// What a change function decides after seeing the current payload.
struct Decision {
  enum Kind { kWrite, kKeep, kAbort };
  Kind kind = kKeep;
  std::string payload;  // kWrite: the new payload
  Status status;        // kAbort: returned to the caller

  static Decision Write(std::string payload) { return Decision{kWrite, std::move(payload), {}}; }
  static Decision Keep() { return Decision{kKeep, {}, {}}; }
  static Decision Abort(Status s) { return Decision{kAbort, {}, std::move(s)}; }
};

// `current` is nullopt when the record was never written. f may run more than once (once per
// attempt) and must be a pure function of `current`.
using ChangeFn = std::function<Decision(const std::optional<std::string>& current)>;

struct RecordValue {
  std::optional<std::string> payload;  // nullopt: never written
  uint64_t version = 0;                // 0 when never written
};

class Proposer {
 public:
  // `transport` and `timer` must outlive the proposer. REQUIRES: SetConfig before first use.
  Proposer(RecordTransport& transport, kj::Timer& timer, ProposerOptions options);
  ~Proposer();

  void SetConfig(std::shared_ptr<const ClusterConfig> config);
  const ClusterConfig& config() const { return *config_; }
  uint64_t id() const { return options_.proposer_id; }

  // Applies f atomically and linearizably. Returns the record after this change (kWrite:
  // the value written; kKeep: the current value). kAbort returns f's status once the value f
  // saw is known to be chosen. Errors: NoQuorum (fewer than R/W replicas answered; the
  // change did not happen), UnknownOutcome (it may still happen; re-read), InvalidArgument.
  kj::Promise<Result<RecordValue>> Change(std::string key, ChangeFn f);

  // Linearizable read: one round trip when W replies agree on the highest accepted ballot,
  // otherwise Change(key, keep), which also repairs lagging replicas.
  kj::Promise<Result<RecordValue>> Read(std::string key);

  // Read of many keys (a directory's entries, the inodes they name): one batched message per
  // node for all keys that node holds, each key decided as Read decides it; a key whose
  // replies do not agree takes Read on its own. One result per key, in order.
  kj::Promise<std::vector<Result<RecordValue>>> ReadMany(std::vector<std::string> keys);

  // A read that never writes (for a check that must change nothing): asks every replica,
  // waits for all that answer within the round timeout (at least R of each group), and
  // returns the value of the highest accepted ballot among them: the value a full read with
  // all of them in its prepare quorum would adopt. Unlike Read it repairs nothing, so a value
  // accepted by fewer than W replicas and never chosen may be returned. NoQuorum below R.
  kj::Promise<Result<RecordValue>> ReadWithoutWrite(std::string key);

  // The first write of a key only this process can be creating (a freshly allocated inode):
  // accept at ballot (0, id) without prepare, once. If that does not reach W, falls back to
  // the full protocol. AlreadyExists if the key holds another value.
  kj::Promise<Result<RecordValue>> CreateFresh(std::string key, std::string payload);

  // The first write of a key that other processes may be creating too (a directory entry),
  // in one round when it is uncontended: `payload` is accepted at ballot (0, id) by every
  // replica (all N, not W: see FirstWrite) or, failing that, the full protocol applies f to
  // the current value, recognizing the one-round write by its change id if it was adopted.
  // REQUIRES: f(nullopt) writes `payload`.
  kj::Promise<Result<RecordValue>> CreateShared(std::string key, std::string payload, ChangeFn f);

  // The payload of `key` in the one-round cache (what this proposer's last write of it that
  // reached a read quorum left there, its own change or a value its full protocol wrote back):
  // the record's value unless another proposer has changed it since.
  // A guess only: a change made from it is checked by its one-round accept, which fails (and
  // falls back to the full protocol, where f sees the current value) if the guess is stale.
  std::optional<std::string> PeekPrepared(const std::string& key) const;

  struct Counters {
    uint64_t changes = 0, fast_reads = 0, slow_reads = 0, conflicts = 0, unknown = 0;
    uint64_t one_round = 0, one_round_failed = 0, first_writes = 0;
    uint64_t first_writes_failed = 0;  // round-0 writes that fell back to the full protocol
    uint64_t batch_fallbacks = 0;      // keys of a ReadMany that took Read on their own
    uint64_t no_quorum_retries = 0;    // prepare rounds tried again for want of replies
    uint64_t reads = 0;                // Read calls (a ReadMany's fallbacks included)
  };
  const Counters& counters() const { return counters_; }

 private:
  struct ChangeOp;
  friend struct ChangeOp;

  QuorumSpec SpecFor(const std::string& key) const;
  Ballot NextBallot();
  void Observe(const Ballot& b);
  kj::Duration Backoff(int attempt);
  kj::Promise<Result<RecordValue>> RunChange(std::shared_ptr<ChangeOp> op);
  kj::Promise<Result<RecordValue>> Attempt(std::shared_ptr<ChangeOp> op);

  // A key whose last accept by this proposer reached a write quorum that is a read quorum too.
  struct Prepared {
    Ballot next;                         // the ballot those acceptors promised
    std::shared_ptr<std::string> value;  // the envelope they accepted
  };
  // Observes the promises of the replies to an accept at `ballot`; true if every replica
  // answered, refused, and holds a value below `ballot` (the write is stored nowhere, and with
  // promises only rising never will be). A refusal from a replica that holds `ballot` or
  // higher proves nothing: the request may have been delivered twice, taken the first time
  // and refused the second after a higher ballot adopted it (simulator seed 527459 with
  // one-round changes). `conflict` (optional): some voting replica refused.
  bool ObserveRefusals(const std::vector<std::optional<Result<AcceptReply>>>& replies,
                       Ballot ballot, bool* conflict = nullptr);
  void RememberPrepared(const std::string& key, Ballot accepted,
                        std::shared_ptr<std::string> value);
  kj::Promise<Result<RecordValue>> OneRound(std::shared_ptr<ChangeOp> op, Prepared p);
  kj::Promise<Result<RecordValue>> FirstWrite(std::string key, std::string payload, ChangeFn f,
                                              bool shared);

  RecordTransport& transport_;
  kj::Timer& timer_;
  ProposerOptions options_;
  std::shared_ptr<const ClusterConfig> config_;
  std::mt19937_64 rng_;
  uint64_t max_counter_ = 0;
  Counters counters_;
  // The one-round cache: the newer generation, and the older one it replaced when full.
  std::unordered_map<std::string, Prepared> prepared_, prepared_old_;
  std::optional<Prepared> TakePrepared(const std::string& key);
  // Keys a fast read lately found written (a tombstone of a removed name, say): a round-0
  // first write of them would be refused by every replica, so CreateShared goes straight to
  // the full protocol (two rounds rather than three). A hint only; forgetting costs a round.
  std::unordered_set<std::string> known_written_;
  void NoteWritten(const std::string& key);
  // A read saw `key` accepted at `seen`: if that is at or past the ballot this proposer holds
  // the promise of, another proposer wrote the key since this one did, and its one-round
  // state is dropped. Used, it would fail (its accept is refused), and a key that others
  // changed often since could leave the change's outcome unknown (the full protocol finds a
  // change by its id only within the last RecordEnvelope::kRecentChanges changes).
  void ForgetIfStale(const std::string& key, const Ballot& seen);
  // Keys whose last one-round change failed (other proposers change them too) -> how many of
  // this proposer's next changes of them take the full protocol.
  static constexpr int kContendedSkips = 16;
  std::unordered_map<std::string, int> contended_;
};

}  // namespace quorumfs
