// GCC 12 at -O2 reports false -Wmaybe-uninitialized inside kj's promise nodes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "tests/sim/namespace_sim.h"

#include <kj/async.h>
#include <kj/debug.h>
#include <kj/timer.h>
#include <kj/vector.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include "common/cluster_config.h"
#include "common/inode_allocator.h"
#include "common/metadata.h"
#include "common/placement.h"
#include "common/proposer.h"
#include "common/quorum.h"
#include "common/record.h"
#include "common/record_key.h"

namespace quorumfs::sim {

NamespaceSimOptions DefaultNamespaceSimOptions() {
  NamespaceSimOptions o;
  o.ns.txn_timeout_ns = 400'000'000;    // 400 ms
  o.ns.birth_grace_ns = 1'000'000'000;  // 1 s
  o.ns.clock_skew_ns = 20'000'000;      // 20 ms (clients' clocks differ by up to half of it)
  o.ns.lease_ns = 1'000'000'000;
  o.ns.busy_wait = 1 * kj::MILLISECONDS;
  o.ns.busy_timeout = 4 * kj::SECONDS;
  o.ns.fiber_stack = 256 * 1024;
  return o;
}

void NamespaceSimStats::Add(const NamespaceSimStats& o) {
  ops += o.ops;
  ok += o.ok;
  expected_errors += o.expected_errors;
  ambiguous += o.ambiguous;
  client_crashes += o.client_crashes;
  creates += o.creates;
  mkdirs += o.mkdirs;
  unlinks += o.unlinks;
  rmdirs += o.rmdirs;
  links += o.links;
  renames += o.renames;
  readdirs += o.readdirs;
  lookups += o.lookups;
  exclusive_rounds += o.exclusive_rounds;
  exclusive_winners += o.exclusive_winners;
  rmdir_races += o.rmdir_races;
  rmdir_race_wins += o.rmdir_race_wins;
  cross_moves += o.cross_moves;
  cross_moves_both_failed += o.cross_moves_both_failed;
  crashing_rename_rounds += o.crashing_rename_rounds;
  burst_rounds += o.burst_rounds;
  retired_areas += o.retired_areas;
  unknown_injected += o.unknown_injected;
  repair_runs += o.repair_runs;
  high_counts += o.high_counts;
  refused_for_high_count += o.refused_for_high_count;
  fixes += o.fixes;
  live_recounts += o.live_recounts;
  live_recounts_written += o.live_recounts_written;
  batches_found_applied += o.batches_found_applied;
  batches_lost_track += o.batches_lost_track;
  messages += o.messages;
  dropped += o.dropped;
  duplicated += o.duplicated;
  node_crashes += o.node_crashes;
  sim_time_us += o.sim_time_us;
}

std::string NamespaceSimStats::ToString() const {
  std::ostringstream out;
  out << "ops " << ops << " (ok " << ok << ", expected errno " << expected_errors << ", ambiguous "
      << ambiguous << ", client crashes " << client_crashes << "; creates " << creates
      << ", mkdirs " << mkdirs << ", unlinks " << unlinks << ", rmdirs " << rmdirs << ", links "
      << links << ", renames " << renames << ", readdirs " << readdirs << ", lookups " << lookups
      << "), O_EXCL races " << exclusive_rounds << " (winners " << exclusive_winners
      << "), rmdir races " << rmdir_races << " (rmdir won " << rmdir_race_wins
      << "), crossing moves " << cross_moves << " (both refused " << cross_moves_both_failed
      << "), crashing-rename rounds " << crashing_rename_rounds << ", burst rounds " << burst_rounds
      << ", private dirs retired " << retired_areas << ", unknown outcomes injected "
      << unknown_injected << ", repair runs " << repair_runs << ", counts high before fsck "
      << high_counts << " (ENOTEMPTY for an empty directory " << refused_for_high_count
      << "), fsck fixes " << fixes << ", recounts during the workload " << live_recounts
      << " (written " << live_recounts_written << "), retried count changes found applied "
      << batches_found_applied << " (could not tell " << batches_lost_track << "), messages "
      << messages << " (dropped " << dropped << ", duplicated " << duplicated << "), node crashes "
      << node_crashes << ", simulated " << sim_time_us / 1000 << " ms";
  return out.str();
}

std::string NamespaceSimResult::Report() const {
  std::ostringstream out;
  out << "seed " << seed << ": " << violations.size() << " violation(s), " << errors.size()
      << " error(s)" << (exact_counts ? " (counts must be exact)" : "") << "\n";
  for (const auto& e : errors) out << "error: " << e << "\n";
  for (const auto& v : violations) out << "violation: " << v << "\n";
  out << "stats: " << stats.ToString() << "\n";
  return out.str();
}

namespace {

// The value type of a kj::Promise.
template <typename P>
struct PromiseValue;
template <typename T>
struct PromiseValue<kj::Promise<T>> {
  using type = T;
};

constexpr int64_t kRoundTimeoutMs = 50;
constexpr int64_t kOpTimeoutMs = 2000;
constexpr int64_t kWallClockBaseNs = 1'700'000'000'000'000'000;
constexpr int kCheckerClient = 1000;
constexpr int kRepairClient = 1001;
constexpr uint64_t kSettleProposer = 0x5e771e;  // ballots of the quiescent settle round

const char* TypeName(FileType t) { return t == FileType::kDirectory ? "dir" : "file"; }

bool Ambiguous(StatusCode c) {
  switch (c) {
    case StatusCode::kNoQuorum:
    case StatusCode::kTimedOut:
    case StatusCode::kUnknownOutcome:
    case StatusCode::kConflict:
    case StatusCode::kUnavailable:
    case StatusCode::kBusy:
    case StatusCode::kEpochMismatch:
      return true;
    default:
      return false;
  }
}

// POSIX answers a namespace operation may give under concurrency.
bool PosixError(StatusCode c) {
  switch (c) {
    case StatusCode::kNotFound:
    case StatusCode::kAlreadyExists:
    case StatusCode::kNotEmpty:
    case StatusCode::kNotDirectory:
    case StatusCode::kIsDirectory:
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotPermitted:
    case StatusCode::kTooManyLinks:
    case StatusCode::kLoop:
      return true;
    default:
      return false;
  }
}

std::string CodeName(StatusCode c) { return StatusCodeName(c); }

// Simulated wall-clock time, with this client's clock offset.
class SimWallClock final : public WallClock {
 public:
  SimWallClock(kj::Timer& timer, kj::TimePoint origin, int64_t skew_ns)
      : timer_(timer), origin_(origin), skew_ns_(skew_ns) {}
  int64_t NowNs() override {
    return kWallClockBaseNs + (timer_.now() - origin_) / kj::NANOSECONDS + skew_ns_;
  }

 private:
  kj::Timer& timer_;
  kj::TimePoint origin_;
  int64_t skew_ns_;
};

// RecordLister over the simulated network: scans R replicas of the placement key's set (or all
// nodes but N - R for a cluster-wide listing) and merges their keys, as RpcRecordLister does.
class SimRecordLister final : public RecordLister {
 public:
  SimRecordLister(SimNetwork& network, int client, kj::Timer& timer,
                  std::shared_ptr<const ClusterConfig> config)
      : network_(network), client_(client), timer_(timer), config_(std::move(config)) {}

  kj::Promise<Result<std::vector<std::string>>> ListKeys(const std::string& placement_key,
                                                         const std::string& prefix,
                                                         const std::string& after, uint32_t limit,
                                                         bool every_replica = false) override {
    auto spec = std::make_shared<QuorumSpec>();
    int need;
    if (placement_key.empty()) {
      spec->targets = config_->NodeIds();
      std::vector<size_t> all;
      for (size_t i = 0; i < spec->targets.size(); ++i) all.push_back(i);
      spec->groups.push_back(all);
      need = static_cast<int>(spec->targets.size()) - (config_->replicas - config_->read_quorum);
    } else {
      *spec = QuorumSpec::FromGroups(ReplicaGroupsFor(*config_, placement_key));
      need = every_replica ? config_->replicas : config_->read_quorum;
    }
    auto yes = [](const ScanReply&) { return true; };
    auto send = [this, spec, prefix, after, limit](size_t i) {
      return network_.Scan(client_, spec->targets[i], prefix, after, limit);
    };
    auto decide = [spec, need, yes](const std::vector<std::optional<Result<ScanReply>>>& r) {
      auto votes = VotesOf(r, yes);
      return spec->Satisfied(votes, need) || spec->Hopeless(votes, need);
    };
    return Gather<ScanReply>(timer_, kRoundTimeoutMs * kj::MILLISECONDS, spec->targets.size(), send,
                             decide)
        .then(
            [spec, need, limit, yes](Gathered<ScanReply>&& g) -> Result<std::vector<std::string>> {
              auto votes = VotesOf(g.replies, yes);
              if (!spec->Satisfied(votes, need)) {
                return Status(StatusCode::kNoQuorum, "listing reached too few replicas");
              }
              std::set<std::string> keys;
              for (size_t i = 0; i < votes.size(); ++i) {
                if (votes[i] == Vote::kYes)
                  keys.insert((*g.replies[i])->keys.begin(), (*g.replies[i])->keys.end());
              }
              std::vector<std::string> out(keys.begin(), keys.end());
              if (out.size() > limit) out.resize(limit);
              return out;
            });
  }

 private:
  SimNetwork& network_;
  int client_;
  kj::Timer& timer_;
  std::shared_ptr<const ClusterConfig> config_;
};

// True if `value` (an accepted envelope) is a directory inode without an intent: the kind of
// record a plain parent change writes.
bool IsPlainDirectoryValue(const std::string& key, const std::string& value) {
  if (key.rfind("I/", 0) != 0) return false;
  auto env = RecordEnvelope::Decode(value);
  if (!env.ok()) return false;
  auto rec = MetaRecord::Decode(env->payload);
  return rec.ok() && !rec->intent && rec->inode() && rec->inode()->is_dir();
}

// True if `value` (an accepted envelope) is a committed transaction record.
bool IsCommitValue(const std::string& key, const std::string& value) {
  if (key.rfind("X/", 0) != 0) return false;
  auto env = RecordEnvelope::Decode(value);
  if (!env.ok()) return false;
  auto rec = MetaRecord::Decode(env->payload);
  return rec.ok() && rec->txn() && rec->txn()->state == TxnState::kCommitted;
}

// A workload client's transport, with one extra fault: with probability `rate`, an accept
// round of a plain directory change reaches the acceptors but its replies are lost, and the
// next prepare round of that key fails at once (the client is cut off for a moment). The
// proposer then reports UnknownOutcome for a change that was chosen, and the Namespace retries
// it. It also tells the simulator when the client sends a transaction's commit.
class ClientTransport final : public RecordTransport {
 public:
  ClientTransport(SimNetwork& network, int client, int replicas, double rate, int64_t* injected)
      : inner_(network, client),
        network_(network),
        replicas_(replicas),
        rate_(rate),
        injected_(injected) {}

  kj::Promise<Result<PrepareReply>> Prepare(const std::string& node, const std::string& key,
                                            Ballot ballot) override {
    auto it = cut_off_.find(key);
    // Another operation of the client started meanwhile: this prepare may be its, and failing
    // it would be a fault of a run that has none (the cut-off is only meant for the retry of
    // the change whose replies were lost).
    if (it != cut_off_.end() && alone_ && !alone_()) {
      cut_off_.erase(it);
      it = cut_off_.end();
    }
    if (it != cut_off_.end()) {
      if (--it->second == 0) cut_off_.erase(it);
      network_.Trace("client cut off: prepare " + DescribeKey(key) + " to " + node + " fails");
      return Result<PrepareReply>(Status(StatusCode::kUnavailable, node + ": unreachable"));
    }
    // Remember the values the round reports, to tell a change's accept from a repair's.
    auto seen = seen_;
    return inner_.Prepare(node, key, ballot).then([seen, key, ballot](Result<PrepareReply>&& r) {
      if (r.ok() && r->value) {
        auto& round = (*seen)[key];
        // Every value a prepare reported for the key lately (not only this round's: a reply
        // of an earlier round may arrive after the next round began).
        if (round.second.size() > 64) round.second.clear();
        round.first = ballot;
        round.second.insert(*r->value);
      }
      return kj::mv(r);
    });
  }

  kj::Promise<Result<AcceptReply>> Accept(const std::string& node, const std::string& key,
                                          Ballot ballot, const std::string& value) override {
    // One decision per accept round: the proposer sends a round's accepts back to back.
    if (!(key == round_key_ && ballot == round_ballot_)) {
      round_key_ = key;
      round_ballot_ = ballot;
      if (on_commit && IsCommitValue(key, value)) on_commit();
      // Not twice in a row on one key: the retry of the change must be able to succeed.
      auto last = last_fired_.find(key);
      bool resting = last != last_fired_.end() && network_.NowNs() - last->second < 1'000'000'000;
      // A repair (an accept of a value the prepare round found) is not a change.
      auto round = seen_->find(key);
      // (A change writes a new envelope, with a new version and change id, never seen before.)
      bool repair = round != seen_->end() && round->second.second.count(value) > 0;
      // With other operations of the client in flight, the failing prepare could be theirs.
      bool alone = !alone_ || alone_();
      round_lost_ = ballot.counter > 0 && rate_ > 0 && !resting && !repair && alone &&
                    IsPlainDirectoryValue(key, value) && network_.Chance(rate_);
      if (round_lost_) {
        ++*injected_;
        last_fired_[key] = network_.NowNs();
        cut_off_[key] = replicas_;
        network_.Trace("accept round " + DescribeKey(key) + " " + ballot.ToString() +
                       ": replies will be lost, next prepare fails");
      }
    }
    auto reply = inner_.Accept(node, key, ballot, value);
    if (!round_lost_) return reply;
    return kj::Promise<Result<AcceptReply>>(kj::NEVER_DONE);  // sent; no reply comes back
  }

  kj::Promise<Result<ReadAcceptedReply>> ReadAccepted(const std::string& node,
                                                      const std::string& key) override {
    return inner_.ReadAccepted(node, key);
  }

  // Called when the client sends the accepts of a transaction's commit.
  std::function<void()> on_commit;
  // Whether the client has only one operation in flight (replies are lost only then).
  void set_alone(std::function<bool()> alone) { alone_ = std::move(alone); }

 private:
  SimTransport inner_;
  SimNetwork& network_;
  int replicas_;
  double rate_;
  int64_t* injected_;
  std::string round_key_;
  Ballot round_ballot_;
  bool round_lost_ = false;
  std::function<bool()> alone_;
  std::map<std::string, int> cut_off_;         // key -> prepares still to fail
  std::map<std::string, int64_t> last_fired_;  // key -> when its replies were last lost
  // key -> the ballot of its last prepare round and the values its replies carried (shared:
  // replies may arrive after this client is gone).
  std::shared_ptr<std::map<std::string, std::pair<Ballot, std::set<std::string>>>> seen_ =
      std::make_shared<std::map<std::string, std::pair<Ballot, std::set<std::string>>>>();
};

// One simulated client process: its own proposer id, inode blocks, clock and Namespace.
// Members are destroyed bottom-up: the Namespace first.
struct NsClient {
  std::unique_ptr<RecordTransport> transport;
  ClientTransport* client_transport = nullptr;  // the transport, for workload clients
  std::unique_ptr<SimWallClock> clock;
  std::unique_ptr<SimRecordLister> lister;
  std::unique_ptr<Proposer> proposer;
  std::unique_ptr<InodeAllocator> allocator;
  std::unique_ptr<Namespace> ns;
  std::string name;  // "c2.1": slot 2, second process
};

// ---- The model of a private directory ---------------------------------------------------------

struct ModelEntry {
  FileType type = FileType::kRegular;
  uint64_t ino = 0;  // 0: unknown (made by an operation whose result was lost)
  bool operator==(const ModelEntry& o) const { return type == o.type && ino == o.ino; }
};
// By path inside the private directory: "a", "d/b".
using Model = std::map<std::string, ModelEntry>;

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

bool InsideOrSame(const std::string& path, const std::string& ancestor) {
  return path == ancestor || path.rfind(ancestor + "/", 0) == 0;
}

bool HasChildren(const Model& m, const std::string& dir) {
  auto it = m.lower_bound(dir + "/");
  return it != m.end() && it->first.rfind(dir + "/", 0) == 0;
}

// Moves the subtree at `from` to `to` (paths of the entry and everything below it).
void MoveSubtree(Model& m, const std::string& from, const std::string& to) {
  Model moved;
  for (auto it = m.begin(); it != m.end();) {
    if (InsideOrSame(it->first, from)) {
      moved[to + it->first.substr(from.size())] = it->second;
      it = m.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [k, v] : moved) m[k] = v;
}

void RemoveSubtree(Model& m, const std::string& path) {
  for (auto it = m.begin(); it != m.end();) {
    it = InsideOrSame(it->first, path) ? m.erase(it) : std::next(it);
  }
}

std::string Describe(const Model& m) {
  std::string out;
  for (const auto& [path, e] : m) {
    out += (out.empty() ? "" : " ") + path + (e.type == FileType::kDirectory ? "/" : "") + "#" +
           (e.ino ? std::to_string(e.ino) : "?");
  }
  return "{" + out + "}";
}

// `actual` matches `model` when the paths and types agree and every known ino agrees.
bool Matches(const Model& model, const Model& actual) {
  if (model.size() != actual.size()) return false;
  for (const auto& [path, e] : model) {
    auto it = actual.find(path);
    if (it == actual.end() || it->second.type != e.type) return false;
    if (e.ino != 0 && it->second.ino != e.ino) return false;
  }
  return true;
}

enum class OpKind { kCreate, kMkdir, kUnlink, kRmdir, kLink, kRename, kReadDir, kLookup };

// A private-directory operation in model terms (paths relative to the private directory).
struct PrivateOp {
  OpKind kind = OpKind::kLookup;
  std::string dir, name;    // the entry operated on (rename: the source)
  std::string dir2, name2;  // rename: the target
  std::string link_target;  // link: the path of the file to link
  uint32_t flags = 0;       // rename flags
  std::string Describe() const {
    static const char* kNames[] = {"create", "mkdir",  "unlink",  "rmdir",
                                   "link",   "rename", "readdir", "lookup"};
    std::string out = std::string(kNames[static_cast<int>(kind)]) + " ";
    if (kind == OpKind::kLink) out += link_target + " -> ";
    out += Join(dir, name).empty() ? "." : Join(dir, name);
    if (kind == OpKind::kRename) {
      out += " -> " + Join(dir2, name2);
      if (flags & kRenameNoReplace) out += " NOREPLACE";
      if (flags & kRenameExchange) out += " EXCHANGE";
    }
    return out;
  }
};

// The status the operation must return on the model's state (rules of namespace.cc, in the
// order it checks them).
StatusCode Predict(const Model& m, const PrivateOp& op) {
  const std::string path = Join(op.dir, op.name);
  auto entry = m.find(path);
  const bool exists = entry != m.end();
  switch (op.kind) {
    case OpKind::kCreate:
    case OpKind::kMkdir:
      return exists ? StatusCode::kAlreadyExists : StatusCode::kOk;
    case OpKind::kUnlink:
      if (!exists) return StatusCode::kNotFound;
      return entry->second.type == FileType::kDirectory ? StatusCode::kIsDirectory
                                                        : StatusCode::kOk;
    case OpKind::kRmdir:
      if (!exists) return StatusCode::kNotFound;
      if (entry->second.type != FileType::kDirectory) return StatusCode::kNotDirectory;
      return HasChildren(m, path) ? StatusCode::kNotEmpty : StatusCode::kOk;
    case OpKind::kLink:
      return exists ? StatusCode::kAlreadyExists : StatusCode::kOk;
    case OpKind::kRename: {
      if (!exists) return StatusCode::kNotFound;
      const std::string path2 = Join(op.dir2, op.name2);
      auto dst = m.find(path2);
      const bool has_dst = dst != m.end();
      if (path == path2) return StatusCode::kOk;
      if ((op.flags & kRenameNoReplace) && has_dst) return StatusCode::kAlreadyExists;
      if ((op.flags & kRenameExchange) && !has_dst) return StatusCode::kNotFound;
      const bool exchange = op.flags & kRenameExchange;
      const bool src_dir = entry->second.type == FileType::kDirectory;
      const bool dst_dir = has_dst && dst->second.type == FileType::kDirectory;
      if (has_dst && dst->second.ino == entry->second.ino) return StatusCode::kOk;
      if (has_dst && !exchange) {
        if (src_dir && !dst_dir) return StatusCode::kNotDirectory;
        if (!src_dir && dst_dir) return StatusCode::kIsDirectory;
      }
      if (op.dir != op.dir2) {
        if (src_dir && InsideOrSame(op.dir2, path)) return StatusCode::kInvalidArgument;
        if (exchange && dst_dir && InsideOrSame(op.dir, path2)) {
          return StatusCode::kInvalidArgument;
        }
      }
      if (dst_dir && !exchange && HasChildren(m, path2)) return StatusCode::kNotEmpty;
      return StatusCode::kOk;
    }
    case OpKind::kReadDir:
      return StatusCode::kOk;
    case OpKind::kLookup:
      return exists ? StatusCode::kOk : StatusCode::kNotFound;
  }
  return StatusCode::kInternal;
}

// The model after a successful operation; `ino` is the created inode (0 if unknown).
Model ApplyOk(Model m, const PrivateOp& op, uint64_t ino) {
  const std::string path = Join(op.dir, op.name);
  switch (op.kind) {
    case OpKind::kCreate:
      m[path] = ModelEntry{FileType::kRegular, ino};
      break;
    case OpKind::kMkdir:
      m[path] = ModelEntry{FileType::kDirectory, ino};
      break;
    case OpKind::kUnlink:
    case OpKind::kRmdir:
      m.erase(path);
      break;
    case OpKind::kLink:
      m[path] = m.at(op.link_target);
      break;
    case OpKind::kRename: {
      const std::string path2 = Join(op.dir2, op.name2);
      if (path == path2 || (m.count(path2) && m.at(path2).ino == m.at(path).ino)) break;
      if (op.flags & kRenameExchange) {
        MoveSubtree(m, path2, "\x01tmp");
        MoveSubtree(m, path, path2);
        MoveSubtree(m, "\x01tmp", path);
      } else {
        RemoveSubtree(m, path2);
        MoveSubtree(m, path, path2);
      }
      break;
    }
    case OpKind::kReadDir:
    case OpKind::kLookup:
      break;
  }
  return m;
}

// A client's private directory and the model of its content.
struct Area {
  std::string name;  // under /priv
  uint64_t ino = 0;
  Model model;
  // Retired after an operation with an ambiguous result: the content must end as one of these.
  bool retired = false;
  Model before, after;
  std::string last_op;
};

// One process of a client: dies at most once, taking every operation it has in flight.
struct Life {
  explicit Life(kj::PromiseFulfillerPair<void> paf)
      : fulfiller(kj::mv(paf.fulfiller)), died(paf.promise.fork()) {}
  void Kill() {
    if (dead) return;
    dead = true;
    fulfiller->fulfill();
  }
  kj::Own<kj::PromiseFulfiller<void>> fulfiller;
  kj::ForkedPromise<void> died;
  bool dead = false;
  int in_flight = 0;  // operations of this process still running
};

struct Slot {
  int index = 0;
  int generation = 0;  // processes so far (a crash starts the next)
  std::unique_ptr<NsClient> client;
  std::shared_ptr<Life> life;  // of `client`
  std::vector<Area> areas;     // the last one is current unless retired
  int next_area = 0;
};

// The outcome of an exclusive-create race.
struct ExclusiveRace {
  uint64_t dir = 0;
  std::string name;
  uint64_t winner = 0;  // the ino of the one create that succeeded, 0 if none
};

// What a walk of the namespace saw.
struct Snapshot {
  std::map<uint64_t, Inode> inodes;                                       // every inode met
  std::map<uint64_t, std::map<std::string, DirListing::Entry>> listings;  // reached dirs
  std::map<uint64_t, std::vector<BackPointer>> named;                     // ino -> entries
  std::map<uint64_t, std::string> paths;                                  // reached dir -> path
  std::map<std::string, uint64_t> entries;                                // path -> ino
};

enum class Phase { kBeforeRecovery, kAfterRecovery };

class NamespaceSim final : public kj::TaskSet::ErrorHandler {
 public:
  explicit NamespaceSim(const NamespaceSimOptions& options)
      : options_(options),
        rng_(options.seed),
        timer_(kj::origin<kj::TimePoint>() + 1 * kj::SECONDS),
        ws_(loop_),
        fibers_(256 * 1024),
        tasks_(kj::heap<kj::TaskSet>(*this)) {
    start_ = timer_.now();
    NetworkOptions n;
    n.faults = options.faults;
    n.replicas = options.replicas;
    n.write_quorum = options.write_quorum;
    n.trace = options.trace;
    network_ = std::make_unique<SimNetwork>(n, rng_, timer_, *tasks_, start_, result_.errors);
    // The setup runs without faults; they start with the workload.
    quiet_faults_ = options.faults;
    quiet_faults_.drop_rate = 0;
    quiet_faults_.dup_rate = 0;
    quiet_faults_.net_very_slow_rate = 0;
    network_->faults() = quiet_faults_;
  }

  ~NamespaceSim() {
    tasks_ = nullptr;  // cancels the conductor and every operation it waits on
    checker_.reset();
    repair_.reset();
    slots_.clear();
    network_->Shutdown();
    ws_.poll();
  }

  void taskFailed(kj::Exception&& e) override {
    result_.errors.push_back(std::string("exception: ") + kj::str(e).cStr());
    done_ = true;
  }

  NamespaceSimResult Run();

 private:
  // -- helpers
  bool Chance(double p) { return network_->Chance(p); }
  int64_t Uniform(int64_t lo, int64_t hi) { return network_->Uniform(lo, hi); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Uniform(0, static_cast<int64_t>(v.size()) - 1)];
  }
  void Trace(const std::string& line) {
    if (options_.trace) network_->Trace(line);
  }
  void Violation(const std::string& what) {
    if (result_.violations.size() < 40) result_.violations.push_back(what);
    Trace("VIOLATION: " + what);
  }
  void Error(const std::string& what) {
    if (result_.errors.size() < 40) result_.errors.push_back(what);
    Trace("ERROR: " + what);
  }
  void Sleep(kj::WaitScope& ws, kj::Duration d) { timer_.afterDelay(d).wait(ws); }
  std::string DirName(uint64_t ino) const {
    auto it = dir_names_.find(ino);
    return it == dir_names_.end() ? "#" + std::to_string(ino) : it->second;
  }
  std::string EntryName(uint64_t dir, const std::string& name) const {
    return DirName(dir) + "/" + name;
  }

  std::unique_ptr<NsClient> NewClient(const std::string& name, int network_id, double unknown_rate);
  void CountBatches(const NsClient& c);
  void RestartSlot(Slot& slot);

  // Runs a client's operation. With probability `crash_rate` (default: client_crash_rate) the
  // client crashes while it runs: the operation's promise is dropped and the slot gets a new
  // process. The crash comes at a time uniform in `crash_window_us` (default: [0,
  // crash_window_us]) after the start or, with `after_commit`, after the client sends a
  // transaction's commit (no crash if it never does). nullopt if it crashed.
  // `make` starts the operation on the client's Namespace; it runs once the slot has a live
  // process (a crash of one operation cancels the process's other operations too, and the
  // slot's next process starts once they all have ended).
  template <typename F,
            typename T = typename PromiseValue<std::invoke_result_t<F, Namespace&>>::type>
  std::optional<T> RunOp(kj::WaitScope& ws, Slot& slot, F make, const std::string& what,
                         std::optional<double> crash_rate = std::nullopt,
                         std::pair<int64_t, int64_t> crash_window_us = {0, 0},
                         bool after_commit = false);
  // Counts a status of a shared-area operation; unexpected ones are errors.
  void Tally(const Status& s, const std::string& what);
  // In a run without faults an operation has no reason to end without a definite answer.
  void NoteAmbiguous(const std::string& what, const Status& s) {
    if (options_.expect_exact_counts) {
      Error(what + ": " + s.ToString() + " in a run without faults");
    }
  }

  // -- workload
  void Conductor(kj::WaitScope& ws);
  void Setup(kj::WaitScope& ws);
  uint64_t SetupDir(kj::WaitScope& ws, uint64_t parent, const std::string& name);
  void RepairLoop(kj::WaitScope& ws);
  void Round(kj::WaitScope& ws, int round);
  void RandomOps(kj::WaitScope& ws, Slot& slot, int count);
  void SharedOp(kj::WaitScope& ws, Slot& slot);
  void PrivateOpOnce(kj::WaitScope& ws, Slot& slot);
  void RunPrivateOp(kj::WaitScope& ws, Slot& slot, const PrivateOp& op, double crash_rate,
                    std::pair<int64_t, int64_t> crash_window_us = {0, 0},
                    bool after_commit = false);
  void CrashingRenames(kj::WaitScope& ws);
  void Burst(kj::WaitScope& ws);
  bool EnsureArea(kj::WaitScope& ws, Slot& slot);
  void Retire(Slot& slot, const PrivateOp& op, StatusCode predicted, const std::string& why);
  void ExclusiveRound(kj::WaitScope& ws, int round);
  void RmdirRace(kj::WaitScope& ws, int round);
  void CrossMove(kj::WaitScope& ws, int round);
  std::optional<uint64_t> MakeDir(kj::WaitScope& ws, Slot& slot, uint64_t parent,
                                  const std::string& name);
  void JoinAll(kj::WaitScope& ws, std::vector<std::function<void(kj::WaitScope&)>> work);

  // -- checks
  void Quiesce(kj::WaitScope& ws);
  void Settle();
  void Recover(kj::WaitScope& ws);
  Snapshot Check(kj::WaitScope& ws, Phase phase);
  std::optional<std::vector<DirListing::Entry>> ReadDirAll(kj::WaitScope& ws, uint64_t dir);
  void CheckCounts(const Snapshot& snap, bool exact, const std::string& when);
  void CheckUnreached(kj::WaitScope& ws, const Snapshot& snap, Phase phase,
                      const std::string& when);
  void CheckParentChains(kj::WaitScope& ws, Snapshot& snap, const std::string& when);
  void CheckAreas(const Snapshot& snap, const std::string& when);
  Model AreaContent(const Snapshot& snap, uint64_t area_ino);
  void CompareSnapshots(const Snapshot& before, const Snapshot& after);

  NamespaceSimOptions options_;
  std::mt19937_64 rng_;
  kj::TimerImpl timer_;  // declared before the loop: destroyed after every timer promise
  kj::EventLoop loop_;
  kj::WaitScope ws_;
  kj::TimePoint start_ = kj::origin<kj::TimePoint>();
  NamespaceSimResult result_;
  FaultOptions quiet_faults_;
  std::shared_ptr<const ClusterConfig> config_;
  kj::FiberPool fibers_;  // the simulator's own fibers (conductor, one per client and round)

  std::vector<Slot> slots_;
  std::unique_ptr<NsClient> repair_;
  std::unique_ptr<NsClient> checker_;
  std::vector<uint64_t> used_ids_;
  std::vector<std::string> pool_;              // entry names
  uint64_t priv_ = 0;                          // /priv
  std::vector<uint64_t> static_dirs_;          // /s0 /s1 /s2: never removed or moved
  std::vector<uint64_t> shared_dirs_;          // parents for shared-area operations
  std::vector<uint64_t> shared_files_;         // link targets
  std::set<uint64_t> known_dirs_;              // every directory an acknowledged mkdir made
  std::set<uint64_t> known_files_;             // every file an acknowledged create made
  std::map<uint64_t, std::string> dir_names_;  // for messages
  std::map<uint64_t, std::set<std::string>> names_used_;  // dir -> names operated on
  std::vector<ExclusiveRace> races_;
  bool faults_stopped_ = false;
  bool repair_stop_ = false;
  bool done_ = false;

  kj::Own<kj::TaskSet> tasks_;  // emptied first (~NamespaceSim)
  std::unique_ptr<SimNetwork> network_;
};

std::unique_ptr<NsClient> NamespaceSim::NewClient(const std::string& name, int network_id,
                                                  double unknown_rate) {
  auto c = std::make_unique<NsClient>();
  c->name = name;
  uint64_t id;
  do {
    id = rng_() | 1;
  } while (std::find(used_ids_.begin(), used_ids_.end(), id) != used_ids_.end());
  used_ids_.push_back(id);
  if (network_id < kCheckerClient) {
    auto t = std::make_unique<ClientTransport>(*network_, network_id, options_.replicas,
                                               unknown_rate, &result_.stats.unknown_injected);
    c->client_transport = t.get();
    c->transport = std::move(t);
  } else {
    c->transport = std::make_unique<SimTransport>(*network_, network_id);
  }
  int64_t skew = Uniform(0, options_.ns.clock_skew_ns / 2);
  c->clock = std::make_unique<SimWallClock>(timer_, start_, skew);
  c->lister = std::make_unique<SimRecordLister>(*network_, network_id, timer_, config_);
  ProposerOptions po;
  po.proposer_id = id;
  po.rng_seed = rng_() | 1;
  po.round_timeout = kRoundTimeoutMs * kj::MILLISECONDS;
  po.op_timeout = kOpTimeoutMs * kj::MILLISECONDS;
  // Operations that reach too few replicas fail at once here, so that runs end many of them in
  // failure and unknown outcomes (the paths the checks and negative controls are about).
  po.no_quorum_retry = 0 * kj::MILLISECONDS;
  po.unsafe_shared_first_write_at_w = options_.unsafe_shared_first_write_at_w;
  c->proposer = std::make_unique<Proposer>(*c->transport, timer_, po);
  c->proposer->SetConfig(config_);
  c->allocator = std::make_unique<InodeAllocator>(*c->proposer);
  NamespaceOptions no = options_.ns;
  no.client_id = id;
  c->ns =
      std::make_unique<Namespace>(*c->proposer, *c->allocator, *c->lister, timer_, *c->clock, no);
  return c;
}

void NamespaceSim::CountBatches(const NsClient& c) {
  result_.stats.batches_found_applied += static_cast<int64_t>(c.ns->batches_found_applied());
  result_.stats.batches_lost_track += static_cast<int64_t>(c.ns->batches_lost_track());
}

void NamespaceSim::RestartSlot(Slot& slot) {
  ++slot.generation;
  if (slot.client) CountBatches(*slot.client);
  slot.client.reset();
  slot.life = std::make_shared<Life>(kj::newPromiseAndFulfiller<void>());
  slot.client = NewClient("c" + std::to_string(slot.index) + "." + std::to_string(slot.generation),
                          slot.index, options_.unknown_outcome_rate);
  slot.client->client_transport->set_alone([life = slot.life]() { return life->in_flight <= 1; });
  Trace("client " + slot.client->name + " started");
}

template <typename F, typename T>
std::optional<T> NamespaceSim::RunOp(kj::WaitScope& ws, Slot& slot, F make, const std::string& what,
                                     std::optional<double> crash_rate,
                                     std::pair<int64_t, int64_t> crash_window_us,
                                     bool after_commit) {
  while (slot.life->dead) Sleep(ws, 100 * kj::MICROSECONDS);  // the next process is starting
  std::shared_ptr<Life> life = slot.life;
  ++result_.stats.ops;
  Trace("client " + slot.client->name + ": " + what);
  auto done = make(*slot.client->ns)
                  .then([](T&& v) { return std::optional<T>(std::move(v)); })
                  .exclusiveJoin(life->died.addBranch().then([]() { return std::optional<T>(); }));
  // Held until the operation ends: a fulfiller dropped unfulfilled would reject the crash.
  struct Trigger {
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
    bool armed = false;
  };
  auto trigger = std::make_shared<Trigger>();
  bool hooked = false;
  if (Chance(crash_rate.value_or(options_.client_crash_rate))) {
    if (crash_window_us.second == 0) crash_window_us = {0, options_.crash_window_us};
    kj::Promise<void> crash = nullptr;
    if (after_commit && slot.client->client_transport) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      trigger->fulfiller = kj::mv(paf.fulfiller);
      slot.client->client_transport->on_commit = [this, trigger, crash_window_us]() {
        if (trigger->armed) return;
        trigger->armed = true;
        auto at = network_->UniformUs(crash_window_us.first, crash_window_us.second);
        network_->After(at, [trigger]() { trigger->fulfiller->fulfill(); });
      };
      crash = kj::mv(paf.promise);
      hooked = true;
    } else {
      crash = timer_.afterDelay(network_->UniformUs(crash_window_us.first, crash_window_us.second));
    }
    done = done.exclusiveJoin(crash.then([this, life, what]() {
      Trace("client crashes during " + what);
      life->Kill();
      return std::optional<T>();
    }));
  }
  ++life->in_flight;
  std::optional<T> r = done.wait(ws);
  --life->in_flight;
  if (hooked && slot.life == life) slot.client->client_transport->on_commit = nullptr;
  if (!r) {
    Trace("client " + slot.client->name + ": " + what + " ended by the crash");
    if (life->in_flight == 0) {
      ++result_.stats.client_crashes;
      RestartSlot(slot);
    } else {
      while (slot.life == life) Sleep(ws, 100 * kj::MICROSECONDS);
    }
  }
  return r;
}

void NamespaceSim::Tally(const Status& s, const std::string& what) {
  if (s.ok()) {
    ++result_.stats.ok;
  } else if (PosixError(s.code())) {
    ++result_.stats.expected_errors;
  } else if (Ambiguous(s.code())) {
    ++result_.stats.ambiguous;
    NoteAmbiguous(what, s);
  } else {
    Error(what + ": unexpected status " + s.ToString());
  }
  Trace("  " + what + " -> " + s.ToString());
}

void NamespaceSim::JoinAll(kj::WaitScope& ws,
                           std::vector<std::function<void(kj::WaitScope&)>> work) {
  kj::Vector<kj::Promise<void>> all;
  for (auto& w : work) {
    all.add(fibers_.startFiber([w = std::move(w)](kj::WaitScope& ws) { w(ws); }));
  }
  kj::joinPromises(all.releaseAsArray()).wait(ws);
}

CreateRequest Request(FileType type) {
  CreateRequest req;
  req.type = type;
  req.mode = type == FileType::kDirectory ? 0755 : 0644;
  return req;
}

// ---- Workload -----------------------------------------------------------------------------------

uint64_t NamespaceSim::SetupDir(kj::WaitScope& ws, uint64_t parent, const std::string& name) {
  for (int attempt = 0;; ++attempt) {
    auto r = checker_->ns->Create(parent, name, Request(FileType::kDirectory)).wait(ws);
    if (r.ok()) {
      known_dirs_.insert(r->ino);
      dir_names_[r->ino] = EntryName(parent, name);
      names_used_[parent].insert(name);
      return r->ino;
    }
    if (attempt > 5) {
      Error("setup: mkdir " + EntryName(parent, name) + ": " + r.status().ToString());
      return 0;
    }
  }
}

void NamespaceSim::Setup(kj::WaitScope& ws) {
  checker_ = NewClient("checker", kCheckerClient, 0);
  repair_ = NewClient("repair", kRepairClient, 0);
  auto root = checker_->ns->EnsureRoot().wait(ws);
  if (!root.ok()) Error("setup: EnsureRoot: " + root.status().ToString());
  dir_names_[kRootIno] = "";
  known_dirs_.insert(kRootIno);
  for (int i = 0; i < 3; ++i) {
    uint64_t d = SetupDir(ws, kRootIno, "s" + std::to_string(i));
    static_dirs_.push_back(d);
    shared_dirs_.push_back(d);
  }
  priv_ = SetupDir(ws, kRootIno, "priv");
  for (int i = 0; i < options_.clients; ++i) {
    Slot slot;
    slot.index = i;
    slot.generation = -1;
    slots_.push_back(std::move(slot));
  }
  for (auto& slot : slots_) {
    RestartSlot(slot);
    Area area;
    area.name = "p" + std::to_string(slot.index) + "." + std::to_string(slot.next_area++);
    area.ino = SetupDir(ws, priv_, area.name);
    slot.areas.push_back(std::move(area));
  }
}

void NamespaceSim::RepairLoop(kj::WaitScope& ws) {
  while (!repair_stop_) {
    Sleep(ws, network_->UniformUs(30'000, 200'000));
    if (repair_stop_) break;
    auto r = repair_->ns->ResolveTransactions().wait(ws);
    ++result_.stats.repair_runs;
    Trace("repair: ResolveTransactions -> " +
          (r.ok() ? std::to_string(*r) + " transaction(s)" : r.status().ToString()));
    if (!r.ok() && !Ambiguous(r.status().code())) {
      Error("repair: ResolveTransactions: " + r.status().ToString());
    }
    if (!shared_dirs_.empty() && Chance(options_.concurrent_recount_rate)) {
      const uint64_t dir = Pick(shared_dirs_);
      auto c = repair_->ns->FixDirectoryCounts(dir).wait(ws);
      ++result_.stats.live_recounts;
      Trace("repair: FixDirectoryCounts of " + DirName(dir) + " -> " +
            (c.ok() ? (*c ? "written" : "unchanged") : c.status().ToString()));
      if (c.ok() && *c) ++result_.stats.live_recounts_written;
      if (!c.ok() && !Ambiguous(c.status().code()) && c.status().code() != StatusCode::kNotFound) {
        Error("repair: FixDirectoryCounts of " + DirName(dir) + ": " + c.status().ToString());
      }
    }
  }
}

void NamespaceSim::Conductor(kj::WaitScope& ws) {
  Setup(ws);
  network_->faults() = options_.faults;
  if (options_.faults.crashes) network_->StartFaults([this]() { return faults_stopped_; });
  auto repair = fibers_.startFiber([this](kj::WaitScope& ws) { RepairLoop(ws); }).fork();
  tasks_->add(repair.addBranch());
  for (int r = 0; r < options_.rounds; ++r) Round(ws, r);
  faults_stopped_ = true;
  repair_stop_ = true;
  repair.addBranch().wait(ws);
  Quiesce(ws);
  Snapshot before = Check(ws, Phase::kBeforeRecovery);
  Recover(ws);
  Snapshot after = Check(ws, Phase::kAfterRecovery);
  CompareSnapshots(before, after);
  done_ = true;
}

void NamespaceSim::Round(kj::WaitScope& ws, int round) {
  double roll = static_cast<double>(Uniform(0, 999)) / 1000;
  double excl = options_.exclusive_round_rate;
  double rmdir = excl + options_.rmdir_race_rate;
  double cross = rmdir + options_.cross_move_rate;
  if (roll < excl) return ExclusiveRound(ws, round);
  if (roll < rmdir && options_.clients >= 2) return RmdirRace(ws, round);
  if (roll < cross && options_.clients >= 3) return CrossMove(ws, round);
  if (roll < cross + options_.crash_rename_round_rate) return CrashingRenames(ws);
  if (roll < cross + options_.crash_rename_round_rate + options_.burst_round_rate) {
    return Burst(ws);
  }
  std::vector<std::function<void(kj::WaitScope&)>> work;
  for (auto& slot : slots_) {
    int count = static_cast<int>(Uniform(1, options_.ops_per_round));
    work.push_back([this, &slot, count](kj::WaitScope& ws) { RandomOps(ws, slot, count); });
    if (Chance(options_.concurrent_rate)) {
      // The same process also runs shared-area operations at the same time (as a mount does):
      // its changes of one directory record are combined into one CAS.
      int more = static_cast<int>(Uniform(1, options_.ops_per_round));
      work.push_back([this, &slot, more](kj::WaitScope& ws) {
        for (int i = 0; i < more; ++i) {
          Sleep(ws, network_->UniformUs(0, 3000));
          SharedOp(ws, slot);
        }
      });
    }
  }
  JoinAll(ws, std::move(work));
}

void NamespaceSim::RandomOps(kj::WaitScope& ws, Slot& slot, int count) {
  for (int i = 0; i < count; ++i) {
    Sleep(ws, network_->UniformUs(0, 3000));
    if (Chance(options_.private_rate)) {
      PrivateOpOnce(ws, slot);
    } else {
      SharedOp(ws, slot);
    }
  }
}

std::optional<uint64_t> NamespaceSim::MakeDir(kj::WaitScope& ws, Slot& slot, uint64_t parent,
                                              const std::string& name) {
  ++result_.stats.mkdirs;
  names_used_[parent].insert(name);
  std::string what = "mkdir " + EntryName(parent, name);
  auto r = RunOp(
      ws, slot,
      [&](Namespace& ns) { return ns.Create(parent, name, Request(FileType::kDirectory)); }, what);
  if (!r) return std::nullopt;
  Tally(r->status(), what);
  if (!r->ok()) return std::nullopt;
  uint64_t ino = (*r)->ino;
  known_dirs_.insert(ino);
  dir_names_[ino] = EntryName(parent, name);
  return ino;
}

void NamespaceSim::SharedOp(kj::WaitScope& ws, Slot& slot) {
  const uint64_t p = Pick(shared_dirs_);
  const std::string n = Pick(pool_);
  names_used_[p].insert(n);
  const int roll = static_cast<int>(Uniform(0, 99));
  if (roll < 30) {  // create: a file, or a directory
    const bool dir = roll >= 20;
    if (dir) {
      if (auto ino = MakeDir(ws, slot, p, n)) {
        shared_dirs_.push_back(*ino);
        // Keep the parents few, so operations keep meeting each other.
        if (shared_dirs_.size() > static_dirs_.size() + 8) {
          shared_dirs_.erase(shared_dirs_.begin() + static_cast<long>(static_dirs_.size()));
        }
      }
      return;
    }
    ++result_.stats.creates;
    std::string what = "create " + EntryName(p, n);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Create(p, n, Request(FileType::kRegular)); },
        what);
    if (!r) return;
    Tally(r->status(), what);
    if (r->ok()) {
      known_files_.insert((*r)->ino);
      shared_files_.push_back((*r)->ino);
      if (shared_files_.size() > 12) shared_files_.erase(shared_files_.begin());
    }
  } else if (roll < 45) {
    ++result_.stats.unlinks;
    std::string what = "unlink " + EntryName(p, n);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Unlink(p, n); }, what);
    if (r) Tally(*r, what);
  } else if (roll < 55) {
    ++result_.stats.rmdirs;
    std::string what = "rmdir " + EntryName(p, n);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Rmdir(p, n); }, what);
    if (r) Tally(*r, what);
  } else if (roll < 63 && !shared_files_.empty()) {
    ++result_.stats.links;
    uint64_t ino = Pick(shared_files_);
    std::string what = "link #" + std::to_string(ino) + " as " + EntryName(p, n);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Link(ino, p, n); }, what);
    if (r) Tally(r->status(), what);
  } else if (roll < 90) {
    ++result_.stats.renames;
    const uint64_t p2 = Chance(0.5) ? p : Pick(shared_dirs_);
    const std::string n2 = Pick(pool_);
    names_used_[p2].insert(n2);
    int64_t f = Uniform(0, 99);
    uint32_t flags = f < 15 ? uint32_t{kRenameNoReplace} : f < 25 ? uint32_t{kRenameExchange} : 0;
    std::string what = "rename " + EntryName(p, n) + " -> " + EntryName(p2, n2) +
                       (flags == kRenameNoReplace  ? " NOREPLACE"
                        : flags == kRenameExchange ? " EXCHANGE"
                                                   : "");
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Rename(p, n, p2, n2, flags); }, what);
    if (r) Tally(*r, what);
  } else if (roll < 95) {
    ++result_.stats.readdirs;
    std::string what = "readdir " + DirName(p);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.ReadDir(p, 0, 64); }, what);
    if (!r) return;
    Tally(r->status(), what);
    if (r->ok()) {
      std::set<std::string> names;
      for (const auto& e : (*r)->entries) {
        if (!names.insert(e.name).second) {
          Violation("readdir of " + DirName(p) + " by client " + slot.client->name + " listed " +
                    e.name + " twice");
        }
      }
    }
  } else {
    ++result_.stats.lookups;
    std::string what = "lookup " + EntryName(p, n);
    auto r = RunOp(
        ws, slot, [&](Namespace& ns) { return ns.Lookup(p, n); }, what);
    if (r) Tally(r->status(), what);
  }
}

bool NamespaceSim::EnsureArea(kj::WaitScope& ws, Slot& slot) {
  if (!slot.areas.empty() && !slot.areas.back().retired) return true;
  Area area;
  area.name = "p" + std::to_string(slot.index) + "." + std::to_string(slot.next_area++);
  auto ino = MakeDir(ws, slot, priv_, area.name);
  if (!ino) return false;  // an ambiguous mkdir: the next attempt takes the next name
  area.ino = *ino;
  slot.areas.push_back(std::move(area));
  return true;
}

void NamespaceSim::Retire(Slot& slot, const PrivateOp& op, StatusCode predicted,
                          const std::string& why) {
  Area& area = slot.areas.back();
  area.retired = true;
  area.before = area.model;
  area.after = predicted == StatusCode::kOk ? ApplyOk(area.model, op, 0) : area.model;
  area.last_op = op.Describe() + " (" + why + ")";
  ++result_.stats.retired_areas;
  Trace("private directory /priv/" + area.name + " retired after " + area.last_op);
}

void NamespaceSim::PrivateOpOnce(kj::WaitScope& ws, Slot& slot) {
  if (!EnsureArea(ws, slot)) return;
  Area& area = slot.areas.back();
  const Model& m = area.model;
  std::vector<std::string> dirs = {""}, files, entries;
  for (const auto& [path, e] : m) {
    entries.push_back(path);
    (e.type == FileType::kDirectory ? dirs : files).push_back(path);
  }
  auto split = [](const std::string& path, std::string* dir, std::string* name) {
    size_t slash = path.rfind('/');
    *dir = slash == std::string::npos ? "" : path.substr(0, slash);
    *name = slash == std::string::npos ? path : path.substr(slash + 1);
  };
  // Mostly operate on entries that exist, so that most operations do something.
  auto pick_entry = [&](const std::vector<std::string>& from, PrivateOp* op) {
    if (!from.empty() && Chance(0.75)) {
      split(Pick(from), &op->dir, &op->name);
    } else {
      op->dir = Pick(dirs);
      op->name = Pick(pool_);
    }
  };
  PrivateOp op;
  const int roll = static_cast<int>(Uniform(0, 99));
  if (roll < 22) {
    op.kind = OpKind::kCreate;
  } else if (roll < 32) {
    op.kind = OpKind::kMkdir;
  } else if (roll < 44) {
    op.kind = OpKind::kUnlink;
  } else if (roll < 52) {
    op.kind = OpKind::kRmdir;
  } else if (roll < 60 && !files.empty()) {
    op.kind = OpKind::kLink;
    op.link_target = Pick(files);
  } else if (roll < 88) {
    op.kind = OpKind::kRename;
  } else if (roll < 94) {
    op.kind = OpKind::kReadDir;
  } else {
    op.kind = OpKind::kLookup;
  }
  switch (op.kind) {
    case OpKind::kCreate:
    case OpKind::kMkdir:
    case OpKind::kLink:
      op.dir = Pick(dirs);
      op.name = Pick(pool_);
      break;
    case OpKind::kUnlink:
      pick_entry(files, &op);
      break;
    case OpKind::kLookup:
      pick_entry(entries, &op);
      break;
    case OpKind::kRmdir:
      pick_entry(std::vector<std::string>(dirs.begin() + 1, dirs.end()), &op);
      break;
    case OpKind::kRename: {
      pick_entry(entries, &op);
      op.dir2 = Chance(0.5) ? op.dir : Pick(dirs);
      op.name2 = Pick(pool_);
      int64_t f = Uniform(0, 99);
      op.flags = f < 15 ? uint32_t{kRenameNoReplace} : f < 30 ? uint32_t{kRenameExchange} : 0;
      break;
    }
    case OpKind::kReadDir:
      op.dir = Pick(dirs);
      break;
  }
  RunPrivateOp(ws, slot, op, options_.client_crash_rate);
}

void NamespaceSim::RunPrivateOp(kj::WaitScope& ws, Slot& slot, const PrivateOp& op,
                                double crash_rate, std::pair<int64_t, int64_t> crash_window_us,
                                bool after_commit) {
  Area& area = slot.areas.back();
  const Model& m = area.model;
  auto dir_ino = [&](const std::string& dir) { return dir.empty() ? area.ino : m.at(dir).ino; };
  const uint64_t parent = dir_ino(op.dir);
  const StatusCode predicted = Predict(m, op);
  const std::string what = "private " + area.name + ": " + op.Describe();
  if (op.kind != OpKind::kReadDir) names_used_[parent].insert(op.name);
  std::optional<Status> status;
  uint64_t new_ino = 0;
  std::optional<Inode> looked_up;
  std::optional<DirListing> listing;
  switch (op.kind) {
    case OpKind::kCreate:
    case OpKind::kMkdir: {
      ++(op.kind == OpKind::kCreate ? result_.stats.creates : result_.stats.mkdirs);
      FileType type = op.kind == OpKind::kCreate ? FileType::kRegular : FileType::kDirectory;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Create(parent, op.name, Request(type)); }, what,
          crash_rate, crash_window_us, after_commit);
      if (r) {
        status = r->status();
        if (r->ok()) new_ino = (*r)->ino;
      }
      break;
    }
    case OpKind::kUnlink: {
      ++result_.stats.unlinks;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Unlink(parent, op.name); }, what, crash_rate,
          crash_window_us, after_commit);
      if (r) status = *r;
      break;
    }
    case OpKind::kRmdir: {
      ++result_.stats.rmdirs;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Rmdir(parent, op.name); }, what, crash_rate,
          crash_window_us, after_commit);
      if (r) status = *r;
      break;
    }
    case OpKind::kLink: {
      ++result_.stats.links;
      auto r = RunOp(
          ws, slot,
          [&](Namespace& ns) { return ns.Link(m.at(op.link_target).ino, parent, op.name); }, what,
          crash_rate, crash_window_us, after_commit);
      if (r) status = r->status();
      break;
    }
    case OpKind::kRename: {
      ++result_.stats.renames;
      uint64_t parent2 = dir_ino(op.dir2);
      names_used_[parent2].insert(op.name2);
      auto r = RunOp(
          ws, slot,
          [&](Namespace& ns) { return ns.Rename(parent, op.name, parent2, op.name2, op.flags); },
          what, crash_rate, crash_window_us, after_commit);
      if (r) status = *r;
      break;
    }
    case OpKind::kReadDir: {
      ++result_.stats.readdirs;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.ReadDir(parent, 0, 64); }, what, crash_rate,
          crash_window_us, after_commit);
      if (r) {
        status = r->status();
        if (r->ok()) listing = std::move(**r);
      }
      break;
    }
    case OpKind::kLookup: {
      ++result_.stats.lookups;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Lookup(parent, op.name); }, what, crash_rate,
          crash_window_us, after_commit);
      if (r) {
        status = r->status();
        if (r->ok()) looked_up = **r;
      }
      break;
    }
  }
  if (!status) return Retire(slot, op, predicted, "client crashed");
  Trace("  client " + slot.client->name + ", " + what + " -> " + status->ToString());
  if (Ambiguous(status->code())) {
    ++result_.stats.ambiguous;
    NoteAmbiguous(what, *status);
    return Retire(slot, op, predicted, status->ToString());
  }
  if (status->code() == StatusCode::kNotEmpty && predicted == StatusCode::kOk &&
      !options_.expect_exact_counts) {
    // rmdir (or a rename over a directory) trusts the directory's entry count, which an
    // interrupted or failed unlink may have left high until fsck: ENOTEMPTY for an empty
    // directory is what the design gives then, and nothing changed.
    const std::string target =
        op.kind == OpKind::kRename ? Join(op.dir2, op.name2) : Join(op.dir, op.name);
    auto it = m.find(target);
    auto in = it != m.end() && it->second.type == FileType::kDirectory
                  ? checker_->ns->GetAttr(it->second.ino).wait(ws)
                  : Result<Inode>(Status(StatusCode::kNotFound, "no directory there"));
    if (in.ok() && in->entry_count > 0) {
      ++result_.stats.expected_errors;
      ++result_.stats.refused_for_high_count;
      Trace("  (the entry count of " + target + " is " + std::to_string(in->entry_count) +
            " for an empty directory)");
      return;
    }
  }
  if (status->code() != predicted) {
    Violation("client " + slot.client->name + ", " + what + ": returned " + status->ToString() +
              ", but its acknowledged operations make it " + CodeName(predicted) +
              "; the directory held " + Describe(m));
    return Retire(slot, op, predicted, "unexpected result");
  }
  ++(status->ok() ? result_.stats.ok : result_.stats.expected_errors);
  if (!status->ok()) return;
  const bool exact = options_.expect_exact_counts;
  if (looked_up) {
    const ModelEntry& want = m.at(Join(op.dir, op.name));
    if (looked_up->ino != want.ino || looked_up->type != want.type) {
      Violation("client " + slot.client->name + ", " + what + ": found #" +
                std::to_string(looked_up->ino) + ", but its acknowledged operations made #" +
                std::to_string(want.ino));
      return Retire(slot, op, predicted, "unexpected result");
    }
    if (!looked_up->is_dir()) {
      uint64_t links = 0;
      for (const auto& [path, e] : m) links += e.ino == want.ino;
      if (looked_up->nlink < links || (exact && looked_up->nlink != links)) {
        Violation("client " + slot.client->name + ", " + what + ": nlink " +
                  std::to_string(looked_up->nlink) + ", but " + std::to_string(links) +
                  " entries name it");
      }
    }
  }
  if (listing) {
    Model got, want;
    for (const auto& e : listing->entries) got[e.name] = ModelEntry{e.type, e.ino};
    const std::string prefix = op.dir.empty() ? "" : op.dir + "/";
    for (const auto& [path, e] : m) {
      if (path.rfind(prefix, 0) == 0 && path.find('/', prefix.size()) == std::string::npos) {
        want[path.substr(prefix.size())] = e;
      }
    }
    if (got != want || listing->entries.size() != got.size()) {
      Violation("client " + slot.client->name + ", " + what + ": listed " + Describe(got) + " (" +
                std::to_string(listing->entries.size()) +
                " entries), but its acknowledged operations leave " + Describe(want));
      return Retire(slot, op, predicted, "unexpected result");
    }
  }
  area.model = ApplyOk(area.model, op, new_ino);
  if (op.kind == OpKind::kCreate) known_files_.insert(new_ino);
  if (op.kind == OpKind::kMkdir) {
    known_dirs_.insert(new_ino);
    dir_names_[new_ino] = "/priv/" + area.name + "/" + Join(op.dir, op.name);
  }
}

// ---- Special rounds -----------------------------------------------------------------------------

void NamespaceSim::ExclusiveRound(kj::WaitScope& ws, int round) {
  const uint64_t d = Pick(static_dirs_);
  const std::string name = "x" + std::to_string(round);
  names_used_[d].insert(name);
  ++result_.stats.exclusive_rounds;
  std::vector<std::pair<std::string, uint64_t>> winners;  // client, ino
  std::vector<std::function<void(kj::WaitScope&)>> work;
  for (auto& slot : slots_) {
    work.push_back([this, &slot, d, name, &winners](kj::WaitScope& ws) {
      Sleep(ws, network_->UniformUs(0, 2000));
      ++result_.stats.creates;
      std::string what = "O_EXCL race: create " + EntryName(d, name);
      std::string client = slot.client->name;
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Create(d, name, Request(FileType::kRegular)); },
          what);
      if (!r) return;
      Tally(r->status(), what);
      if (r->ok()) winners.emplace_back(client, (*r)->ino);
    });
  }
  JoinAll(ws, std::move(work));
  result_.stats.exclusive_winners += static_cast<int64_t>(winners.size());
  if (winners.size() > 1) {
    std::string who;
    for (const auto& [client, ino] : winners)
      who += " " + client + " (#" + std::to_string(ino) + ")";
    Violation("O_EXCL: " + std::to_string(winners.size()) + " creates of " + EntryName(d, name) +
              " succeeded:" + who);
  }
  if (winners.empty() && options_.expect_exact_counts) {
    Violation("O_EXCL: no create of " + EntryName(d, name) + " succeeded in a run without faults");
  }
  for (const auto& w : winners) known_files_.insert(w.second);
  races_.push_back(ExclusiveRace{d, name, winners.empty() ? 0 : winners[0].second});
}

void NamespaceSim::RmdirRace(kj::WaitScope& ws, int round) {
  Slot& remover = slots_[Uniform(0, static_cast<int64_t>(slots_.size()) - 1)];
  const uint64_t d = Pick(static_dirs_);
  const std::string name = "r" + std::to_string(round);
  auto dir = MakeDir(ws, remover, d, name);
  if (!dir) return;
  shared_dirs_.push_back(*dir);
  ++result_.stats.rmdir_races;
  bool removed = false;
  std::vector<std::string> created;
  std::vector<std::function<void(kj::WaitScope&)>> work;
  for (auto& slot : slots_) {
    if (&slot == &remover) {
      work.push_back([this, &slot, d, name, &removed](kj::WaitScope& ws) {
        ++result_.stats.rmdirs;
        std::string what = "rmdir race: rmdir " + EntryName(d, name);
        auto r = RunOp(
            ws, slot, [&](Namespace& ns) { return ns.Rmdir(d, name); }, what);
        if (!r) return;
        Tally(*r, what);
        removed = r->ok();
      });
      continue;
    }
    work.push_back([this, &slot, d, round, dir = *dir, &created](kj::WaitScope& ws) {
      if (Chance(0.4)) {
        // A file moved into the directory instead (a rename keeps the directory out of its
        // transaction, with a rename mark on it): made first beside it, under a name of its
        // own, then renamed in while the rmdir runs.
        const std::string src = "m" + std::to_string(round) + "." + slot.client->name;
        const std::string n = Pick(pool_);
        names_used_[d].insert(src);
        names_used_[dir].insert(n);
        ++result_.stats.creates;
        std::string what = "rmdir race: create " + EntryName(d, src);
        auto made = RunOp(
            ws, slot, [&](Namespace& ns) { return ns.Create(d, src, Request(FileType::kRegular)); },
            what);
        if (!made) return;
        Tally(made->status(), what);
        if (!made->ok()) return;
        known_files_.insert((*made)->ino);
        Sleep(ws, network_->UniformUs(0, 25'000));
        ++result_.stats.renames;
        what = "rmdir race: rename " + EntryName(d, src) + " -> " + EntryName(dir, n);
        auto moved = RunOp(
            ws, slot, [&](Namespace& ns) { return ns.Rename(d, src, dir, n, kRenameNoReplace); },
            what);
        if (!moved) return;
        Tally(*moved, what);
        if (moved->ok()) created.push_back(n);
        return;
      }
      Sleep(ws, network_->UniformUs(0, 25'000));
      const std::string n = Pick(pool_);
      names_used_[dir].insert(n);
      FileType type = Chance(0.3) ? FileType::kDirectory : FileType::kRegular;
      ++(type == FileType::kRegular ? result_.stats.creates : result_.stats.mkdirs);
      std::string what = "rmdir race: create " + EntryName(dir, n);
      auto r = RunOp(
          ws, slot, [&](Namespace& ns) { return ns.Create(dir, n, Request(type)); }, what);
      if (!r) return;
      Tally(r->status(), what);
      if (!r->ok()) return;
      created.push_back(n);
      if (type == FileType::kDirectory) {
        known_dirs_.insert((*r)->ino);
        dir_names_[(*r)->ino] = EntryName(dir, n);
      } else {
        known_files_.insert((*r)->ino);
      }
    });
  }
  JoinAll(ws, std::move(work));
  if (removed) ++result_.stats.rmdir_race_wins;
  if (removed && !created.empty()) {
    std::string names;
    for (const auto& n : created) names += " " + n;
    Violation("rmdir " + EntryName(d, name) +
              " succeeded, and so did creates into it (or moves):" + names);
  }
}

void NamespaceSim::CrashingRenames(kj::WaitScope& ws) {
  ++result_.stats.crashing_rename_rounds;
  std::vector<std::function<void(kj::WaitScope&)>> work;
  for (auto& slot : slots_) {
    work.push_back([this, &slot](kj::WaitScope& ws) {
      Sleep(ws, network_->UniformUs(0, 2000));
      if (!EnsureArea(ws, slot)) return;
      std::vector<std::string> files, dirs = {""};
      for (const auto& [path, e] : slot.areas.back().model) {
        (e.type == FileType::kDirectory ? dirs : files).push_back(path);
      }
      PrivateOp op;
      if (files.empty()) {
        op.kind = OpKind::kCreate;
        op.dir = Pick(dirs);
        op.name = Pick(pool_);
        RunPrivateOp(ws, slot, op, options_.client_crash_rate);
        return;
      }
      const std::string src = Pick(files);
      size_t slash = src.rfind('/');
      op.kind = OpKind::kRename;
      op.dir = slash == std::string::npos ? "" : src.substr(0, slash);
      op.name = slash == std::string::npos ? src : src.substr(slash + 1);
      op.dir2 = Pick(dirs);
      op.name2 = Pick(pool_);
      // The crash lands just after the client sends its commit: with the commit chosen or
      // not, and some of its intents resolved and others not.
      RunPrivateOp(ws, slot, op, options_.crashing_rename_rate, {0, 3'000}, true);
    });
  }
  JoinAll(ws, std::move(work));
}

void NamespaceSim::Burst(kj::WaitScope& ws) {
  ++result_.stats.burst_rounds;
  const uint64_t d = Pick(static_dirs_);
  std::vector<std::function<void(kj::WaitScope&)>> work;
  for (auto& slot : slots_) {
    for (int i = 0; i < 3; ++i) {
      work.push_back([this, &slot, d](kj::WaitScope& ws) {
        Sleep(ws, network_->UniformUs(0, 2000));
        const std::string n = Pick(pool_);
        names_used_[d].insert(n);
        if (Chance(0.5)) {
          ++result_.stats.creates;
          std::string what = "burst: create " + EntryName(d, n);
          auto r = RunOp(
              ws, slot, [&](Namespace& ns) { return ns.Create(d, n, Request(FileType::kRegular)); },
              what);
          if (!r) return;
          Tally(r->status(), what);
          if (r->ok()) known_files_.insert((*r)->ino);
        } else {
          ++result_.stats.unlinks;
          std::string what = "burst: unlink " + EntryName(d, n);
          auto r = RunOp(
              ws, slot, [&](Namespace& ns) { return ns.Unlink(d, n); }, what);
          if (r) Tally(*r, what);
        }
      });
    }
  }
  JoinAll(ws, std::move(work));
}

void NamespaceSim::CrossMove(kj::WaitScope& ws, int round) {
  std::vector<Slot*> order;
  for (auto& slot : slots_) order.push_back(&slot);
  std::shuffle(order.begin(), order.end(), rng_);
  const uint64_t d1 = Pick(static_dirs_);
  uint64_t d2 = Pick(static_dirs_);
  while (d2 == d1) d2 = Pick(static_dirs_);
  const std::string na = "m" + std::to_string(round) + "a";
  const std::string nb = "m" + std::to_string(round) + "b";
  auto a = MakeDir(ws, *order[0], d1, na);
  if (!a) return;
  auto b = MakeDir(ws, *order[0], d2, nb);
  if (!b) return;
  shared_dirs_.push_back(*a);
  shared_dirs_.push_back(*b);
  names_used_[*b].insert(na);
  names_used_[*a].insert(nb);
  ++result_.stats.cross_moves;
  std::optional<Status> moved_a, moved_b;
  std::vector<std::function<void(kj::WaitScope&)>> work;
  work.push_back([this, s = order[1], d1, na, b = *b, &moved_a](kj::WaitScope& ws) {
    Sleep(ws, network_->UniformUs(0, 30'000));
    ++result_.stats.renames;
    std::string what = "crossing move: rename " + EntryName(d1, na) + " -> " + EntryName(b, na);
    auto r = RunOp(
        ws, *s, [&](Namespace& ns) { return ns.Rename(d1, na, b, na); }, what);
    if (!r) return;
    Tally(*r, what);
    moved_a = *r;
  });
  work.push_back([this, s = order[2], d2, nb, a = *a, &moved_b](kj::WaitScope& ws) {
    Sleep(ws, network_->UniformUs(0, 30'000));
    ++result_.stats.renames;
    std::string what = "crossing move: rename " + EntryName(d2, nb) + " -> " + EntryName(a, nb);
    auto r = RunOp(
        ws, *s, [&](Namespace& ns) { return ns.Rename(d2, nb, a, nb); }, what);
    if (!r) return;
    Tally(*r, what);
    moved_b = *r;
  });
  for (size_t i = 3; i < order.size(); ++i) {
    int count = static_cast<int>(Uniform(1, options_.ops_per_round));
    work.push_back([this, s = order[i], count](kj::WaitScope& ws) { RandomOps(ws, *s, count); });
  }
  JoinAll(ws, std::move(work));
  if (moved_a && moved_b && moved_a->ok() && moved_b->ok()) {
    Violation("crossing directory moves both succeeded: " + EntryName(d1, na) + " into " +
              EntryName(d2, nb) + " and " + EntryName(d2, nb) + " into " + EntryName(d1, na) +
              " (a directory cycle)");
  }
  if (moved_a && moved_b && !moved_a->ok() && !moved_b->ok()) {
    ++result_.stats.cross_moves_both_failed;
  }
}

// ---- Quiescence, recovery and checks
// -------------------------------------------------------------

void NamespaceSim::Quiesce(kj::WaitScope& ws) {
  network_->faults() = quiet_faults_;
  network_->RestartAll();
  // Past every transaction's deadline, and past the arrival of every message still in flight.
  Sleep(ws, options_.ns.txn_timeout_ns * kj::NANOSECONDS + 400 * kj::MILLISECONDS);
  while (!network_->AllDurable()) Sleep(ws, 5 * kj::MILLISECONDS);
  Settle();
}

// A full-replica identity round on every key: prepare at a ballot above every one a replica
// holds, adopt the value with the highest accepted ballot among all replicas, accept it on all.
// Any proposer that heard every replica would do the same; afterwards no read can still change
// its answer by adopting a value that a crashed client's late accept left on one replica.
void NamespaceSim::Settle() {
  std::set<std::string> keys;
  for (const auto& n : network_->nodes()) {
    for (const auto& [key, row] : n->storage.durable_rows()) keys.insert(key);
  }
  for (const auto& key : keys) {
    auto members = ReplicaGroupsFor(*config_, RecordPlacementKey(key))[0].members;
    std::vector<SimNode*> replicas;
    for (const auto& id : members) replicas.push_back(network_->FindNode(id));
    std::optional<AcceptorState> best;
    uint64_t top = 0;
    bool agree = true;
    for (SimNode* node : replicas) {
      auto& rows = node->storage.durable_rows();
      auto it = rows.find(key);
      if (it == rows.end()) {
        agree = false;
        continue;
      }
      top = std::max({top, it->second.promised.counter, it->second.accepted.counter});
      if (it->second.value && (!best || it->second.accepted > best->accepted)) best = it->second;
    }
    if (!best) continue;
    for (SimNode* node : replicas) {
      auto& rows = node->storage.durable_rows();
      auto it = rows.find(key);
      if (it == rows.end() || it->second.accepted != best->accepted) agree = false;
    }
    if (agree) continue;
    Ballot b{top + 1, kSettleProposer};
    for (SimNode* node : replicas) {
      node->storage.durable_rows()[key] = AcceptorState{b, b, best->value};
    }
  }
}

std::optional<std::vector<DirListing::Entry>> NamespaceSim::ReadDirAll(kj::WaitScope& ws,
                                                                       uint64_t dir) {
  std::vector<DirListing::Entry> out;
  uint64_t offset = 0;
  for (;;) {
    auto r = checker_->ns->ReadDir(dir, offset, 64).wait(ws);
    if (!r.ok()) {
      Error("checker: readdir of " + DirName(dir) + ": " + r.status().ToString());
      return std::nullopt;
    }
    for (auto& e : r->entries) out.push_back(e);
    if (r->end || r->entries.empty()) return out;
    offset = r->entries.back().offset;
  }
}

void NamespaceSim::Recover(kj::WaitScope& ws) {
  // Past every birth deadline, so that fsck may adopt or remove what crashed creates left.
  Sleep(ws, (options_.ns.birth_grace_ns + options_.ns.clock_skew_ns) * kj::NANOSECONDS +
                50 * kj::MILLISECONDS);
  Namespace& ns = *checker_->ns;
  auto resolved = ns.ResolveTransactions().wait(ws);
  if (!resolved.ok()) Error("recovery: ResolveTransactions: " + resolved.status().ToString());
  auto all_inodes = [&]() {
    std::vector<uint64_t> inos;
    std::string after;
    for (;;) {
      auto keys = checker_->lister->ListKeys("", "I/", after, 256).wait(ws);
      if (!keys.ok()) {
        Error("recovery: listing inodes: " + keys.status().ToString());
        return inos;
      }
      for (const auto& k : *keys) inos.push_back(DecodeU64(std::string_view(k).substr(2)));
      if (keys->size() < 256) return inos;
      after = keys->back();
    }
  };
  for (uint64_t ino : all_inodes()) {
    auto r = ns.FixInode(ino).wait(ws);
    // A key holding only a promise (a create that never wrote its inode) has no inode.
    if (!r.ok() && r.status().code() != StatusCode::kNotFound) {
      Error("recovery: FixInode #" + std::to_string(ino) + ": " + r.status().ToString());
    } else if (r.ok() && *r) {
      ++result_.stats.fixes;
    }
  }
  // A recount needs its directory quiet for the birth grace plus twice the skew bound (the
  // adoptions and resolutions above changed some), as fsck does.
  Sleep(ws, (options_.ns.birth_grace_ns + 2 * options_.ns.clock_skew_ns) * kj::NANOSECONDS +
                50 * kj::MILLISECONDS);
  for (uint64_t ino : all_inodes()) {
    auto in = ns.GetAttr(ino).wait(ws);
    if (!in.ok() || !in->is_dir()) continue;
    auto r = ns.FixDirectoryCounts(ino).wait(ws);
    if (!r.ok()) {
      Error("recovery: FixDirectoryCounts of " + DirName(ino) + ": " + r.status().ToString());
    } else if (*r) {
      ++result_.stats.fixes;
    }
  }
}

Snapshot NamespaceSim::Check(kj::WaitScope& ws, Phase phase) {
  const std::string when = phase == Phase::kBeforeRecovery ? "before recovery" : "after recovery";
  const bool exact = phase == Phase::kAfterRecovery || options_.expect_exact_counts;
  Namespace& ns = *checker_->ns;
  Snapshot snap;
  auto root = ns.GetAttr(kRootIno).wait(ws);
  if (!root.ok()) {
    Error(when + ": getattr of the root: " + root.status().ToString());
    return snap;
  }
  snap.inodes[kRootIno] = *root;
  snap.paths[kRootIno] = "";
  std::vector<uint64_t> queue = {kRootIno};
  for (size_t next = 0; next < queue.size(); ++next) {
    const uint64_t d = queue[next];
    const std::string& dpath = snap.paths[d];
    auto listing = ReadDirAll(ws, d);
    auto& names = snap.listings[d];
    if (!listing) continue;
    for (const auto& e : *listing) {
      if (!names.emplace(e.name, e).second) {
        Violation(when + ": readdir of " + dpath + "/ lists " + e.name + " twice");
      }
    }
    for (const auto& [name, e] : names) {
      const std::string path = dpath + "/" + name;
      auto found = ns.Lookup(d, name).wait(ws);
      if (!found.ok()) {
        auto attr = ns.GetAttr(e.ino).wait(ws);
        if (!attr.ok() && attr.status().code() == StatusCode::kNotFound) {
          Violation(when + ": entry " + path + " names inode #" + std::to_string(e.ino) +
                    ", which does not exist");
        } else {
          Violation(when + ": readdir lists " + path + " but lookup says " +
                    found.status().ToString());
        }
        continue;
      }
      const Inode& in = *found;
      if (in.ino != e.ino) {
        Violation(when + ": readdir says " + path + " is #" + std::to_string(e.ino) +
                  ", lookup says #" + std::to_string(in.ino));
        continue;
      }
      snap.inodes[in.ino] = in;
      snap.entries[path] = in.ino;
      if (in.state != InodeState::kLive) {
        Violation(when + ": entry " + path + " names inode #" + std::to_string(in.ino) +
                  " which is " + (in.state == InodeState::kDying ? "dying" : "unlinked-open"));
      }
      if (in.type != e.type) {
        Violation(when + ": entry " + path + " says " + TypeName(e.type) + ", inode #" +
                  std::to_string(in.ino) + " is a " + TypeName(in.type));
      }
      snap.named[in.ino].push_back(BackPointer{d, name});
      if (in.is_dir()) {
        auto seen = snap.paths.find(in.ino);
        if (seen != snap.paths.end()) {
          Violation(when + ": directory #" + std::to_string(in.ino) + " is reached twice, as " +
                    seen->second + " and as " + path + " (a cycle or a directory hard link)");
        } else {
          snap.paths[in.ino] = path;
          queue.push_back(in.ino);
        }
      }
    }
    // Lookups agree with readdir on names that are not listed.
    for (const auto& n : names_used_[d]) {
      if (names.count(n)) continue;
      auto found = ns.Lookup(d, n).wait(ws);
      if (found.ok()) {
        Violation(when + ": lookup finds " + dpath + "/" + n + " (#" + std::to_string(found->ino) +
                  ") but readdir does not list it");
      } else if (found.status().code() != StatusCode::kNotFound) {
        Error(when + ": checker: lookup of " + dpath + "/" + n + ": " + found.status().ToString());
      }
    }
  }
  CheckCounts(snap, exact, when);
  CheckParentChains(ws, snap, when);
  CheckUnreached(ws, snap, phase, when);
  CheckAreas(snap, when);
  for (const auto& race : races_) {
    if (race.winner == 0) continue;
    auto listing = snap.listings.find(race.dir);
    const DirListing::Entry* e = nullptr;
    if (listing != snap.listings.end()) {
      auto it = listing->second.find(race.name);
      if (it != listing->second.end()) e = &it->second;
    }
    if (e == nullptr || e->ino != race.winner) {
      Violation(when + ": the O_EXCL winner #" + std::to_string(race.winner) + " of " +
                EntryName(race.dir, race.name) + " is " +
                (e ? "replaced by #" + std::to_string(e->ino) : std::string("gone")));
    }
  }
  if (phase == Phase::kAfterRecovery) {
    // Every intent resolved: look at the newest accepted value of every key.
    std::map<std::string, AcceptorState> newest;
    for (const auto& n : network_->nodes()) {
      for (const auto& [key, row] : n->storage.durable_rows()) {
        auto it = newest.find(key);
        if (row.value && (it == newest.end() || row.accepted > it->second.accepted)) {
          newest[key] = row;
        }
      }
    }
    for (const auto& [key, row] : newest) {
      auto env = RecordEnvelope::Decode(*row.value);
      if (!env.ok()) continue;
      auto rec = MetaRecord::Decode(env->payload);
      if (rec.ok() && rec->intent) {
        Violation(when + ": " + DescribeKey(key) + " still carries an intent of transaction " +
                  std::to_string(rec->intent->txn));
      }
    }
  }
  return snap;
}

void NamespaceSim::CheckCounts(const Snapshot& snap, bool exact, const std::string& when) {
  auto compare = [&](const std::string& what, uint64_t actual, uint64_t truth) {
    if (actual < truth) {
      Violation(when + ": " + what + " is " + std::to_string(actual) + ", lower than the " +
                std::to_string(truth) + " the entries say");
    } else if (actual > truth) {
      if (exact) {
        Violation(when + ": " + what + " is " + std::to_string(actual) + ", not the " +
                  std::to_string(truth) + " the entries say" +
                  (options_.expect_exact_counts ? " (a run without crashes or faults)" : ""));
      } else {
        ++result_.stats.high_counts;
      }
    }
  };
  for (const auto& [d, names] : snap.listings) {
    const Inode& in = snap.inodes.at(d);
    uint64_t subdirs = 0;
    for (const auto& [name, e] : names) subdirs += e.type == FileType::kDirectory;
    const std::string dname =
        (d == kRootIno ? "/" : snap.paths.at(d)) + " (#" + std::to_string(d) + ")";
    compare("the entry count of " + dname, in.entry_count, names.size());
    if (exact && !in.rename_marks.empty()) {
      Violation(when + ": " + dname + " still has " + std::to_string(in.rename_marks.size()) +
                " rename marks");
    }
    compare("the nlink of " + dname, in.nlink, 2 + subdirs);
  }
  for (const auto& [ino, named] : snap.named) {
    const Inode& in = snap.inodes.at(ino);
    std::string first =
        (named[0].parent == kRootIno ? "" : snap.paths.at(named[0].parent)) + "/" + named[0].name;
    for (const auto& bp : named) {
      if (std::find(in.parents.begin(), in.parents.end(), bp) == in.parents.end()) {
        Violation(when + ": inode #" + std::to_string(ino) + " is named by an entry in " +
                  DirName(bp.parent) + " as " + bp.name + ", which its back-pointers omit");
      }
    }
    if (in.is_dir()) {
      if (in.parents.size() != 1) {
        Violation(when + ": directory " + first + " has " + std::to_string(in.parents.size()) +
                  " back-pointers");
      }
      continue;
    }
    compare("the nlink of " + first + " (#" + std::to_string(ino) + ")", in.nlink, named.size());
    if (exact && in.parents.size() != named.size()) {
      Violation(when + ": inode #" + std::to_string(ino) + " has " +
                std::to_string(in.parents.size()) + " back-pointers for " +
                std::to_string(named.size()) + " entries");
    }
  }
}

void NamespaceSim::CheckParentChains(kj::WaitScope& ws, Snapshot& snap, const std::string& when) {
  for (const auto& [d, path] : snap.paths) {
    std::set<uint64_t> seen;
    std::string chain;
    for (uint64_t cur = d; cur != kRootIno;) {
      chain += " #" + std::to_string(cur);
      if (!seen.insert(cur).second) {
        Violation(when + ": the parent back-pointers of " + path + " loop:" + chain);
        break;
      }
      auto it = snap.inodes.find(cur);
      if (it == snap.inodes.end()) {
        auto r = checker_->ns->GetAttr(cur).wait(ws);
        if (!r.ok()) {
          Violation(when + ": the parent chain of " + path + " reaches #" + std::to_string(cur) +
                    ": " + r.status().ToString());
          break;
        }
        it = snap.inodes.emplace(cur, *r).first;
      }
      if (it->second.parents.empty()) {
        Violation(when + ": the parent chain of " + path + " ends at #" + std::to_string(cur) +
                  ", which has no parent");
        break;
      }
      cur = it->second.parents.front().parent;
    }
  }
}

void NamespaceSim::CheckUnreached(kj::WaitScope& ws, const Snapshot& snap, Phase phase,
                                  const std::string& when) {
  Namespace& ns = *checker_->ns;
  for (uint64_t d : known_dirs_) {
    if (snap.paths.count(d)) continue;
    auto in = ns.GetAttr(d).wait(ws);
    if (!in.ok()) {
      Violation(when + ": directory " + DirName(d) + " (#" + std::to_string(d) +
                "), made by an acknowledged mkdir, has no inode: " + in.status().ToString());
      continue;
    }
    if (in->state == InodeState::kLive) {
      // Where its back-pointers lead.
      std::string chain;
      std::set<uint64_t> seen;
      for (uint64_t cur = d; cur != kRootIno && seen.insert(cur).second;) {
        auto c = ns.GetAttr(cur).wait(ws);
        if (!c.ok() || c->parents.empty()) break;
        cur = c->parents.front().parent;
        chain += " -> #" + std::to_string(cur);
      }
      Violation(when + ": directory " + DirName(d) + " (#" + std::to_string(d) +
                ") is live but not reachable from the root; its parents:" + chain);
    }
    auto listing = ReadDirAll(ws, d);
    if (listing && !listing->empty()) {
      std::string names;
      for (const auto& e : *listing) names += " " + e.name;
      Violation(when + ": removed directory " + DirName(d) + " (#" + std::to_string(d) +
                ") still holds entries:" + names);
    }
  }
  const bool exact = phase == Phase::kAfterRecovery || options_.expect_exact_counts;
  for (uint64_t f : known_files_) {
    if (snap.named.count(f)) continue;
    auto in = ns.GetAttr(f).wait(ws);
    if (!in.ok()) {
      Violation(when + ": file #" + std::to_string(f) +
                ", made by an acknowledged create, has "
                "no inode: " +
                in.status().ToString());
      continue;
    }
    if (exact && in->state == InodeState::kLive) {
      Violation(when + ": file #" + std::to_string(f) + " is live (nlink " +
                std::to_string(in->nlink) + ") but no entry names it");
    }
  }
}

Model NamespaceSim::AreaContent(const Snapshot& snap, uint64_t area_ino) {
  Model out;
  std::vector<std::pair<uint64_t, std::string>> queue = {{area_ino, ""}};
  std::set<uint64_t> seen = {area_ino};
  for (size_t i = 0; i < queue.size(); ++i) {
    auto listing = snap.listings.find(queue[i].first);
    if (listing == snap.listings.end()) continue;
    for (const auto& [name, e] : listing->second) {
      std::string path = Join(queue[i].second, name);
      out[path] = ModelEntry{e.type, e.ino};
      if (e.type == FileType::kDirectory && seen.insert(e.ino).second) {
        queue.emplace_back(e.ino, path);
      }
    }
  }
  return out;
}

void NamespaceSim::CheckAreas(const Snapshot& snap, const std::string& when) {
  for (const auto& slot : slots_) {
    for (const auto& area : slot.areas) {
      if (!snap.paths.count(area.ino)) {
        Violation(when + ": private directory /priv/" + area.name + " is not reachable");
        continue;
      }
      Model actual = AreaContent(snap, area.ino);
      if (!area.retired) {
        if (!Matches(area.model, actual)) {
          Violation(when + ": private directory /priv/" + area.name +
                    " differs from its client's acknowledged operations: expected " +
                    Describe(area.model) + ", found " + Describe(actual));
        }
      } else if (!Matches(area.before, actual) && !Matches(area.after, actual)) {
        Violation(when + ": private directory /priv/" + area.name + " after " + area.last_op +
                  " is neither as before it " + Describe(area.before) + " nor as after it " +
                  Describe(area.after) + ": found " + Describe(actual));
      }
    }
  }
}

void NamespaceSim::CompareSnapshots(const Snapshot& before, const Snapshot& after) {
  auto skip = [](const std::string& path) { return path.rfind("/lost+found", 0) == 0; };
  std::vector<std::string> diffs;
  for (const auto& [path, ino] : before.entries) {
    if (skip(path)) continue;
    auto it = after.entries.find(path);
    if (it == after.entries.end()) {
      diffs.push_back(path + " was #" + std::to_string(ino) + ", is gone");
    } else if (it->second != ino) {
      diffs.push_back(path + " was #" + std::to_string(ino) + ", is #" +
                      std::to_string(it->second));
    }
  }
  for (const auto& [path, ino] : after.entries) {
    if (!skip(path) && !before.entries.count(path)) {
      diffs.push_back(path + " (#" + std::to_string(ino) + ") appeared");
    }
  }
  if (diffs.empty()) return;
  std::string list;
  for (size_t i = 0; i < diffs.size() && i < 6; ++i) list += (i ? "; " : " ") + diffs[i];
  Violation("recovery changed what reads showed (" + std::to_string(diffs.size()) +
            " entries):" + list);
}

NamespaceSimResult NamespaceSim::Run() {
  result_.seed = options_.seed;
  result_.exact_counts = options_.expect_exact_counts;
  auto config = std::make_shared<ClusterConfig>();
  config->epoch = 1;
  config->replicas = options_.replicas;
  config->write_quorum = options_.write_quorum;
  config->read_quorum = options_.read_quorum;
  for (int i = 0; i < options_.nodes; ++i) {
    NodeInfo info;
    info.id = std::string(1, static_cast<char>('a' + i));
    info.host = "127.0.0.1";
    info.port = static_cast<uint16_t>(7101 + i);
    info.address = info.host + ":" + std::to_string(info.port);
    config->nodes.push_back(info);
    network_->AddNode(info.id);
  }
  config_ = config;
  for (int i = 0; i < options_.names; ++i)
    pool_.push_back(std::string(1, static_cast<char>('a' + i)));

  tasks_->add(fibers_.startFiber([this](kj::WaitScope& ws) { Conductor(ws); }));
  const kj::TimePoint limit = start_ + options_.max_sim_time_ms * kj::MILLISECONDS;
  while (!done_) {
    ws_.poll();
    if (done_) break;
    KJ_IF_MAYBE (next, timer_.nextEvent()) {
      if (*next > limit) {
        Error("run did not finish within " + std::to_string(options_.max_sim_time_ms) +
              " ms simulated");
        break;
      }
      timer_.advanceTo(*next);
    } else {
      Error("no event left but the run is not done");
      break;
    }
  }
  for (auto& slot : slots_) {
    if (slot.client) CountBatches(*slot.client);
  }
  auto& st = result_.stats;
  st.sim_time_us = (timer_.now() - start_) / kj::MICROSECONDS;
  const NetworkStats& net = network_->stats();
  st.messages = net.messages;
  st.dropped = net.dropped;
  st.duplicated = net.duplicated;
  st.node_crashes = net.crashes;
  return std::move(result_);
}

}  // namespace

NamespaceSimResult RunNamespaceSimulation(const NamespaceSimOptions& options) {
  NamespaceSim sim(options);
  return sim.Run();
}

}  // namespace quorumfs::sim
