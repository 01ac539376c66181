// Deterministic simulation of the metadata protocol (tests/sim/sim_cluster.h): many seeded runs
// of the real Proposer and AcceptorCore under message loss, duplication and reordering,
// crashes, lost disks and membership changes, each checked for linearizability key by key.
//
// Every test also has negative controls: a run with one safety rule broken must produce a
// violation within a bounded number of seeds, which shows the simulator and checker can see
// the failures they are meant to catch.
//
// Replay one seed:   QUORUMFS_SIM_SEED=<seed> ./simulation_test --gtest_filter=<test>
// ... with a trace:  QUORUMFS_SIM_TRACE=1 (prints every message, crash and operation)
// Soak for longer:   QUORUMFS_SIM_BUDGET_SECONDS=<s> (each many-seed test runs that long) and
//                    QUORUMFS_SIM_FIRST_SEED=<n> (start elsewhere than seed 1).
// GCC 12 at -O2 reports false -Wmaybe-uninitialized inside kj's promise nodes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/acceptor.h"
#include "common/cluster_config.h"
#include "common/proposer.h"
#include "common/record.h"
#include "common/record_key.h"
#include "common/record_transport.h"
#include "tests/sim/sim_cluster.h"

namespace quorumfs::sim {
namespace {

enum class Scenario {
  kThreeNodes,
  kFiveNodes,
  kMembership,
  kMembershipTwoNodes,
  kRejoin,
  kFaultFree,
  // Negative controls.
  kLastWriterWins,
  kReplyBeforeDurable,
  kReadUnsynced,
  kFastReadSingleReply,
  kIgnoreJointQuorum,
  kWipedNodeVotes,
  kNoNextPromise,
};

std::optional<uint64_t> EnvU64(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::strtoull(v, nullptr, 10);
}

// Options of one seed; a pure function of (scenario, seed) so that any run can be replayed.
SimOptions OptionsFor(Scenario scenario, uint64_t seed) {
  SimOptions o;
  o.seed = seed;
  o.trace = EnvU64("QUORUMFS_SIM_TRACE").value_or(0) != 0;
  o.one_round_changes = EnvU64("QUORUMFS_SIM_TWO_ROUNDS").value_or(0) == 0;
  o.clients = 3 + static_cast<int>(seed % 3);
  o.keys = 2 + static_cast<int>((seed / 3) % 2);  // two or three shared keys: lots of contention
  if (seed % 5 == 0) {
    o.clients = 6;  // everybody on one key
    o.keys = 1;
    o.max_think_us = 1000;
  }
  o.fresh_keys = 2;
  o.max_ops_per_key = 50;
  // Directory-entry keys created with the one-round shared create and tombstoned, past the
  // window of recent change ids; not in the negative controls, whose seeds were found without.
  const int shared_keys = 1 + static_cast<int>(seed % 2);
  // Vary the fault mix from seed to seed.
  o.faults.crash_interval_mean_us = 20'000 + static_cast<int64_t>((seed * 7919) % 60'000);
  if (seed % 4 == 0) {
    o.faults.drop_rate = 0;
    o.faults.dup_rate = 0;
  }
  switch (scenario) {
    case Scenario::kThreeNodes:
      o.shared_keys = shared_keys;
      break;
    case Scenario::kFiveNodes:
      o.shared_keys = shared_keys;
      o.replicas = 5;
      o.write_quorum = 3;
      o.read_quorum = 3;
      o.clients = 4 + static_cast<int>(seed % 2);
      break;
    case Scenario::kMembership:
      o.shared_keys = shared_keys;
      o.membership_change = true;
      o.max_ops_per_key = 60;
      break;
    case Scenario::kMembershipTwoNodes:
      o.shared_keys = shared_keys;
      o.membership_change = true;
      o.nodes_changed = 2;
      o.max_ops_per_key = 60;
      break;
    case Scenario::kRejoin:
      o.shared_keys = shared_keys;
      o.faults.wipe_rate = 0.5;
      o.faults.max_wipes = 1;
      if (seed % 2 == 0) {
        o.replicas = 5;
        o.write_quorum = 3;
        o.read_quorum = 3;
        o.faults.max_wipes = 2;
      }
      break;
    case Scenario::kFaultFree:
      o.shared_keys = shared_keys;
      o.faults = NoFaults();
      break;
    case Scenario::kLastWriterWins:
      o.client_kind = ClientKind::kLastWriterWins;
      break;
    case Scenario::kReplyBeforeDurable:
      o.unsafe_reply_before_durable = true;
      o.faults.crash_interval_mean_us = 8'000;
      o.faults.downtime_min_us = 500;
      o.faults.downtime_max_us = 5'000;
      o.faults.disk_min_us = 500;
      o.faults.disk_max_us = 8'000;
      o.faults.over_budget_rate = 0.3;
      break;
    case Scenario::kReadUnsynced:
      o.unsafe_read_unsynced = true;
      o.faults.crash_interval_mean_us = 8'000;
      o.faults.downtime_min_us = 500;
      o.faults.downtime_max_us = 5'000;
      o.faults.disk_min_us = 500;
      o.faults.disk_max_us = 8'000;
      o.faults.over_budget_rate = 0.3;
      break;
    case Scenario::kFastReadSingleReply:
      o.unsafe_fast_read_single_reply = true;
      break;
    case Scenario::kIgnoreJointQuorum:
      o.membership_change = true;
      o.unsafe_ignore_joint_quorum = true;
      o.max_ops_per_key = 60;
      break;
    case Scenario::kNoNextPromise:
      o.one_round_changes = true;
      o.unsafe_accept_without_next_promise = true;
      break;
    case Scenario::kWipedNodeVotes:
      o.unsafe_wiped_node_votes = true;
      o.faults.wipe_rate = 0.7;
      o.faults.max_wipes = 20;
      o.faults.over_budget_rate = 0.2;
      break;
  }
  return o;
}

std::string TestName() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

std::string ReplayHint(uint64_t seed) {
  return "replay: QUORUMFS_SIM_SEED=" + std::to_string(seed) +
         " ./simulation_test --gtest_filter=" + TestName() +
         "  (add QUORUMFS_SIM_TRACE=1 for a trace)";
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Runs seeds first_seed, first_seed+1, ... until max_seeds ran or budget_seconds passed; fails
// on the first seed with a violation or error. Returns the aggregated stats.
// QUORUMFS_SIM_BUDGET_SECONDS replaces the budget and lifts the seed count (soak runs).
SimStats RunSeeds(Scenario scenario, int max_seeds, double budget_seconds) {
  SimStats total;
  auto replay = EnvU64("QUORUMFS_SIM_SEED");
  uint64_t first = replay.value_or(EnvU64("QUORUMFS_SIM_FIRST_SEED").value_or(1));
  if (auto budget = EnvU64("QUORUMFS_SIM_BUDGET_SECONDS")) {
    budget_seconds = static_cast<double>(*budget);
    max_seeds = 1'000'000'000;
  }
  if (replay) max_seeds = 1;
  auto start = std::chrono::steady_clock::now();
  int ran = 0;
  for (uint64_t seed = first; ran < max_seeds; ++seed) {
    if (ran > 0 && Seconds(start) > budget_seconds) break;
    SimOptions options = OptionsFor(scenario, seed);
    // Every third seed's proposers try a prepare that reached too few replicas again (as the
    // mount's do) instead of failing the operation at once. (Not in the negative controls,
    // whose seeds were found without.)
    if (seed % 3 == 1) options.no_quorum_retry_ms = 20;
    SimResult r = RunSimulation(options);
    ++ran;
    total.Add(r.stats);
    if (!r.ok()) {
      ADD_FAILURE() << r.Report() << ReplayHint(seed);
      break;
    }
  }
  double secs = Seconds(start);
  std::printf("[%s] %d seed(s) from %llu in %.1f s (%.1f seeds/s)\n  %s\n", TestName().c_str(), ran,
              static_cast<unsigned long long>(first), secs, ran / std::max(secs, 1e-9),
              total.ToString().c_str());
  std::fflush(stdout);
  return total;
}

// A negative control: some seed among the first max_seeds must show a violation.
void ExpectViolation(Scenario scenario, int max_seeds) {
  auto replay = EnvU64("QUORUMFS_SIM_SEED");
  uint64_t first = replay.value_or(1);
  if (replay) max_seeds = 1;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + static_cast<uint64_t>(max_seeds); ++seed) {
    SimResult r = RunSimulation(OptionsFor(scenario, seed));
    if (!r.violations.empty()) {
      std::printf("[%s] caught at seed %llu (after %llu seed(s), %.1f s): %s\n", TestName().c_str(),
                  static_cast<unsigned long long>(seed),
                  static_cast<unsigned long long>(seed - first + 1), Seconds(start),
                  r.violations.front().substr(0, 300).c_str());
      if (replay) std::printf("%s", r.Report().c_str());
      return;
    }
    if (replay) std::printf("%s", r.Report().c_str());
  }
  if (!replay) FAIL() << "no violation within " << max_seeds << " seeds";
}

// ---- A scripted interleaving -----------------------------------------------------------------
//
// Three acceptors in memory; a policy decides for each request whether it is processed at once,
// lost (never answered), or held until the test releases it.
class ScriptedCluster final : public RecordTransport {
 public:
  enum class Action { kDeliver, kDrop, kHold };
  using Policy = std::function<Action(const char* kind, const std::string& node, Ballot ballot)>;

  class Storage final : public AcceptorStorage {
   public:
    Result<std::optional<AcceptorState>> LoadRecord(const std::string& key) override {
      auto it = rows.find(key);
      if (it == rows.end()) return std::optional<AcceptorState>();
      return std::optional<AcceptorState>(it->second);
    }
    Result<Ballot> LoadFloor(const std::string&) override { return Ballot{}; }
    void Apply(const AcceptorWrite& w) {
      for (const auto& [key, row] : w.rows) {
        if (row) rows[key] = *row;
      }
    }
    std::map<std::string, AcceptorState> rows;
  };

  kj::Promise<Result<PrepareReply>> Prepare(const std::string& node, const std::string& key,
                                            Ballot ballot) override {
    return Handle<PrepareReply>("prepare", node, ballot, [key, ballot](Storage& s) {
      return AcceptorCore::Prepare(s, key, ballot);
    });
  }
  kj::Promise<Result<AcceptReply>> Accept(const std::string& node, const std::string& key,
                                          Ballot ballot, const std::string& value) override {
    return Handle<AcceptReply>("accept", node, ballot, [key, ballot, value](Storage& s) {
      return AcceptorCore::Accept(s, key, ballot, value);
    });
  }
  kj::Promise<Result<ReadAcceptedReply>> ReadAccepted(const std::string& node,
                                                      const std::string& key) override {
    return Handle<ReadAcceptedReply>(
        "readAccepted", node, Ballot{},
        [key](Storage& s) -> Result<AcceptorResult<ReadAcceptedReply>> {
          auto r = AcceptorCore::ReadAccepted(s, key);
          if (!r.ok()) return r.status();
          return AcceptorResult<ReadAcceptedReply>{*r, {}};
        });
  }

  void ReleaseHeld() {
    auto held = std::move(held_);
    held_.clear();
    for (auto& run : held) run();
  }

  std::map<std::string, Storage> nodes;
  Policy policy;

 private:
  template <typename Reply>
  kj::Promise<Result<Reply>> Handle(const char* kind, const std::string& node, Ballot ballot,
                                    std::function<Result<AcceptorResult<Reply>>(Storage&)> handle) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    auto fulfiller = std::make_shared<kj::Own<kj::PromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
    auto result = std::make_shared<std::optional<Result<Reply>>>();
    keep_.push_back(fulfiller);
    auto run = [this, node, handle, result, fulfiller]() {
      auto r = handle(nodes[node]);
      if (r.ok()) {
        nodes[node].Apply(r->write);
        *result = r->reply;
      } else {
        *result = r.status();
      }
      (*fulfiller)->fulfill();
    };
    switch (policy(kind, node, ballot)) {
      case Action::kDeliver:
        run();
        break;
      case Action::kDrop:
        break;
      case Action::kHold:
        held_.push_back(run);
        break;
    }
    return paf.promise.then([result]() { return std::move(**result); });
  }

  std::vector<std::shared_ptr<kj::Own<kj::PromiseFulfiller<void>>>> keep_;  // never rejected
  std::vector<std::function<void()>> held_;
};

// The scripted cluster's configuration: nodes a, b and c, N=3, W=2, R=2.
std::shared_ptr<ClusterConfig> ScriptedConfig() {
  auto config = std::make_shared<ClusterConfig>();
  for (const char* id : {"a", "b", "c"}) {
    NodeInfo n;
    n.id = id;
    config->nodes.push_back(n);
  }
  config->replicas = 3;
  config->write_quorum = 2;
  config->read_quorum = 2;
  return config;
}

// Runs the loop (and the simulated clock) until `promise` resolves.
template <typename T>
T Await(kj::Promise<T>& promise, kj::WaitScope& ws, kj::TimerImpl& timer) {
  while (!promise.poll(ws)) {
    KJ_IF_MAYBE (next, timer.nextEvent()) {
      timer.advanceTo(*next);
    } else {
      ADD_FAILURE() << "stuck";
      break;
    }
  }
  return promise.wait(ws);
}

std::string Envelope(const RecordEnvelope& e) { return e.Encode(); }

// A CAS whose first write (accepted by one replica only) was computed from an unchosen value
// and whose next attempt finds the chosen value and aborts. It must not report "mismatch"
// while that first write can still be adopted by a later proposer and take effect.
TEST(ProposerScenario, AbortAfterAnUnchosenWriteIsFinal) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  ScriptedCluster cluster;
  const std::string key = InodeKey(1);

  // Y is chosen at (5,100) on a and b; Z (a change of Y) was accepted at (6,200) by c only.
  RecordEnvelope y;
  y.Apply(11, "Y");
  RecordEnvelope z = y;
  z.Apply(12, "Z");
  cluster.nodes["a"].rows[key] = AcceptorState{Ballot{5, 100}, Ballot{5, 100}, Envelope(y)};
  cluster.nodes["b"].rows[key] = AcceptorState{Ballot{5, 100}, Ballot{5, 100}, Envelope(y)};
  cluster.nodes["c"].rows[key] = AcceptorState{Ballot{6, 200}, Ballot{6, 200}, Envelope(z)};

  auto config = ScriptedConfig();
  auto options = [](uint64_t id) {
    ProposerOptions o;
    o.proposer_id = id;
    o.rng_seed = id;
    o.round_timeout = 50 * kj::MILLISECONDS;
    o.op_timeout = 2 * kj::SECONDS;
    return o;
  };
  Proposer p(cluster, timer, options(300));  // the CAS
  Proposer q(cluster, timer, options(400));  // a reader in between
  Proposer r(cluster, timer, options(500));  // a reader afterwards
  p.SetConfig(config);
  q.SetConfig(config);
  r.SetConfig(config);

  using Action = ScriptedCluster::Action;
  // P hears a and c (so it sees Z and writes V = Z -> V); its accepts to a and b are held.
  // Its third prepare hears only a and b (so it sees Y, chosen, and aborts).
  std::vector<Ballot> p_ballots;  // one per attempt of P
  cluster.policy = [&](const char* kind, const std::string& node, Ballot b) {
    if (b.proposer != 300) return Action::kDeliver;
    if (std::string(kind) == "prepare") {
      if (p_ballots.empty() || p_ballots.back() != b) p_ballots.push_back(b);
      if (p_ballots.size() == 2 && node == "b") return Action::kDrop;
      if (p_ballots.size() == 3 && node == "c") return Action::kDrop;
      return Action::kDeliver;
    }
    if (std::string(kind) == "accept" && p_ballots.size() == 2 && node != "c") {
      return Action::kHold;
    }
    return Action::kDeliver;
  };
  auto cas = p.Change(key, [](const std::optional<std::string>& current) {
    if (current != std::optional<std::string>("Z")) {
      return Decision::Abort(Status(StatusCode::kRange, "cas mismatch"));
    }
    return Decision::Write("V");
  });
  for (int turns = 0; cluster.nodes["c"].rows[key].accepted.proposer != 300; ++turns) {
    ASSERT_LT(turns, 100);
    ASSERT_FALSE(cas.poll(ws)) << "the CAS finished too early";
    KJ_IF_MAYBE (next, timer.nextEvent()) {
      timer.advanceTo(*next);
    }
  }
  ASSERT_EQ(p_ballots.size(), 2u);

  // Q reads through a and b with a full change (its prepares raise their promises).
  auto saved = cluster.policy;
  cluster.policy = [&](const char* kind, const std::string& node, Ballot b) {
    if (b.proposer == 400 && node == "c") return Action::kDrop;
    return saved(kind, node, b);
  };
  auto q_read = q.Change(key, [](const std::optional<std::string>&) { return Decision::Keep(); });
  auto q_result = Await(q_read, ws, timer);
  ASSERT_TRUE(q_result.ok()) << q_result.status().ToString();
  EXPECT_EQ(q_result->payload, std::optional<std::string>("Y"));

  // P's held accepts now meet Q's promises and are refused; P retries and aborts.
  cluster.ReleaseHeld();
  auto cas_result = Await(cas, ws, timer);
  ASSERT_FALSE(cas_result.ok());
  const bool reported_mismatch = cas_result.status().code() == StatusCode::kRange;

  // R reads through b and c.
  cluster.policy = [&](const char* kind, const std::string& node, Ballot b) {
    if (b.proposer == 500 && node == "a") return Action::kDrop;
    return saved(kind, node, b);
  };
  auto r_read = r.Change(key, [](const std::optional<std::string>&) { return Decision::Keep(); });
  auto r_result = Await(r_read, ws, timer);
  ASSERT_TRUE(r_result.ok()) << r_result.status().ToString();
  if (reported_mismatch) {
    EXPECT_EQ(r_result->payload, std::optional<std::string>("Y"))
        << "the CAS reported a mismatch, yet its write took effect afterwards";
  } else {
    EXPECT_EQ(cas_result.status().code(), StatusCode::kUnknownOutcome)
        << cas_result.status().ToString();
  }
}

// Two proposers contend for one key while each is cut off, silently, from a different replica
// (each still reaches two of three: a quorum). A round the other proposer has overtaken gets
// one refusal and one yes, and the third reply never comes: it must not wait the whole
// round_timeout for it. Returns the simulated seconds 2 x 20 increments took.
double ContendWithSilentReplicas(kj::Duration conflict_grace) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  ScriptedCluster cluster;
  const std::string key = InodeKey(1);
  auto config = ScriptedConfig();
  auto options = [&](uint64_t id) {
    ProposerOptions o;
    o.proposer_id = id;
    o.rng_seed = id;
    o.op_timeout = 600 * kj::SECONDS;
    o.conflict_grace = conflict_grace;
    o.one_round_changes = false;  // every change a prepare and an accept: rounds to contend
    return o;
  };
  Proposer p(cluster, timer, options(300));
  Proposer q(cluster, timer, options(400));
  p.SetConfig(config);
  q.SetConfig(config);
  cluster.policy = [](const char*, const std::string& node, Ballot b) {
    bool cut = (b.proposer == 300 && node == "c") || (b.proposer == 400 && node == "a");
    return cut ? ScriptedCluster::Action::kDrop : ScriptedCluster::Action::kDeliver;
  };
  auto increment = [](const std::optional<std::string>& current) {
    int n = current ? std::stoi(*current) : 0;
    return Decision::Write(std::to_string(n + 1));
  };
  constexpr int kEach = 20;
  // Each proposer's increments, one after another; resolves to the number that failed.
  std::function<kj::Promise<int>(Proposer*, int)> loop_of = [&](Proposer* who, int left) {
    if (left == 0) return kj::Promise<int>(0);
    return who->Change(key, increment).then([&loop_of, who, left](Result<RecordValue>&& r) {
      return loop_of(who, left - 1).then([ok = r.ok()](int failed) { return failed + !ok; });
    });
  };
  auto mine = loop_of(&p, kEach);
  auto theirs = loop_of(&q, kEach);
  int failed = Await(mine, ws, timer) + Await(theirs, ws, timer);
  EXPECT_EQ(failed, 0);
  auto check = p.Change(key, [](const std::optional<std::string>&) { return Decision::Keep(); });
  auto got = Await(check, ws, timer);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  if (got.ok()) {
    EXPECT_EQ(got->payload, std::optional<std::string>(std::to_string(2 * kEach)));
  }
  EXPECT_GT(p.counters().conflicts + q.counters().conflicts, 0u) << "the two never contended";
  return static_cast<double>((timer.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS) / 1000;
}

TEST(ProposerScenario, ARefusedRoundDoesNotWaitForASilentReplica) {
  double with_grace = ContendWithSilentReplicas(50 * kj::MILLISECONDS);
  // The control: waiting out round_timeout (1 s) after a refusal, as before conflict_grace.
  double without = ContendWithSilentReplicas(ProposerOptions().round_timeout);
  std::fprintf(stderr, "40 contended changes: %.2f s simulated, %.2f s without the grace\n",
               with_grace, without);
  EXPECT_LT(with_grace, 1);  // less than one round_timeout in all
  EXPECT_GT(without, 2 * with_grace);
}

TEST(Simulation, ThreeNodesManySeeds) {
  SimStats s = RunSeeds(Scenario::kThreeNodes, 10'000, 60);
  // The runs must exercise what they claim to: contention and faults.
  if (!EnvU64("QUORUMFS_SIM_SEED")) {
    EXPECT_GT(s.cas_succeeded, 0);
    EXPECT_GT(s.cas_mismatch, 0);
    EXPECT_GT(s.unknown, 0);
    EXPECT_GT(s.failed, 0);
    EXPECT_GT(s.crashes, 0);
    EXPECT_GT(s.conflicts, 0);
    EXPECT_GT(s.slow_reads, 0);
    EXPECT_GT(s.no_quorum_retries, 0);
  }
}

TEST(Simulation, FiveNodes) { RunSeeds(Scenario::kFiveNodes, 2000, 30); }

TEST(Simulation, MembershipChange) {
  SimStats s = RunSeeds(Scenario::kMembership, 2000, 30);
  EXPECT_EQ(s.final_stage, 4);  // every run went through both changes
  EXPECT_GT(s.rebalance_ops, 0);
}

// Two nodes added at once, then two removed at once: a key's new replica set can share a
// single node with its old one.
TEST(Simulation, MembershipChangeOfTwoNodes) {
  SimStats s = RunSeeds(Scenario::kMembershipTwoNodes, 2000, 20);
  EXPECT_EQ(s.final_stage, 4);
  EXPECT_GT(s.rebalance_ops, 0);
}

TEST(Simulation, WipedNodeRejoins) {
  SimStats s = RunSeeds(Scenario::kRejoin, 2000, 20);
  EXPECT_GT(s.wipes, 0);
}

// A seed replays exactly: the same options give the same histories, operation by operation.
TEST(Simulation, SameSeedSameRun) {
  for (Scenario scenario : {Scenario::kThreeNodes, Scenario::kMembership, Scenario::kRejoin}) {
    SimResult a = RunSimulation(OptionsFor(scenario, 7));
    SimResult b = RunSimulation(OptionsFor(scenario, 7));
    EXPECT_EQ(a.stats.ToString(), b.stats.ToString());
    ASSERT_EQ(a.histories.size(), b.histories.size());
    for (const auto& [key, history] : a.histories) {
      EXPECT_EQ(FormatHistory(history), FormatHistory(b.histories[key])) << key;
    }
  }
}

TEST(Simulation, FaultFreeRunsMostlySucceed) {
  auto replay = EnvU64("QUORUMFS_SIM_SEED");
  uint64_t first = replay.value_or(1);
  int seeds = replay ? 1 : 100;
  SimStats total;
  for (uint64_t seed = first; seed < first + static_cast<uint64_t>(seeds); ++seed) {
    SimResult r = RunSimulation(OptionsFor(Scenario::kFaultFree, seed));
    total.Add(r.stats);
    ASSERT_TRUE(r.ok()) << r.Report() << ReplayHint(seed);
    // Liveness sanity: without faults almost every operation gets a definite answer.
    EXPECT_GE(r.stats.ok, r.stats.ops * 9 / 10) << r.stats.ToString() << "\n" << ReplayHint(seed);
  }
  std::printf("[%s] %d seed(s)\n  %s\n", TestName().c_str(), seeds, total.ToString().c_str());
  EXPECT_GE(total.ok, total.ops * 97 / 100);
  // Shared creates ran, and succeeded (over tombstones too, on keys past the id window).
  if (!replay) {
    EXPECT_GT(total.shared_creates, 1000);
    EXPECT_GT(total.shared_created, total.shared_creates / 4);
  }
}

TEST(SimulationNegativeControl, LastWriterWinsRegister) {
  ExpectViolation(Scenario::kLastWriterWins, 500);
}

TEST(SimulationNegativeControl, ReplyBeforeDurable) {
  ExpectViolation(Scenario::kReplyBeforeDurable, 500);
}

// The acceptor answers readAccepted from writes that are not yet durable (the fast read then
// returns a value a crash can still take back). Refused prepares and accepts may be answered
// from unsynced state; a reply that reports an accepted value may not.
TEST(SimulationNegativeControl, ReadAcceptedReportsUnsyncedState) {
  ExpectViolation(Scenario::kReadUnsynced, 500);
}

TEST(SimulationNegativeControl, FastReadSingleReply) {
  ExpectViolation(Scenario::kFastReadSingleReply, 500);
}

TEST(SimulationNegativeControl, IgnoreJointQuorum) {
  ExpectViolation(Scenario::kIgnoreJointQuorum, 500);
}

// One-round changes without the acceptor's piggybacked promise: a proposer that saw an older
// ballot prepares between this proposer's accept at b and its one-round accept at b.Next(),
// changes the key, and the one-round accept then overwrites that change (a lost update).
TEST(SimulationNegativeControl, OneRoundChangeWithoutNextPromise) {
  ExpectViolation(Scenario::kNoNextPromise, 2000);
}

// A proposer that takes "every replica refused my accept" as "my value is stored nowhere" even
// when a replica holds that ballot or a higher one: at seed 527459 an accept is delivered
// twice, taken the first time (reply lost), adopted by another proposer's higher ballot and
// chosen, and refused the second time; the proposer then applied f afresh to the value its own
// lost write had produced and wrote its change twice. The seed passes with the rule
// (Proposer::ObserveRefusals); a soak of the control finds few other seeds, so this one is
// pinned, with the workload it was found with (no batched reads: their random draws would
// change the run).
TEST(SimulationNegativeControl, RefusalOfARedeliveredAcceptTrusted) {
  SimOptions o = OptionsFor(Scenario::kThreeNodes, 527459);
  o.batched_read_percent = 0;
  o.shared_keys = 0;
  SimResult fixed = RunSimulation(o);
  EXPECT_TRUE(fixed.ok()) << fixed.Report();
  o.unsafe_trust_any_refusal = true;
  SimResult broken = RunSimulation(o);
  EXPECT_FALSE(broken.violations.empty()) << "the control no longer breaks seed 527459";
}

// Two round-0 creates of one directory entry during a membership change: at seed 28 an
// old-set proposer's round-0 value reached all of a, b and c (chosen, for it), a joint-set
// proposer's reached only the new node d, and that proposer's prepare adopted its own value as
// the higher round-0 ballot: both creates succeeded. Adopting a round-0 value every answering
// member of some group holds (Round0HeldByAGroup in common/proposer.cc) keeps the first.
// Seed 28 of `scenario` passes, and breaks once `knob` of its options is set.
void ExpectSeed28BrokenOnlyBy(Scenario scenario, bool SimOptions::*knob) {
  SimOptions o = OptionsFor(scenario, 28);
  ASSERT_GT(o.shared_keys, 0);
  SimResult fixed = RunSimulation(o);
  EXPECT_TRUE(fixed.ok()) << fixed.Report();
  o.*knob = true;
  SimResult broken = RunSimulation(o);
  EXPECT_FALSE(broken.violations.empty()) << "the control no longer breaks seed 28";
}

TEST(SimulationNegativeControl, Round0ValueOfTheHighestProposerIdAdopted) {
  ExpectSeed28BrokenOnlyBy(Scenario::kMembership, &SimOptions::unsafe_round0_highest_wins);
}

// Seed 28 of the two-node change: an old-set proposer created an entry on a, b and c, a
// joint-set proposer's round-0 write reached only the new nodes d and e, and its prepare heard
// d and e in the new set {d, e, a} and a and b in the old one. It took the first group's value,
// its own, and both creates succeeded. Waiting for a member of both groups (here a) keeps the
// first (Round0GroupsDisagree in common/proposer.cc).
TEST(SimulationNegativeControl, Round0ValueOfTheFirstGroupAdopted) {
  ExpectSeed28BrokenOnlyBy(Scenario::kMembershipTwoNodes, &SimOptions::unsafe_round0_first_group);
}

TEST(SimulationNegativeControl, WipedNodeVotesWithoutRejoin) {
  ExpectViolation(Scenario::kWipedNodeVotes, 500);
}

}  // namespace
}  // namespace quorumfs::sim
