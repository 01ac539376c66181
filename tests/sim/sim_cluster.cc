// GCC 12 at -O2 reports false -Wmaybe-uninitialized inside kj's promise nodes (an ExceptionOr
// holding a value with a union member); which instantiations it flags depends on inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "tests/sim/sim_cluster.h"

#include <kj/async.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <utility>

#include "common/acceptor.h"
#include "common/ballot.h"
#include "common/cluster_config.h"
#include "common/placement.h"
#include "common/proposer.h"
#include "common/quorum.h"
#include "common/record.h"
#include "common/record_key.h"
#include "common/record_transport.h"
#include "common/status.h"

namespace quorumfs::sim {

void SimStats::Add(const SimStats& o) {
  ops += o.ops;
  ok += o.ok;
  failed += o.failed;
  unknown += o.unknown;
  reads += o.reads;
  writes += o.writes;
  cas += o.cas;
  cas_succeeded += o.cas_succeeded;
  cas_mismatch += o.cas_mismatch;
  updates += o.updates;
  creates += o.creates;
  shared_creates += o.shared_creates;
  shared_created += o.shared_created;
  tombstones += o.tombstones;
  rebalance_ops += o.rebalance_ops;
  messages += o.messages;
  dropped += o.dropped;
  duplicated += o.duplicated;
  refused += o.refused;
  crashes += o.crashes;
  wipes += o.wipes;
  fast_reads += o.fast_reads;
  slow_reads += o.slow_reads;
  batched_reads += o.batched_reads;
  conflicts += o.conflicts;
  no_quorum_retries += o.no_quorum_retries;
  sim_time_us += o.sim_time_us;
  keys_checked += o.keys_checked;
  checker_gave_up += o.checker_gave_up;
  final_stage = std::max(final_stage, o.final_stage);
}

std::string SimStats::ToString() const {
  std::ostringstream out;
  out << "ops " << ops << " (ok " << ok << ", failed " << failed << ", unknown " << unknown
      << "; reads " << reads << " [fast " << fast_reads << ", slow " << slow_reads << ", batched "
      << batched_reads << "], writes " << writes << ", cas " << cas << " [succeeded "
      << cas_succeeded << ", mismatch " << cas_mismatch << "], updates " << updates << ", creates "
      << creates << ", shared creates " << shared_creates << " (" << shared_created
      << " created), tombstones " << tombstones << ", rebalance " << rebalance_ops
      << "), conflicts " << conflicts << ", no-quorum retries " << no_quorum_retries
      << ", messages " << messages << " (dropped " << dropped << ", duplicated " << duplicated
      << ", refused " << refused << "), crashes " << crashes << ", wipes " << wipes
      << ", simulated " << sim_time_us / 1000 << " ms, keys checked " << keys_checked
      << " (checker gave up on " << checker_gave_up << ")";
  return out.str();
}

std::string SimResult::Report() const {
  std::ostringstream out;
  out << "seed " << seed << ": " << violations.size() << " violation(s), " << errors.size()
      << " error(s)\n";
  for (const auto& e : errors) out << "error: " << e << "\n";
  for (const auto& v : violations) out << "violation: " << v << "\n";
  for (const auto& key : violating_keys) {
    auto it = histories.find(key);
    if (it == histories.end()) continue;
    out << "history of " << key << " (" << it->second.size() << " ops):\n"
        << FormatHistory(it->second);
  }
  out << "stats: " << stats.ToString() << "\n";
  return out.str();
}

namespace {

// The status the CAS change function aborts with when the current value differs from the
// expected one. The proposer never returns this code by itself.
constexpr StatusCode kCasMismatch = StatusCode::kRange;

constexpr int64_t kRoundTimeoutMs = 50;
constexpr int64_t kOpTimeoutMs = 2000;

std::string Quote(const std::optional<std::string>& v) { return v ? "'" + *v + "'" : "<absent>"; }

// 16 hex digits of a hash of a payload ("-" for absent): deterministic across runs.
std::string HashOf(const std::optional<std::string>& v) {
  if (!v) return "-";
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char ch : *v) h = (h ^ ch) * 1099511628211ULL;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---- Workload bookkeeping --------------------------------------------------------------------

struct KeyState {
  std::string key;
  std::string name;  // printable
  bool fresh = false;
  bool shared = false;  // a directory-entry key (SimOptions::shared_keys)
  int creator = -1;
  bool create_started = false;
  bool create_returned = false;
  int reserved = 0;  // operations started on this key (the cap counts these)
  std::vector<Operation> history;
};

enum class OpType { kRead, kWrite, kCas, kUpdate, kCreate, kCreateShared, kTombstone };

// A tombstone value of a shared key: a create may replace it, as it replaces an absent key.
bool IsTombstone(const std::optional<std::string>& v) { return v && !v->empty() && (*v)[0] == 'T'; }

// Negative control: a last-writer-wins register over the same acceptors. A write is an accept
// at ballot (now, client) sent to every replica without prepare; a read takes the highest
// accepted value among R replies without repairing anything; a CAS is a read then a write.
class LwwClient {
 public:
  LwwClient(RecordTransport& transport, kj::Timer& timer, uint64_t id, kj::TimePoint origin)
      : transport_(transport), timer_(timer), id_(id), origin_(origin) {}

  void SetConfig(std::shared_ptr<const ClusterConfig> config) { config_ = std::move(config); }

  struct ReadOutcome {
    OpOutcome outcome = OpOutcome::kFailed;
    std::optional<std::string> value;
  };

  kj::Promise<ReadOutcome> Read(std::string key) {
    auto spec = Spec(key);
    const int R = config_->read_quorum;
    auto skey = std::make_shared<std::string>(std::move(key));
    auto send = [this, spec, skey](size_t i) {
      return transport_.ReadAccepted(spec->targets[i], *skey);
    };
    auto decide = [spec, R](const std::vector<std::optional<Result<ReadAcceptedReply>>>& r) {
      auto votes = VotesOf(r, [](const ReadAcceptedReply&) { return true; });
      return spec->Satisfied(votes, R) || spec->Hopeless(votes, R);
    };
    return Gather<ReadAcceptedReply>(timer_, kRoundTimeoutMs * kj::MILLISECONDS,
                                     spec->targets.size(), send, decide)
        .then([spec, R](Gathered<ReadAcceptedReply>&& g) {
          auto votes = VotesOf(g.replies, [](const ReadAcceptedReply&) { return true; });
          ReadOutcome out;
          if (!spec->Satisfied(votes, R)) return out;
          const ReadAcceptedReply* best = nullptr;
          for (size_t i = 0; i < votes.size(); ++i) {
            if (votes[i] != Vote::kYes) continue;
            const ReadAcceptedReply& r = **g.replies[i];
            if (!best || r.accepted_ballot > best->accepted_ballot) best = &r;
          }
          out.outcome = OpOutcome::kOk;
          out.value = best->value;
          return out;
        });
  }

  kj::Promise<OpOutcome> Write(std::string key, std::string value) {
    auto spec = Spec(key);
    const int W = config_->write_quorum;
    Ballot ballot{static_cast<uint64_t>((timer_.now() - origin_) / kj::NANOSECONDS), id_};
    auto skey = std::make_shared<std::string>(std::move(key));
    auto svalue = std::make_shared<std::string>(std::move(value));
    auto send = [this, spec, skey, svalue, ballot](size_t i) {
      return transport_.Accept(spec->targets[i], *skey, ballot, *svalue);
    };
    auto decide = [spec, W](const std::vector<std::optional<Result<AcceptReply>>>& r) {
      auto votes = VotesOf(r, [](const AcceptReply& a) { return a.accepted; });
      return spec->Satisfied(votes, W) || spec->Hopeless(votes, W);
    };
    return Gather<AcceptReply>(timer_, kRoundTimeoutMs * kj::MILLISECONDS, spec->targets.size(),
                               send, decide)
        .then([spec, W](Gathered<AcceptReply>&& g) {
          auto votes = VotesOf(g.replies, [](const AcceptReply& a) { return a.accepted; });
          return spec->Satisfied(votes, W) ? OpOutcome::kOk : OpOutcome::kUnknown;
        });
  }

 private:
  std::shared_ptr<QuorumSpec> Spec(const std::string& key) const {
    return std::make_shared<QuorumSpec>(
        QuorumSpec::FromGroups(ReplicaGroupsFor(*config_, RecordPlacementKey(key))));
  }

  RecordTransport& transport_;
  kj::Timer& timer_;
  uint64_t id_;
  kj::TimePoint origin_;
  std::shared_ptr<const ClusterConfig> config_;
};

struct Client {
  int index = 0;
  std::unique_ptr<SimTransport> transport;
  std::unique_ptr<Proposer> proposer;
  std::unique_ptr<LwwClient> lww;
  size_t stage = 0;
  int ops_done = 0;
  int switch_after = 0;  // ops_done at which the client may move to the next configuration
  bool done = false;
  uint64_t next_value = 0;
  std::map<std::string, std::optional<std::string>> last_seen;  // by key, for CAS
};

// ---- The simulation ---------------------------------------------------------------------------

class Sim final : public kj::TaskSet::ErrorHandler {
 public:
  explicit Sim(const SimOptions& options)
      : options_(options),
        rng_(options.seed),
        timer_(kj::origin<kj::TimePoint>() + 1 * kj::SECONDS),
        ws_(loop_),
        tasks_(kj::heap<kj::TaskSet>(*this)) {
    start_ = timer_.now();
    NetworkOptions n;
    n.faults = options.faults;
    n.replicas = options.replicas;
    n.write_quorum = options.write_quorum;
    n.trace = options.trace;
    n.unsafe_reply_before_durable = options.unsafe_reply_before_durable;
    n.unsafe_read_unsynced = options.unsafe_read_unsynced;
    n.unsafe_wiped_node_votes = options.unsafe_wiped_node_votes;
    network_ = std::make_unique<SimNetwork>(n, rng_, timer_, *tasks_, start_, result_.errors);
  }

  ~Sim() {
    // Cancel everything still running, then let the event loop forget the promises that the
    // cancellation rejected, before the loop itself goes away.
    tasks_ = nullptr;
    network_->Shutdown();
    ws_.poll();
  }

  void taskFailed(kj::Exception&& e) override {
    result_.errors.push_back(std::string("exception: ") + kj::str(e).cStr());
  }

  SimResult Run();

 private:
  // -- randomness and time (the network draws from the same generator)
  bool Chance(double p) { return network_->Chance(p); }
  int64_t Uniform(int64_t lo, int64_t hi) { return network_->Uniform(lo, hi); }
  kj::Duration UniformUs(int64_t lo_us, int64_t hi_us) { return network_->UniformUs(lo_us, hi_us); }
  int64_t NowNs() const { return (timer_.now() - start_) / kj::NANOSECONDS; }
  void Trace(const std::string& line) { network_->Trace(line); }

  // -- workload
  void Setup();
  kj::Promise<void> ClientLoop(Client& c);
  kj::Promise<void> RunOp(Client& c, KeyState& k, OpType type);
  bool PickOp(Client& c, KeyState** key, OpType* type);
  void Record(Client& c, KeyState& k, Operation op);
  // An operation with an unknown outcome whose change function produced these payloads (each
  // from the value it saw): any one of them may take effect (at most one will).
  void RecordEachPossible(Client& c, KeyState& k, const Operation& op,
                          const std::map<std::string, std::optional<std::string>>& produced) {
    for (const auto& [payload, current] : produced) {
      Operation each = op;
      each.expected = current;
      each.value = payload;
      Record(c, k, std::move(each));
    }
  }
  OpOutcome Classify(const Status& s, const std::string& what);
  std::string NewValue(Client& c) {
    return "c" + std::to_string(c.index) + "." + std::to_string(++c.next_value);
  }

  // -- membership
  bool CanAdvance(const Client& c) const;
  void Advance(Client& c);
  void Progress();  // advances idle clients, starts rebalances, notices the end
  kj::Promise<void> RebalanceKey(size_t stage, size_t i);
  std::shared_ptr<const ClusterConfig> MakeConfig(const std::vector<std::string>& nodes,
                                                  const std::vector<std::string>& previous,
                                                  uint64_t epoch) const;

  void CheckHistories();

  SimOptions options_;
  std::mt19937_64 rng_;
  kj::TimerImpl timer_;  // declared before the loop: destroyed after every timer promise
  kj::EventLoop loop_;
  kj::WaitScope ws_;
  kj::TimePoint start_ = kj::origin<kj::TimePoint>();
  SimResult result_;

  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<KeyState> keys_;
  std::vector<std::shared_ptr<const ClusterConfig>> stages_;
  std::vector<bool> joint_;
  std::vector<int> rebalance_;  // per stage: 0 not started, 1 running, 2 done
  std::unique_ptr<SimTransport> rebalance_transport_;
  std::unique_ptr<Proposer> rebalancer_;
  bool workload_done_ = false;

  kj::Own<kj::TaskSet> tasks_;  // emptied first (~Sim), then the network shuts down
  std::unique_ptr<SimNetwork> network_;
};

// ---- Setup and membership -------------------------------------------------------------------

std::shared_ptr<const ClusterConfig> Sim::MakeConfig(const std::vector<std::string>& nodes,
                                                     const std::vector<std::string>& previous,
                                                     uint64_t epoch) const {
  auto config = std::make_shared<ClusterConfig>();
  config->epoch = epoch;
  config->replicas = options_.replicas;
  config->write_quorum = options_.write_quorum;
  config->read_quorum = options_.read_quorum;
  for (size_t i = 0; i < nodes.size(); ++i) {
    NodeInfo info;
    info.id = nodes[i];
    info.host = "127.0.0.1";
    info.port = static_cast<uint16_t>(7101 + i);
    info.address = info.host + ":" + std::to_string(info.port);
    config->nodes.push_back(info);
  }
  config->previous = previous;
  return config;
}

void Sim::Setup() {
  const int n = options_.replicas;
  std::vector<std::string> ids;
  const int added = options_.membership_change ? options_.nodes_changed : 0;
  for (int i = 0; i < n + added; ++i) {
    ids.push_back(std::string(1, static_cast<char>('a' + i)));
  }
  for (const auto& id : ids) network_->AddNode(id);
  std::vector<std::string> initial(ids.begin(), ids.begin() + n);
  stages_.push_back(MakeConfig(initial, {}, 1));
  joint_.push_back(false);
  if (options_.membership_change) {
    // Add the new node, then remove the first one; each change goes through a joint
    // configuration, a rebalance of every key, and the final configuration. The joint
    // configuration's `nodes` must already be the final list: the rebalance moves every key
    // to its replica set under those nodes. (Going from {a,b,c,d | a,b,c} straight to {b,c,d}
    // leaves keys whose rebalanced copies sit on a, and loses writes.)
    std::vector<std::string> grown = ids;
    std::vector<std::string> shrunk(ids.begin() + added, ids.end());
    stages_.push_back(MakeConfig(grown, initial, 2));
    joint_.push_back(true);
    stages_.push_back(MakeConfig(grown, {}, 3));
    joint_.push_back(false);
    stages_.push_back(MakeConfig(shrunk, grown, 4));
    joint_.push_back(true);
    stages_.push_back(MakeConfig(shrunk, {}, 5));
    joint_.push_back(false);
  }
  rebalance_.assign(stages_.size(), 0);

  for (int i = 0; i < options_.keys; ++i) {
    KeyState k;
    k.key = InodeKey(1 + i);
    k.name = DescribeKey(k.key);
    keys_.push_back(std::move(k));
  }
  for (int i = 0; i < options_.shared_keys; ++i) {
    KeyState k;
    k.key = DirEntryKey(1, "s" + std::to_string(i));
    k.name = DescribeKey(k.key);
    k.shared = true;
    keys_.push_back(std::move(k));
  }
  for (int i = 0; i < options_.fresh_keys; ++i) {
    KeyState k;
    k.key = InodeKey(1000 + i);
    k.name = DescribeKey(k.key);
    k.fresh = true;
    k.creator = static_cast<int>(Uniform(0, options_.clients - 1));
    keys_.push_back(std::move(k));
  }

  std::vector<uint64_t> used_ids;
  auto fresh_id = [&]() {
    uint64_t id;
    do {
      id = rng_() | 1;
    } while (std::find(used_ids.begin(), used_ids.end(), id) != used_ids.end());
    used_ids.push_back(id);
    return id;
  };
  auto proposer_options = [&]() {
    ProposerOptions po;
    po.proposer_id = fresh_id();
    po.rng_seed = rng_() | 1;
    po.round_timeout = kRoundTimeoutMs * kj::MILLISECONDS;
    po.op_timeout = kOpTimeoutMs * kj::MILLISECONDS;
    po.unsafe_fast_read_single_reply = options_.unsafe_fast_read_single_reply;
    po.one_round_changes = options_.one_round_changes;
    po.unsafe_trust_any_refusal = options_.unsafe_trust_any_refusal;
    po.unsafe_round0_highest_wins = options_.unsafe_round0_highest_wins;
    po.unsafe_round0_first_group = options_.unsafe_round0_first_group;
    po.unsafe_ignore_joint_quorum = options_.unsafe_ignore_joint_quorum;
    po.no_quorum_retry = options_.no_quorum_retry_ms * kj::MILLISECONDS;
    return po;
  };
  for (int i = 0; i < options_.clients; ++i) {
    auto c = std::make_unique<Client>();
    c->index = i;
    c->transport = std::make_unique<SimTransport>(*network_, i);
    if (options_.client_kind == ClientKind::kProposer) {
      c->proposer = std::make_unique<Proposer>(*c->transport, timer_, proposer_options());
      c->proposer->SetConfig(stages_[0]);
    } else {
      c->lww =
          std::make_unique<LwwClient>(*c->transport, timer_, static_cast<uint64_t>(i + 1), start_);
      c->lww->SetConfig(stages_[0]);
    }
    c->switch_after = static_cast<int>(Uniform(3, 12));
    clients_.push_back(std::move(c));
  }
  if (options_.membership_change) {
    rebalance_transport_ = std::make_unique<SimTransport>(*network_, options_.clients);
    rebalancer_ = std::make_unique<Proposer>(*rebalance_transport_, timer_, proposer_options());
    rebalancer_->SetConfig(stages_[0]);
  }
}

bool Sim::CanAdvance(const Client& c) const {
  size_t s = c.stage;
  if (s + 1 >= stages_.size()) return false;
  // At most two neighbouring configurations are in use at once.
  for (const auto& o : clients_) {
    if (o->stage < s) return false;
  }
  // Nobody leaves a joint configuration before every key has been moved under it.
  if (joint_[s] && rebalance_[s] != 2) return false;
  return true;
}

void Sim::Advance(Client& c) {
  ++c.stage;
  if (c.proposer) c.proposer->SetConfig(stages_[c.stage]);
  if (c.lww) c.lww->SetConfig(stages_[c.stage]);
  c.switch_after = c.ops_done + static_cast<int>(Uniform(2, 10));
  Trace("client " + std::to_string(c.index) + " switched to configuration " +
        std::to_string(c.stage) + " (epoch " + std::to_string(stages_[c.stage]->epoch) + ")");
}

void Sim::Progress() {
  bool changed = true;
  while (changed) {
    changed = false;
    // Clients that finished their operations follow the others through the configurations.
    for (auto& c : clients_) {
      if (c->done && CanAdvance(*c)) {
        Advance(*c);
        changed = true;
      }
    }
    // A joint configuration every client uses gets its rebalance.
    for (size_t s = 0; s < stages_.size(); ++s) {
      if (!joint_[s] || rebalance_[s] != 0) continue;
      bool all = true;
      for (auto& c : clients_) all = all && c->stage == s;
      if (!all) continue;
      rebalance_[s] = 1;
      Trace("rebalance under configuration " + std::to_string(s) + " starts");
      rebalancer_->SetConfig(stages_[s]);
      tasks_->add(RebalanceKey(s, 0));
    }
  }
  bool finished = true;
  for (auto& c : clients_) {
    finished = finished && c->done && c->stage + 1 == stages_.size();
  }
  if (finished && !workload_done_) {
    workload_done_ = true;
    Trace("workload done");
  }
}

kj::Promise<void> Sim::RebalanceKey(size_t stage, size_t i) {
  if (i == keys_.size()) {
    rebalance_[stage] = 2;
    Trace("rebalance under configuration " + std::to_string(stage) + " done");
    Progress();
    return kj::READY_NOW;
  }
  // Re-write the current payload so that it is accepted by a quorum of the new replica set
  // (a plain Keep may skip the accept when the value is already chosen in the old set).
  Operation op;
  op.client = options_.clients;  // the rebalancer
  op.kind = OpKind::kRead;
  op.invoke_time = NowNs();
  return rebalancer_
      ->Change(keys_[i].key,
               [](const std::optional<std::string>& current) {
                 return current ? Decision::Write(*current) : Decision::Keep();
               })
      .then([this, stage, i, op](Result<RecordValue>&& r) mutable -> kj::Promise<void> {
        ++result_.stats.rebalance_ops;
        if (r.ok()) {
          // Writing back the value it read changes nothing: to the register it is a read.
          op.value = r->payload;
          op.outcome = OpOutcome::kOk;
          op.return_time = NowNs();
          keys_[i].history.push_back(op);
          return RebalanceKey(stage, i + 1);
        }
        Classify(r.status(), "rebalance of " + keys_[i].name);
        return timer_.afterDelay(5 * kj::MILLISECONDS).then([this, stage, i]() {
          return RebalanceKey(stage, i);
        });
      });
}

// ---- Workload ---------------------------------------------------------------------------------

bool Sim::PickOp(Client& c, KeyState** key, OpType* type) {
  const int cap = options_.max_ops_per_key;
  struct Candidate {
    KeyState* key;
    bool read_only;
    bool create;
  };
  std::vector<Candidate> candidates;
  for (auto& k : keys_) {
    if (k.reserved >= (k.shared ? options_.max_ops_per_shared_key : cap)) continue;
    if (!k.fresh || k.create_returned) {
      candidates.push_back({&k, false, false});
    } else if (k.creator == c.index) {
      if (!k.create_started) candidates.push_back({&k, false, true});
    } else if (k.reserved < cap - 1) {  // one slot stays for the create
      // Nobody but the creator writes a fresh key before its creation returned: the one
      // skip-prepare write is only safe for a key no other proposer writes.
      candidates.push_back({&k, true, false});
    }
  }
  if (candidates.empty()) return false;
  const Candidate& pick = candidates[Uniform(0, static_cast<int64_t>(candidates.size()) - 1)];
  *key = pick.key;
  if (pick.create) {
    *type = OpType::kCreate;
  } else if (pick.key->shared && options_.client_kind == ClientKind::kProposer) {
    int64_t roll = Uniform(0, 99);
    *type = roll < 25   ? OpType::kRead
            : roll < 50 ? OpType::kTombstone
            : roll < 85 ? OpType::kCreateShared
            : roll < 93 ? OpType::kCas
                        : OpType::kUpdate;
  } else if (pick.read_only) {
    *type = OpType::kRead;
  } else {
    int64_t roll = Uniform(0, 99);
    *type = roll < 35   ? OpType::kRead
            : roll < 55 ? OpType::kWrite
            : roll < 80 ? OpType::kCas
                        : OpType::kUpdate;
    if (*type == OpType::kUpdate && options_.client_kind != ClientKind::kProposer) {
      *type = OpType::kCas;
    }
  }
  return true;
}

kj::Promise<void> Sim::ClientLoop(Client& c) {
  return timer_.afterDelay(UniformUs(0, options_.max_think_us))
      .then([this, &c]() -> kj::Promise<void> {
        if (c.ops_done >= c.switch_after && CanAdvance(c)) Advance(c);
        Progress();
        KeyState* key = nullptr;
        OpType type = OpType::kRead;
        if (!PickOp(c, &key, &type)) {
          c.done = true;
          Trace("client " + std::to_string(c.index) + " done");
          Progress();
          return kj::READY_NOW;
        }
        ++key->reserved;
        if (type == OpType::kCreate) key->create_started = true;
        return RunOp(c, *key, type).then([this, &c]() {
          ++c.ops_done;
          return ClientLoop(c);
        });
      });
}

OpOutcome Sim::Classify(const Status& s, const std::string& what) {
  switch (s.code()) {
    case StatusCode::kNoQuorum:
    case StatusCode::kTimedOut:
    case StatusCode::kEpochMismatch:
      return OpOutcome::kFailed;
    case StatusCode::kUnknownOutcome:
      return OpOutcome::kUnknown;
    default:
      result_.errors.push_back(what + ": unexpected status " + s.ToString());
      return OpOutcome::kUnknown;
  }
}

void Sim::Record(Client& c, KeyState& k, Operation op) {
  op.return_time = NowNs();
  auto& st = result_.stats;
  ++st.ops;
  switch (op.outcome) {
    case OpOutcome::kOk:
      ++st.ok;
      break;
    case OpOutcome::kFailed:
      ++st.failed;
      break;
    case OpOutcome::kUnknown:
      ++st.unknown;
      break;
  }
  if (op.kind == OpKind::kCas && op.outcome == OpOutcome::kOk) {
    if (op.cas_succeeded) {
      ++st.cas_succeeded;
    } else {
      ++st.cas_mismatch;
    }
  }
  Trace("client " + std::to_string(c.index) + " " + k.name + ": " + DescribeOperation(op));
  k.history.push_back(std::move(op));
}

kj::Promise<void> Sim::RunOp(Client& c, KeyState& k, OpType type) {
  Operation op;
  op.client = c.index;
  op.invoke_time = NowNs();
  std::string what = "client " + std::to_string(c.index) + " on " + k.name;
  switch (type) {
    case OpType::kRead: {
      ++result_.stats.reads;
      op.kind = OpKind::kRead;
      if (c.lww) {
        return c.lww->Read(k.key).then([this, &c, &k, op](LwwClient::ReadOutcome r) mutable {
          op.outcome = r.outcome;
          op.value = r.value;
          if (r.outcome == OpOutcome::kOk) c.last_seen[k.key] = r.value;
          Record(c, k, std::move(op));
        });
      }
      kj::Promise<Result<RecordValue>> read = nullptr;
      if (options_.batched_read_percent > 0 && Uniform(0, 99) < options_.batched_read_percent) {
        // A batched read (Proposer::ReadMany, as readdir uses it) of every key in a random
        // order; only this key's answer is recorded, but all of them share the messages.
        ++result_.stats.batched_reads;
        std::vector<std::string> keys;
        size_t mine = 0;
        for (const auto& other : keys_) {
          if (&other == &k) mine = keys.size();
          keys.push_back(other.key);
        }
        size_t to = static_cast<size_t>(Uniform(0, static_cast<int64_t>(keys.size()) - 1));
        std::swap(keys[mine], keys[to]);
        read = c.proposer->ReadMany(std::move(keys))
                   .then([to](std::vector<Result<RecordValue>>&& all) { return all[to]; });
      } else {
        read = c.proposer->Read(k.key);
      }
      return read.then([this, &c, &k, op, what](Result<RecordValue>&& r) mutable {
        if (r.ok()) {
          op.outcome = OpOutcome::kOk;
          op.value = r->payload;
          c.last_seen[k.key] = r->payload;
        } else {
          op.outcome = Classify(r.status(), what + ": read");
        }
        Record(c, k, std::move(op));
      });
    }
    case OpType::kTombstone:
    case OpType::kWrite: {
      ++result_.stats.writes;
      if (type == OpType::kTombstone) ++result_.stats.tombstones;
      op.kind = OpKind::kWrite;
      std::string value = (type == OpType::kTombstone ? "T" : "") + NewValue(c);
      op.value = value;
      if (c.lww) {
        return c.lww->Write(k.key, value).then([this, &c, &k, op, value](OpOutcome o) mutable {
          op.outcome = o;
          if (o == OpOutcome::kOk) c.last_seen[k.key] = value;
          Record(c, k, std::move(op));
        });
      }
      return c.proposer
          ->Change(k.key,
                   [value](const std::optional<std::string>&) { return Decision::Write(value); })
          .then([this, &c, &k, op, value, what](Result<RecordValue>&& r) mutable {
            if (r.ok()) {
              op.outcome = OpOutcome::kOk;
              c.last_seen[k.key] = value;
              if (r->payload != value) {
                result_.errors.push_back(what + ": write returned " + Quote(r->payload));
              }
            } else {
              op.outcome = Classify(r.status(), what + ": write");
            }
            Record(c, k, std::move(op));
          });
    }
    case OpType::kCas: {
      ++result_.stats.cas;
      op.kind = OpKind::kCas;
      std::optional<std::string> expected;
      auto seen = c.last_seen.find(k.key);
      if (seen != c.last_seen.end() && !Chance(0.1)) expected = seen->second;
      std::string value = NewValue(c);
      op.expected = expected;
      op.value = value;
      if (c.lww) {
        return c.lww->Read(k.key).then([this, &c, &k, op, expected, value](
                                           LwwClient::ReadOutcome r) mutable -> kj::Promise<void> {
          if (r.outcome != OpOutcome::kOk) {
            op.outcome = OpOutcome::kFailed;
            Record(c, k, std::move(op));
            return kj::READY_NOW;
          }
          if (r.value != expected) {
            op.outcome = OpOutcome::kOk;
            op.cas_succeeded = false;
            c.last_seen[k.key] = r.value;
            Record(c, k, std::move(op));
            return kj::READY_NOW;
          }
          return c.lww->Write(k.key, value).then([this, &c, &k, op, value](OpOutcome o) mutable {
            op.outcome = o;
            op.cas_succeeded = true;
            if (o == OpOutcome::kOk) c.last_seen[k.key] = value;
            Record(c, k, std::move(op));
          });
        });
      }
      // What the change function saw last, so the next CAS of this client can succeed.
      auto saw = std::make_shared<std::optional<std::string>>();
      return c.proposer
          ->Change(k.key,
                   [expected, value, saw](const std::optional<std::string>& current) {
                     *saw = current;
                     if (current != expected) {
                       return Decision::Abort(Status(kCasMismatch, "cas mismatch"));
                     }
                     return Decision::Write(value);
                   })
          .then([this, &c, &k, op, value, saw, what](Result<RecordValue>&& r) mutable {
            if (r.ok()) {
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = true;
              c.last_seen[k.key] = value;
              if (r->payload != value) {
                result_.errors.push_back(what + ": cas returned " + Quote(r->payload));
              }
            } else if (r.status().code() == kCasMismatch) {
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = false;
              c.last_seen[k.key] = *saw;
            } else {
              op.outcome = Classify(r.status(), what + ": cas");
            }
            Record(c, k, std::move(op));
          });
    }
    case OpType::kUpdate: {
      // A read-modify-write whose new payload depends on the current one: "<op>^<hash of
      // current>". The change function remembers what it saw for each payload it produced, so
      // the operation is recorded as the CAS that the returned payload implies.
      ++result_.stats.updates;
      op.kind = OpKind::kCas;
      std::string id = NewValue(c);
      auto produced = std::make_shared<std::map<std::string, std::optional<std::string>>>();
      return c.proposer
          ->Change(k.key,
                   [id, produced](const std::optional<std::string>& current) {
                     std::string payload = id + "^" + HashOf(current);
                     (*produced)[payload] = current;
                     return Decision::Write(payload);
                   })
          .then([this, &c, &k, op, produced, what](Result<RecordValue>&& r) mutable {
            if (r.ok()) {
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = true;
              op.value = r->payload;
              c.last_seen[k.key] = r->payload;
              auto it = r->payload ? produced->find(*r->payload) : produced->end();
              if (it == produced->end()) {
                result_.errors.push_back(what + ": update returned " + Quote(r->payload) +
                                         ", which its change function never produced");
              } else {
                op.expected = it->second;
              }
              Record(c, k, std::move(op));
              return;
            }
            op.outcome = Classify(r.status(), what + ": update");
            if (op.outcome != OpOutcome::kUnknown || produced->empty()) {
              Record(c, k, std::move(op));
              return;
            }
            RecordEachPossible(c, k, op, *produced);
          });
    }
    case OpType::kCreateShared: {
      // A directory entry's create: absent or a tombstone -> "<op>^<hash of what it replaced>";
      // a live value aborts with AlreadyExists. The one-round write is the payload the function
      // makes of an absent key. Recorded like kUpdate (the CAS the returned payload implies),
      // an AlreadyExists as the read of the live value the function saw last.
      ++result_.stats.shared_creates;
      op.kind = OpKind::kCas;
      std::string id = NewValue(c);
      std::string first = id + "^" + HashOf(std::nullopt);
      auto produced = std::make_shared<std::map<std::string, std::optional<std::string>>>();
      (*produced)[first] = std::nullopt;
      auto saw = std::make_shared<std::optional<std::string>>();
      ChangeFn f = [id, produced, saw](const std::optional<std::string>& current) {
        *saw = current;
        if (current && !IsTombstone(current)) {
          return Decision::Abort(Status(StatusCode::kAlreadyExists, "entry exists"));
        }
        std::string payload = id + "^" + HashOf(current);
        (*produced)[payload] = current;
        return Decision::Write(payload);
      };
      return c.proposer->CreateShared(k.key, first, std::move(f))
          .then([this, &c, &k, op, produced, saw, what](Result<RecordValue>&& r) mutable {
            if (r.ok()) {
              auto it = r->payload ? produced->find(*r->payload) : produced->end();
              if (it == produced->end()) {
                result_.errors.push_back(what + ": shared create returned " + Quote(r->payload));
                return;
              }
              ++result_.stats.shared_created;
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = true;
              op.expected = it->second;
              op.value = it->first;
              c.last_seen[k.key] = it->first;
              Record(c, k, std::move(op));
              return;
            }
            if (r.status().code() == StatusCode::kAlreadyExists) {
              Operation read = op;
              read.kind = OpKind::kRead;
              read.outcome = OpOutcome::kOk;
              read.value = *saw;
              c.last_seen[k.key] = *saw;
              Record(c, k, std::move(read));
              return;
            }
            op.outcome = Classify(r.status(), what + ": shared create");
            if (op.outcome != OpOutcome::kUnknown) {
              op.expected = std::nullopt;
              op.value = produced->begin()->first;
              Record(c, k, std::move(op));
              return;
            }
            RecordEachPossible(c, k, op, *produced);
          });
    }
    case OpType::kCreate: {
      ++result_.stats.creates;
      // A create is a CAS from absent; only this client ever creates this key, once.
      op.kind = OpKind::kCas;
      op.expected = std::nullopt;
      std::string value = NewValue(c);
      op.value = value;
      auto finish = [this, &c, &k](Operation op) {
        k.create_returned = true;
        Record(c, k, std::move(op));
      };
      if (c.lww) {
        return c.lww->Write(k.key, value).then([&c, &k, op, value, finish](OpOutcome o) mutable {
          op.outcome = o;
          op.cas_succeeded = true;
          if (o == OpOutcome::kOk) c.last_seen[k.key] = value;
          finish(std::move(op));
        });
      }
      return c.proposer->CreateFresh(k.key, value)
          .then([this, &c, &k, op, value, what, finish](Result<RecordValue>&& r) mutable {
            if (r.ok()) {
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = true;
              c.last_seen[k.key] = value;
            } else if (r.status().code() == StatusCode::kAlreadyExists) {
              op.outcome = OpOutcome::kOk;
              op.cas_succeeded = false;
            } else {
              op.outcome = Classify(r.status(), what + ": create");
            }
            finish(std::move(op));
          });
    }
  }
  return kj::READY_NOW;
}

void Sim::CheckHistories() {
  for (auto& k : keys_) {
    ++result_.stats.keys_checked;
    CheckResult check = CheckRegisterHistory(k.history, options_.checker_max_states);
    if (check.gave_up) ++result_.stats.checker_gave_up;
    if (!check.linearizable) {
      result_.violations.push_back(k.name + ": " + check.explanation);
      result_.violating_keys.push_back(k.name);
    }
    result_.histories[k.name] = std::move(k.history);
  }
}

SimResult Sim::Run() {
  result_.seed = options_.seed;
  Setup();
  for (auto& c : clients_) tasks_->add(ClientLoop(*c));
  if (options_.faults.crashes) network_->StartFaults([this]() { return workload_done_; });
  const kj::TimePoint limit = start_ + options_.max_sim_time_ms * kj::MILLISECONDS;
  while (true) {
    ws_.poll();
    if (workload_done_) break;
    KJ_IF_MAYBE (next, timer_.nextEvent()) {
      if (*next > limit) {
        result_.errors.push_back("run did not finish within " +
                                 std::to_string(options_.max_sim_time_ms) + " ms simulated");
        break;
      }
      timer_.advanceTo(*next);
    } else {
      result_.errors.push_back("no event left but the workload is not done");
      break;
    }
  }
  result_.stats.sim_time_us = NowNs() / 1000;
  const NetworkStats& net = network_->stats();
  result_.stats.messages = net.messages;
  result_.stats.dropped = net.dropped;
  result_.stats.duplicated = net.duplicated;
  result_.stats.refused = net.refused;
  result_.stats.crashes = net.crashes;
  result_.stats.wipes = net.wipes;
  for (auto& c : clients_) {
    if (c->proposer) {
      const auto& counters = c->proposer->counters();
      result_.stats.fast_reads += counters.fast_reads;
      result_.stats.slow_reads += counters.slow_reads;
      result_.stats.conflicts += counters.conflicts;
      result_.stats.no_quorum_retries += counters.no_quorum_retries;
    }
    result_.stats.final_stage = std::max(result_.stats.final_stage, static_cast<int>(c->stage));
  }
  CheckHistories();
  return std::move(result_);
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  AcceptorCore::UnsafeNoNextPromiseForTesting() = options.unsafe_accept_without_next_promise;
  SimResult r;
  {
    Sim sim(options);
    r = sim.Run();
  }
  AcceptorCore::UnsafeNoNextPromiseForTesting() = false;
  return r;
}

}  // namespace quorumfs::sim
