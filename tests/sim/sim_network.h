// SimNetwork: the simulated acceptor nodes and network shared by the deterministic simulators
// (sim_cluster.h for registers, namespace_sim.h for the namespace). Everything runs on one kj
// event loop whose clock is a kj::TimerImpl advanced by hand, and every random choice is drawn
// from the owner's std::mt19937_64, so a run is replayed exactly from its seed.
//
//  - Acceptor nodes keep their rows in a durable layer and a volatile (written, not yet synced)
//    layer. A request runs AcceptorCore; its write goes to the volatile layer and becomes durable
//    after a random disk delay (syncs complete in order, like one log); a reply leaves only once
//    every write the node made before it is durable. A crash drops the volatile layer and every
//    request in progress; a wipe (lost disk) drops everything, and the node comes back with
//    --rejoin: its replies carry voting=false.
//  - The network delays every message at random (so messages are reordered), drops some,
//    duplicates some (the acceptor processes the request twice; the caller's promise resolves
//    once). A request to a node that is down is lost (the caller's round timeout deals with it)
//    or, sometimes, refused at once with Unavailable (like ECONNREFUSED).
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/acceptor.h"
#include "common/ballot.h"
#include "common/quorum.h"
#include "common/record.h"
#include "common/record_transport.h"
#include "common/status.h"

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

struct NetworkOptions {
  FaultOptions faults;
  int replicas = 3;      // N: with W, the budget of nodes that may be down at once
  int write_quorum = 2;  // W
  bool trace = false;    // print every message, crash and restart to stderr

  // Negative controls of the register simulator.
  bool unsafe_reply_before_durable = false;  // acceptor replies before its write is synced
  bool unsafe_read_unsynced = false;         // readAccepted reports writes not yet synced
  bool unsafe_wiped_node_votes = false;      // a wiped node comes back voting (no --rejoin)
};

struct NetworkStats {
  int64_t messages = 0, dropped = 0, duplicated = 0, refused = 0;
  int64_t crashes = 0, wipes = 0;
};

// Acceptor rows in two layers: durable, and written but not yet synced (volatile, in write
// order). A sync makes a prefix of the volatile writes durable, like one write-ahead log.
class SimStorage final : public AcceptorStorage {
 public:
  Result<std::optional<AcceptorState>> LoadRecord(const std::string& key) override;
  Result<Ballot> LoadFloor(const std::string& range) override;

  // Keys of the rows (durable or not) starting with `prefix`, greater than `after`, in order,
  // at most `limit`; rows holding only a promise included, as the chunkserver's scanRecords.
  std::vector<std::string> Keys(const std::string& prefix, const std::string& after,
                                size_t limit) const;

  // Adds a write to the volatile layer; returns its sequence number.
  uint64_t Append(AcceptorWrite write);
  // Makes every write up to `seq` durable.
  void SyncThrough(uint64_t seq);
  // The sequence number of the newest write, durable or not.
  uint64_t LastSeq() const;
  uint64_t DurableSeq() const { return durable_seq_; }

  void DropVolatile() { pending_.clear(); }
  void Wipe();

  // The durable rows, for checkers that inspect (or settle) a quiescent cluster.
  // REQUIRES: no volatile write (LastSeq() == DurableSeq()) when writing through it.
  std::map<std::string, AcceptorState>& durable_rows() { return rows_; }

 private:
  struct Batch {
    uint64_t seq;
    AcceptorWrite write;
  };
  std::map<std::string, AcceptorState> rows_;
  std::map<std::string, Ballot> floors_;
  std::deque<Batch> pending_;
  uint64_t next_seq_ = 0;
  uint64_t durable_seq_ = 0;
};

struct SimNode {
  std::string id;
  SimStorage storage;
  bool up = true;
  bool voting = true;
  uint64_t incarnation = 0;
  kj::TimePoint disk_free = kj::origin<kj::TimePoint>();  // syncs complete in order
  // Replies waiting for the writes before them to become durable (barrier: a write sequence).
  struct Held {
    uint64_t barrier;
    std::function<void()> send;
  };
  std::deque<Held> held;
};

// The answer to a scan: the keys one node holds under a prefix.
struct ScanReply {
  bool voting = true;
  std::vector<std::string> keys;
};

template <typename Reply>
struct PendingCall;

// How a request is processed at the node: the reply plus the write that must be durable first.
template <typename Reply>
using Handler = std::function<Result<AcceptorResult<Reply>>(SimStorage&)>;

class SimNetwork {
 public:
  // `rng`, `timer` and `tasks` must outlive the network; `errors` collects internal errors
  // (a request to an unknown node, an acceptor failure). `start` is time zero for traces.
  SimNetwork(NetworkOptions options, std::mt19937_64& rng, kj::Timer& timer, kj::TaskSet& tasks,
             kj::TimePoint start, std::vector<std::string>& errors);
  ~SimNetwork();

  SimNode& AddNode(const std::string& id);
  SimNode* FindNode(const std::string& id);
  const std::vector<std::unique_ptr<SimNode>>& nodes() const { return nodes_; }

  // Sends a request from client `from` to `node_id`; `what` names it in traces. The promise
  // resolves once, with the first reply or refusal to arrive, and never rejects (a lost request
  // simply never resolves it).
  template <typename Reply>
  kj::Promise<Result<Reply>> Call(int from, const std::string& node_id, std::string what,
                                  Handler<Reply> handle);

  // The keys `node_id` holds under `prefix` after `after` (scanRecords), over the network.
  kj::Promise<Result<ScanReply>> Scan(int from, const std::string& node_id, std::string prefix,
                                      std::string after, uint32_t limit);

  // Injects a fault every exponential(crash_interval_mean_us) until `stop` returns true.
  void StartFaults(std::function<bool()> stop);
  void InjectFault();
  void Crash(SimNode& node, bool wipe);
  // Brings every node that is down back up at once (its scheduled restart is cancelled).
  void RestartAll();
  // True when no node has a write that is not yet durable.
  bool AllDurable() const;

  // Forgets every reply held back and every pending call, before the event loop goes away.
  void Shutdown();

  FaultOptions& faults() { return options_.faults; }
  const NetworkStats& stats() const { return stats_; }
  bool tracing() const { return options_.trace; }
  void Trace(const std::string& line);
  int64_t NowNs() const { return (timer_.now() - start_) / kj::NANOSECONDS; }

  // Randomness, from the owner's generator.
  bool Chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, std::max(lo, hi))(rng_);
  }
  kj::Duration UniformUs(int64_t lo_us, int64_t hi_us) {
    return Uniform(lo_us * 1000, hi_us * 1000) * kj::NANOSECONDS;
  }
  kj::Duration NetDelay();
  kj::Duration DiskDelay();

  void After(kj::Duration delay, std::function<void()> fn);
  void AtTime(kj::TimePoint t, std::function<void()> fn);

 private:
  template <typename Reply>
  void Deliver(SimNode* node, std::shared_ptr<PendingCall<Reply>> call,
               const Handler<Reply>& handle, const std::string& what);
  template <typename Reply>
  void SendReply(std::shared_ptr<PendingCall<Reply>> call, const Reply& reply);
  void ReleaseHeld(SimNode* node);
  void ScheduleFault();

  NetworkOptions options_;
  std::mt19937_64& rng_;
  kj::Timer& timer_;
  kj::TaskSet& tasks_;
  kj::TimePoint start_;
  std::vector<std::string>& errors_;
  std::vector<std::unique_ptr<SimNode>> nodes_;
  std::vector<std::shared_ptr<void>> calls_;  // every call, so none is rejected mid-run
  std::function<bool()> stop_faults_;
  int wipes_ = 0;
  NetworkStats stats_;
};

// A RecordTransport for one simulated client over the network.
class SimTransport final : public RecordTransport {
 public:
  SimTransport(SimNetwork& network, int client) : network_(network), client_(client) {}
  kj::Promise<Result<PrepareReply>> Prepare(const std::string& node, const std::string& key,
                                            Ballot ballot) override;
  kj::Promise<Result<AcceptReply>> Accept(const std::string& node, const std::string& key,
                                          Ballot ballot, const std::string& value) override;
  kj::Promise<Result<ReadAcceptedReply>> ReadAccepted(const std::string& node,
                                                      const std::string& key) override;

 private:
  SimNetwork& network_;
  int client_;
};

// A stored value for the trace: the envelope's payload, version and change ids (low 16 bits),
// or the raw bytes (values that are not envelopes).
std::string DescribeValue(const std::optional<std::string>& v);

// The votes of gathered replies: kYes where `yes` holds, kNo for an error, kAbstain for a
// node that does not vote, kPending where no reply arrived.
template <typename Reply, typename Yes>
std::vector<Vote> VotesOf(const std::vector<std::optional<Result<Reply>>>& replies, Yes yes) {
  std::vector<Vote> votes(replies.size(), Vote::kPending);
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i]) continue;
    if (!replies[i]->ok()) {
      votes[i] = Vote::kNo;
    } else if (!(*replies[i])->voting) {
      votes[i] = Vote::kAbstain;
    } else {
      votes[i] = yes(**replies[i]) ? Vote::kYes : Vote::kNo;
    }
  }
  return votes;
}

}  // namespace quorumfs::sim
