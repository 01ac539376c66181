// GCC 12 at -O2 reports false -Wmaybe-uninitialized inside kj's promise nodes (an ExceptionOr
// holding a value with a union member); which instantiations it flags depends on inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "tests/sim/sim_network.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstdio>
#include <type_traits>
#include <utility>

#include "common/record_key.h"

namespace quorumfs::sim {

FaultOptions NoFaults() {
  FaultOptions f;
  f.drop_rate = 0;
  f.dup_rate = 0;
  f.crashes = false;
  f.wipe_rate = 0;
  f.max_wipes = 0;
  return f;
}

namespace {

// Printable bytes as they are, others as \xNN (namespace records are binary).
std::string Printable(const std::string& bytes) {
  std::string out;
  for (unsigned char ch : bytes) {
    if (ch >= 0x20 && ch < 0x7f) {
      out += static_cast<char>(ch);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", ch);
      out += buf;
    }
  }
  return out;
}

}  // namespace

std::string DescribeValue(const std::optional<std::string>& v) {
  if (!v) return "<none>";
  auto env = RecordEnvelope::Decode(*v);
  if (!env.ok()) return "'" + Printable(*v) + "'";
  std::string ids;
  for (uint64_t id : env->recent) ids += (ids.empty() ? "" : ",") + std::to_string(id & 0xffff);
  return "'" + Printable(env->payload) + "' v" + std::to_string(env->version) + " [" + ids + "]";
}

// ---- Disk ----------------------------------------------------------------------------------

Result<std::optional<AcceptorState>> SimStorage::LoadRecord(const std::string& key) {
  for (auto b = pending_.rbegin(); b != pending_.rend(); ++b) {
    for (auto r = b->write.rows.rbegin(); r != b->write.rows.rend(); ++r) {
      if (r->first == key) return r->second;
    }
  }
  auto it = rows_.find(key);
  if (it == rows_.end()) return std::optional<AcceptorState>();
  return std::optional<AcceptorState>(it->second);
}

Result<Ballot> SimStorage::LoadFloor(const std::string& range) {
  Ballot floor;
  auto it = floors_.find(range);
  if (it != floors_.end()) floor = it->second;
  for (const auto& b : pending_) {
    for (const auto& f : b.write.floors) {
      if (f.first == range) floor = MaxBallot(floor, f.second);
    }
  }
  return floor;
}

std::vector<std::string> SimStorage::Keys(const std::string& prefix, const std::string& after,
                                          size_t limit) const {
  // The durable rows and the volatile writes, each row the newest version of its key.
  std::map<std::string, bool> present;
  for (auto it = rows_.lower_bound(prefix); it != rows_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    present[it->first] = true;
  }
  for (const auto& b : pending_) {
    for (const auto& r : b.write.rows) {
      if (r.first.compare(0, prefix.size(), prefix) == 0) present[r.first] = r.second.has_value();
    }
  }
  std::vector<std::string> out;
  for (auto it = present.upper_bound(after); it != present.end() && out.size() < limit; ++it) {
    if (it->second) out.push_back(it->first);
  }
  return out;
}

uint64_t SimStorage::Append(AcceptorWrite write) {
  pending_.push_back(Batch{++next_seq_, std::move(write)});
  return next_seq_;
}

void SimStorage::SyncThrough(uint64_t seq) {
  while (!pending_.empty() && pending_.front().seq <= seq) {
    for (auto& r : pending_.front().write.rows) {
      if (r.second) {
        rows_[r.first] = std::move(*r.second);
      } else {
        rows_.erase(r.first);
      }
    }
    for (auto& f : pending_.front().write.floors) {
      floors_[f.first] = MaxBallot(floors_[f.first], f.second);
    }
    pending_.pop_front();
  }
  durable_seq_ = std::max(durable_seq_, seq);
}

uint64_t SimStorage::LastSeq() const {
  return pending_.empty() ? durable_seq_ : pending_.back().seq;
}

void SimStorage::Wipe() {
  pending_.clear();
  rows_.clear();
  floors_.clear();
}

// ---- Network ---------------------------------------------------------------------------------

namespace {

void SetVoting(PrepareReply& r, bool voting) { r.voting = voting; }
void SetVoting(AcceptReply& r, bool voting) { r.voting = voting; }
void SetVoting(ReadAcceptedReply& r, bool voting) { r.voting = voting; }
void SetVoting(ScanReply& r, bool voting) { r.voting = voting; }

std::string DescribeReply(const PrepareReply& r) {
  return std::string(r.promised ? "promised" : "refused") + " p=" + r.promised_ballot.ToString() +
         " a=" + r.accepted_ballot.ToString() + (r.promised ? " " + DescribeValue(r.value) : "") +
         (r.voting ? "" : " (not voting)");
}
std::string DescribeReply(const AcceptReply& r) {
  return std::string(r.accepted ? "accepted" : "refused") + " p=" + r.promised_ballot.ToString() +
         " a=" + r.accepted_ballot.ToString() + (r.voting ? "" : " (not voting)");
}
std::string DescribeReply(const ReadAcceptedReply& r) {
  return "p=" + r.promised_ballot.ToString() + " a=" + r.accepted_ballot.ToString() + " " +
         DescribeValue(r.value) + (r.voting ? "" : " (not voting)");
}
std::string DescribeReply(const ScanReply& r) {
  return std::to_string(r.keys.size()) + " key(s)" + (r.voting ? "" : " (not voting)");
}

}  // namespace

// One request: resolved by the first reply (or refusal) that arrives, never rejected.
template <typename Reply>
struct PendingCall {
  kj::Own<kj::PromiseFulfiller<void>> fulfiller;
  std::optional<Result<Reply>> result;
  void Resolve(Result<Reply> r) {
    if (result) return;
    result = std::move(r);
    fulfiller->fulfill();
  }
};

SimNetwork::SimNetwork(NetworkOptions options, std::mt19937_64& rng, kj::Timer& timer,
                       kj::TaskSet& tasks, kj::TimePoint start, std::vector<std::string>& errors)
    : options_(std::move(options)),
      rng_(rng),
      timer_(timer),
      tasks_(tasks),
      start_(start),
      errors_(errors) {}

SimNetwork::~SimNetwork() = default;

void SimNetwork::Shutdown() {
  for (auto& n : nodes_) n->held.clear();
  calls_.clear();
}

SimNode& SimNetwork::AddNode(const std::string& id) {
  auto node = std::make_unique<SimNode>();
  node->id = id;
  node->disk_free = timer_.now();
  nodes_.push_back(std::move(node));
  return *nodes_.back();
}

SimNode* SimNetwork::FindNode(const std::string& id) {
  for (auto& n : nodes_) {
    if (n->id == id) return n.get();
  }
  return nullptr;
}

void SimNetwork::Trace(const std::string& line) {
  if (!options_.trace) return;
  std::fprintf(stderr, "[%10.3f ms] %s\n", NowNs() / 1e6, line.c_str());
}

kj::Duration SimNetwork::NetDelay() {
  const FaultOptions& f = options_.faults;
  if (Chance(f.net_very_slow_rate)) return UniformUs(f.net_max_us, f.net_very_slow_max_us);
  if (Chance(f.net_slow_rate)) return UniformUs(f.net_max_us, f.net_slow_max_us);
  return UniformUs(f.net_min_us, f.net_max_us);
}

kj::Duration SimNetwork::DiskDelay() {
  const FaultOptions& f = options_.faults;
  if (Chance(f.disk_slow_rate)) return UniformUs(f.disk_max_us, f.disk_slow_max_us);
  return UniformUs(f.disk_min_us, f.disk_max_us);
}

void SimNetwork::After(kj::Duration delay, std::function<void()> fn) {
  tasks_.add(timer_.afterDelay(delay).then(kj::mv(fn)));
}

void SimNetwork::AtTime(kj::TimePoint t, std::function<void()> fn) {
  tasks_.add(timer_.atTime(t).then(kj::mv(fn)));
}

template <typename Reply>
kj::Promise<Result<Reply>> SimNetwork::Call(int from, const std::string& node_id, std::string what,
                                            Handler<Reply> handle) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto call = std::make_shared<PendingCall<Reply>>();
  call->fulfiller = kj::mv(paf.fulfiller);
  calls_.push_back(call);
  auto promise = paf.promise.then([call]() { return std::move(*call->result); });
  ++stats_.messages;
  SimNode* node = FindNode(node_id);
  if (node == nullptr) {
    errors_.push_back("request to unknown node " + node_id);
    call->Resolve(Status(StatusCode::kUnavailable, "unknown node " + node_id));
    return promise;
  }
  if (options_.trace) what = "client " + std::to_string(from) + " -> " + node_id + ": " + what;
  if (!node->up && Chance(options_.faults.fail_fast_rate)) {
    ++stats_.refused;
    Trace(what + ": refused (node down)");
    After(NetDelay(), [call, node_id]() {
      call->Resolve(Status(StatusCode::kUnavailable, node_id + ": connection refused"));
    });
    return promise;
  }
  int copies = 1;
  if (Chance(options_.faults.dup_rate)) {
    ++copies;
    ++stats_.duplicated;
  }
  auto shared_handle = std::make_shared<Handler<Reply>>(std::move(handle));
  for (int i = 0; i < copies; ++i) {
    if (Chance(options_.faults.drop_rate)) {
      ++stats_.dropped;
      Trace(what + ": request lost");
      continue;
    }
    After(NetDelay(), [this, node, call, shared_handle, what]() {
      Deliver<Reply>(node, call, *shared_handle, what);
    });
  }
  return promise;
}

template kj::Promise<Result<PrepareReply>> SimNetwork::Call(int, const std::string&, std::string,
                                                            Handler<PrepareReply>);
template kj::Promise<Result<AcceptReply>> SimNetwork::Call(int, const std::string&, std::string,
                                                           Handler<AcceptReply>);
template kj::Promise<Result<ReadAcceptedReply>> SimNetwork::Call(int, const std::string&,
                                                                 std::string,
                                                                 Handler<ReadAcceptedReply>);

kj::Promise<Result<ScanReply>> SimNetwork::Scan(int from, const std::string& node_id,
                                                std::string prefix, std::string after,
                                                uint32_t limit) {
  std::string what =
      options_.trace ? "scan '" + prefix + "' (" + std::to_string(after.size()) + "-byte cursor)"
                     : "";
  return Call<ScanReply>(
      from, node_id, std::move(what),
      [prefix, after, limit](SimStorage& s) -> Result<AcceptorResult<ScanReply>> {
        AcceptorResult<ScanReply> r;
        r.reply.keys = s.Keys(prefix, after, limit);
        return r;
      });
}

template <typename Reply>
void SimNetwork::Deliver(SimNode* node, std::shared_ptr<PendingCall<Reply>> call,
                         const Handler<Reply>& handle, const std::string& what) {
  if (!node->up) {
    Trace(what + ": lost (node down)");
    return;
  }
  auto r = handle(node->storage);
  if (!r.ok()) {
    errors_.push_back("acceptor " + node->id + " failed: " + r.status().ToString());
    return;
  }
  AcceptorResult<Reply> res = std::move(r).value();
  SetVoting(res.reply, node->voting);
  if (!res.write.empty()) {
    uint64_t seq = node->storage.Append(std::move(res.write));
    kj::TimePoint done = std::max(timer_.now() + DiskDelay(), node->disk_free);
    node->disk_free = done;
    uint64_t incarnation = node->incarnation;
    AtTime(done, [this, node, incarnation, seq]() {
      if (node->incarnation != incarnation) return;  // crashed before the sync finished
      node->storage.SyncThrough(seq);
      ReleaseHeld(node);
    });
  }
  if (options_.trace) Trace(what + ": " + DescribeReply(res.reply));
  // The reply may only leave once every write this node made before it is durable: its own,
  // and any it read (a reply reporting a write that a crash can still undo is a lie).
  uint64_t barrier = node->storage.LastSeq();
  if (options_.unsafe_read_unsynced && std::is_same_v<Reply, ReadAcceptedReply>) barrier = 0;
  if (options_.unsafe_reply_before_durable || barrier <= node->storage.DurableSeq()) {
    SendReply(call, res.reply);
  } else {
    Reply reply = res.reply;
    node->held.push_back(SimNode::Held{barrier, [this, call, reply]() { SendReply(call, reply); }});
  }
}

void SimNetwork::ReleaseHeld(SimNode* node) {
  while (!node->held.empty() && node->held.front().barrier <= node->storage.DurableSeq()) {
    auto send = std::move(node->held.front().send);
    node->held.pop_front();
    send();
  }
}

template <typename Reply>
void SimNetwork::SendReply(std::shared_ptr<PendingCall<Reply>> call, const Reply& reply) {
  int copies = 1;
  if (Chance(options_.faults.dup_rate)) {
    ++copies;
    ++stats_.duplicated;
  }
  for (int i = 0; i < copies; ++i) {
    if (Chance(options_.faults.drop_rate)) {
      ++stats_.dropped;
      continue;
    }
    After(NetDelay(), [call, reply]() { call->Resolve(reply); });
  }
}

// ---- Faults -----------------------------------------------------------------------------------

void SimNetwork::StartFaults(std::function<bool()> stop) {
  stop_faults_ = std::move(stop);
  ScheduleFault();
}

void SimNetwork::ScheduleFault() {
  std::exponential_distribution<double> gap(1.0 / options_.faults.crash_interval_mean_us);
  After(static_cast<int64_t>(gap(rng_) * 1000) * kj::NANOSECONDS, [this]() {
    if (stop_faults_()) return;
    InjectFault();
    ScheduleFault();
  });
}

void SimNetwork::InjectFault() {
  std::vector<SimNode*> up;
  int unavailable = 0;
  for (auto& n : nodes_) {
    if (n->up) up.push_back(n.get());
    if (!n->up || !n->voting) ++unavailable;
  }
  if (up.empty()) return;
  int budget = options_.replicas - options_.write_quorum;
  if (unavailable >= budget && !Chance(options_.faults.over_budget_rate)) return;
  SimNode* victim = up[Uniform(0, static_cast<int64_t>(up.size()) - 1)];
  bool wipe = wipes_ < options_.faults.max_wipes && Chance(options_.faults.wipe_rate);
  Crash(*victim, wipe);
}

void SimNetwork::Crash(SimNode& n, bool wipe) {
  SimNode* node = &n;
  node->up = false;
  ++node->incarnation;
  node->held.clear();
  if (wipe) {
    node->storage.Wipe();
    ++wipes_;
    ++stats_.wipes;
  } else {
    node->storage.DropVolatile();
  }
  ++stats_.crashes;
  Trace("node " + node->id + (wipe ? " crashed and lost its disk" : " crashed"));
  uint64_t incarnation = node->incarnation;
  After(
      UniformUs(options_.faults.downtime_min_us, options_.faults.downtime_max_us),
      [this, node, incarnation, wipe]() {
        if (node->incarnation != incarnation) return;
        node->up = true;
        node->disk_free = timer_.now();
        // A node that lost its disk restarts with --rejoin and does not vote (it is never
        // refilled in the simulation). The negative control lets it vote at once.
        if (wipe) node->voting = options_.unsafe_wiped_node_votes;
        Trace("node " + node->id + " restarted" + (node->voting ? "" : " (rejoining, not voting)"));
      });
}

void SimNetwork::RestartAll() {
  for (auto& n : nodes_) {
    if (n->up) continue;
    ++n->incarnation;  // the restart already scheduled finds a newer incarnation and does nothing
    n->up = true;
    n->disk_free = timer_.now();
    Trace("node " + n->id + " restarted (faults stopped)");
  }
}

bool SimNetwork::AllDurable() const {
  for (const auto& n : nodes_) {
    if (n->storage.LastSeq() != n->storage.DurableSeq()) return false;
  }
  return true;
}

// ---- Transport --------------------------------------------------------------------------------

kj::Promise<Result<PrepareReply>> SimTransport::Prepare(const std::string& node,
                                                        const std::string& key, Ballot ballot) {
  std::string what =
      network_.tracing() ? "prepare " + DescribeKey(key) + " " + ballot.ToString() : "";
  return network_.Call<PrepareReply>(
      client_, node, std::move(what),
      [key, ballot](AcceptorStorage& s) { return AcceptorCore::Prepare(s, key, ballot); });
}

kj::Promise<Result<AcceptReply>> SimTransport::Accept(const std::string& node,
                                                      const std::string& key, Ballot ballot,
                                                      const std::string& value) {
  std::string what = network_.tracing() ? "accept " + DescribeKey(key) + " " + ballot.ToString() +
                                              " " + DescribeValue(value)
                                        : "";
  return network_.Call<AcceptReply>(client_, node, std::move(what),
                                    [key, ballot, value](AcceptorStorage& s) {
                                      return AcceptorCore::Accept(s, key, ballot, value);
                                    });
}

kj::Promise<Result<ReadAcceptedReply>> SimTransport::ReadAccepted(const std::string& node,
                                                                  const std::string& key) {
  std::string what = network_.tracing() ? "readAccepted " + DescribeKey(key) : "";
  return network_.Call<ReadAcceptedReply>(
      client_, node, std::move(what),
      [key](AcceptorStorage& s) -> Result<AcceptorResult<ReadAcceptedReply>> {
        auto r = AcceptorCore::ReadAccepted(s, key);
        if (!r.ok()) return r.status();
        return AcceptorResult<ReadAcceptedReply>{std::move(r).value(), {}};
      });
}

}  // namespace quorumfs::sim
