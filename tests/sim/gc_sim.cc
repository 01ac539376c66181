// GCC 12 at -O2 reports false -Wmaybe-uninitialized inside kj's promise nodes (an ExceptionOr
// holding a value with a union member); which instantiations it flags depends on inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "tests/sim/gc_sim.h"

#include <kj/async.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "common/acceptor.h"
#include "common/ballot.h"
#include "common/cluster_config.h"
#include "common/gc_rules.h"
#include "common/proposer.h"
#include "common/quorum.h"
#include "common/record.h"
#include "common/record_key.h"
#include "common/status.h"

namespace quorumfs::sim {

void GcSimStats::Add(const GcSimStats& o) {
  writes += o.writes;
  writes_ok += o.writes_ok;
  writes_failed += o.writes_failed;
  writes_unknown += o.writes_unknown;
  abandoned += o.abandoned;
  recreates += o.recreates;
  refreshes += o.refreshes;
  unlinks += o.unlinks;
  unlinks_ok += o.unlinks_ok;
  reads += o.reads;
  reads_ok += o.reads_ok;
  missing_at_read += o.missing_at_read;
  gc_rounds += o.gc_rounds;
  gc_completed += o.gc_completed;
  gc_skipped += o.gc_skipped;
  chunks_swept += o.chunks_swept;
  chunks_deleted += o.chunks_deleted;
  chunks_kept_young += o.chunks_kept_young;
  records_deleted += o.records_deleted;
  removals_complete += o.removals_complete;
  messages += o.messages;
  dropped += o.dropped;
  duplicated += o.duplicated;
  crashes += o.crashes;
  sim_time_us += o.sim_time_us;
  keys_checked += o.keys_checked;
  checker_gave_up += o.checker_gave_up;
}

std::string GcSimStats::ToString() const {
  std::ostringstream out;
  out << "files written " << writes << " (published ok " << writes_ok << ", failed "
      << writes_failed << ", unknown " << writes_unknown << ", abandoned " << abandoned
      << ", re-creates " << recreates << ", refresh rounds " << refreshes << "), unlinks "
      << unlinks << " (ok " << unlinks_ok << "), reads " << reads << " (ok " << reads_ok
      << ", saw a chunk stored nowhere " << missing_at_read << "); gc rounds " << gc_rounds
      << " (completed " << gc_completed << ", skipped " << gc_skipped << "), chunks swept "
      << chunks_swept << " (deleted " << chunks_deleted << ", kept as too young "
      << chunks_kept_young << "), record rows deleted " << records_deleted
      << ", keys removed everywhere " << removals_complete << "; messages " << messages
      << " (dropped " << dropped << ", duplicated " << duplicated << "), crashes " << crashes
      << ", simulated " << sim_time_us / 1000 << " ms, keys checked " << keys_checked
      << " (checker gave up on " << checker_gave_up << ")";
  return out.str();
}

const char* GcViolationName(GcViolation v) {
  switch (v) {
    case GcViolation::kChunkDeleted:
      return "referenced chunk deleted";
    case GcViolation::kKeyCameBack:
      return "removed key came back";
    case GcViolation::kTombstoneResurrected:
      return "removed tombstone came back";
    case GcViolation::kAcknowledgedLost:
      return "acknowledged write lost";
    case GcViolation::kNotLinearizable:
      return "not linearizable";
  }
  return "?";
}

bool GcSimResult::Has(GcViolation v) const {
  for (const auto& [kind, text] : violations) {
    if (kind == v) return true;
  }
  return false;
}

std::string GcSimResult::Report() const {
  std::ostringstream out;
  out << "seed " << seed << ": " << violations.size() << " violation(s), " << errors.size()
      << " error(s)\n";
  for (const auto& e : errors) out << "error: " << e << "\n";
  for (const auto& [kind, text] : violations) {
    out << "violation (" << GcViolationName(kind) << "): " << text << "\n";
  }
  for (const auto& key : violating_keys) {
    auto it = histories.find(key);
    if (it == histories.end()) continue;
    out << "history of " << key << " (" << it->second.size()
        << " ops; layouts as 'L|id|chunks', tombstones and absent both <absent>):\n"
        << FormatHistory(it->second);
  }
  out << "stats: " << stats.ToString() << "\n";
  return out.str();
}

namespace {

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kInfinity = std::numeric_limits<int64_t>::max();
constexpr int64_t kPutTimeoutMs = 40;     // a writer's put round
constexpr int64_t kGcTimeoutMs = 30;      // one GC request
constexpr int kGcAttempts = 5;            // ... tried this often before the round is skipped
constexpr int64_t kSweepTimeoutMs = 100;  // the sweep's deleteChunk / deleteRecord calls
constexpr int64_t kSettleMs = 1000;       // after the workload, before the final reads

// ---- Record payloads (this simulator's own format, inside the proposer's envelope) ---------
//   layout:    "L|<id>|<chunk>,<chunk>,..."
//   tombstone: "T|<id>|<unlink time ns>"
// Ids are unique per run, so every value the register takes is distinct.

struct Payload {
  bool layout = false;
  std::string id;
  std::vector<std::string> chunks;
  int64_t unlink_ns = 0;
};

std::string EncodeLayout(const std::string& id, const std::vector<std::string>& chunks) {
  std::string out = "L|" + id + "|";
  for (size_t i = 0; i < chunks.size(); ++i) out += (i ? "," : "") + chunks[i];
  return out;
}

std::string EncodeTombstone(const std::string& id, int64_t unlink_ns) {
  return "T|" + id + "|" + std::to_string(unlink_ns);
}

std::optional<Payload> ParsePayload(std::string_view s) {
  if (s.size() < 4 || s[1] != '|' || (s[0] != 'L' && s[0] != 'T')) return std::nullopt;
  size_t bar = s.find('|', 2);
  if (bar == std::string_view::npos) return std::nullopt;
  Payload p;
  p.layout = s[0] == 'L';
  p.id = std::string(s.substr(2, bar - 2));
  std::string_view rest = s.substr(bar + 1);
  if (p.layout) {
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      p.chunks.emplace_back(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  } else {
    p.unlink_ns = std::strtoll(std::string(rest).c_str(), nullptr, 10);
  }
  return p;
}

bool IsLayout(const std::optional<std::string>& v) { return v && !v->empty() && (*v)[0] == 'L'; }

// The register value the linearizability checker sees: a layout as itself; a tombstone and an
// absent key alike as absent (to the file system both mean "no such file", and GC turning one
// into the other changes nothing).
std::optional<std::string> Canonical(const std::optional<std::string>& payload) {
  if (IsLayout(payload)) return payload;
  return std::nullopt;
}

std::string Quote(const std::optional<std::string>& v) { return v ? "'" + *v + "'" : "<absent>"; }

// 16 hex digits of a hash of a value ("-" for absent), to make payloads unique per input.
std::string HashOf(const std::optional<std::string>& v) {
  if (!v) return "-";
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char ch : *v) h = (h ^ ch) * 1099511628211ULL;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---- The scanRecords reply: every row of a node, in one value ------------------------------

struct ScannedRow {
  Ballot promised;
  Ballot accepted;
  std::optional<std::string> value;
};

void PutBytes(std::string& out, std::string_view s) {
  out += EncodeU64(s.size());
  out.append(s.data(), s.size());
}

void PutBallot(std::string& out, const Ballot& b) {
  out += EncodeU64(b.counter);
  out += EncodeU64(b.proposer);
}

class Cursor {
 public:
  explicit Cursor(std::string_view in) : in_(in) {}
  bool done() const { return in_.empty(); }
  bool U64(uint64_t* v) {
    if (in_.size() < 8) return false;
    *v = DecodeU64(in_);
    in_.remove_prefix(8);
    return true;
  }
  bool Bytes(std::string* s) {
    uint64_t n;
    if (!U64(&n) || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetBallot(Ballot* b) { return U64(&b->counter) && U64(&b->proposer); }

 private:
  std::string_view in_;
};

std::optional<std::map<std::string, ScannedRow>> DecodeRows(const std::string& bytes) {
  std::map<std::string, ScannedRow> rows;
  Cursor c(bytes);
  while (!c.done()) {
    std::string key, flag;
    ScannedRow row;
    if (!c.Bytes(&key) || !c.GetBallot(&row.promised) || !c.GetBallot(&row.accepted) ||
        !c.Bytes(&flag)) {
      return std::nullopt;
    }
    if (flag == "v") {
      std::string value;
      if (!c.Bytes(&value)) return std::nullopt;
      row.value = std::move(value);
    }
    rows[key] = std::move(row);
  }
  return rows;
}

// The payload inside a stored envelope, nullopt if there is none.
std::optional<std::string> PayloadOf(const std::optional<std::string>& envelope) {
  if (!envelope) return std::nullopt;
  auto env = RecordEnvelope::Decode(*envelope);
  if (!env.ok() || env->version == 0) return std::nullopt;
  return env->payload;
}

// ---- Bookkeeping -----------------------------------------------------------------------------

// The exact payload a definite operation returned (or wrote, for an acknowledged write).
struct Observation {
  int client = 0;
  std::string what;
  std::optional<std::string> payload;
  int64_t invoke = 0, ret = 0;
};

// A write or unlink that may have taken effect.
struct Mutation {
  int64_t invoke = 0;
  int64_t ret = kInfinity;  // kInfinity unless acknowledged
  bool ok = false;
  std::optional<std::string> canonical;
  std::string what;
};

// GC deleted the key's tombstone on every replica.
struct Removal {
  std::string tombstone;
  int64_t mark_ns = 0;
  int64_t done_ns = 0;
};

struct KeyState {
  std::string key;
  std::string name;                // printable
  std::vector<Operation> history;  // canonical values, for the register checker
  std::vector<Observation> observed;
  std::vector<Mutation> mutations;
  std::vector<Removal> removals;
};

struct ChunkNode {
  std::map<std::string, int64_t> last_put;  // chunk id -> last put, on this node's clock
  int64_t clock_offset_ns = 0;
};

// Where a chunk is stored: while `copies` is 0 it is stored nowhere; `absent` lists the spans
// [from, to) in which it was (to = kInfinity while still absent).
struct ChunkTrack {
  int copies = 0;
  std::vector<std::pair<int64_t, int64_t>> absent;
};

struct Client {
  int index = 0;
  bool writer = false;
  std::unique_ptr<SimTransport> transport;
  std::unique_ptr<Proposer> proposer;
  uint64_t next_id = 0;
  bool done = false;
};

// A file being written: its chunks and when each was last put (sent) at W nodes.
struct FileWrite {
  std::string id;
  std::vector<std::string> chunks;
  std::map<std::string, int64_t> put_ns;
};

struct GcRound {
  int64_t mark_ns = 0;
  std::vector<std::map<std::string, ScannedRow>> rows;  // by node index
  std::vector<std::vector<std::string>> chunks;         // by node index
};

// ---- The simulation -------------------------------------------------------------------------

class GcSim final : public kj::TaskSet::ErrorHandler {
 public:
  explicit GcSim(const GcSimOptions& options)
      : options_(options),
        rng_(options.seed),
        timer_(kj::origin<kj::TimePoint>() + 1 * kj::SECONDS),
        ws_(loop_),
        tasks_(kj::heap<kj::TaskSet>(*this)) {
    start_ = timer_.now();
    NetworkOptions n;
    n.faults = options.faults;
    n.faults.wipe_rate = 0;  // GC runs only on a cluster whose every node answers and votes
    n.faults.max_wipes = 0;
    n.replicas = options.replicas;
    n.write_quorum = options.write_quorum;
    n.trace = options.trace;
    network_ = std::make_unique<SimNetwork>(n, rng_, timer_, *tasks_, start_, result_.errors);
    grace_ns_ = options.chunk_grace_ms * kNsPerMs;
    workload_end_ns_ = options.workload_ms * kNsPerMs;
  }

  ~GcSim() {
    tasks_ = nullptr;
    network_->Shutdown();
    ws_.poll();
  }

  void taskFailed(kj::Exception&& e) override {
    result_.errors.push_back(std::string("exception: ") + kj::str(e).cStr());
  }

  GcSimResult Run();

 private:
  // -- randomness, time, tracing
  bool Chance(double p) { return network_->Chance(p); }
  int64_t Uniform(int64_t lo, int64_t hi) { return network_->Uniform(lo, hi); }
  kj::Duration UniformUs(int64_t lo_us, int64_t hi_us) { return network_->UniformUs(lo_us, hi_us); }
  int64_t NowNs() const { return (timer_.now() - start_) / kj::NANOSECONDS; }
  int64_t NodeNowNs(size_t node) const { return NowNs() + chunk_nodes_[node].clock_offset_ns; }
  void Trace(const std::string& line) { network_->Trace(line); }
  size_t N() const { return node_ids_.size(); }

  void Setup();
  void CheckTimingAssumption();
  bool WorkloadOver() const { return NowNs() >= workload_end_ns_; }
  bool Finished() const;
  // Runs the event loop until `done` or the simulated time limit; false if stuck.
  bool RunUntil(const std::function<bool()>& done);

  // -- chunk stores (every change goes through these two, which keep ChunkTrack)
  void StoreChunk(size_t node, const std::string& id);
  void EraseChunk(size_t node, const std::string& id);
  bool StoredSomewhere(const std::string& id) const;

  // -- requests to one node, over the simulated network
  kj::Promise<Result<AcceptReply>> PutChunk(int from, size_t node, const std::string& id);
  kj::Promise<Result<AcceptReply>> DeleteChunk(int from, size_t node, const std::string& id,
                                               int64_t mark_ns);
  kj::Promise<Result<ReadAcceptedReply>> ListChunks(int from, size_t node);
  kj::Promise<Result<ReadAcceptedReply>> ScanRows(int from, size_t node);
  kj::Promise<Result<AcceptReply>> DeleteRecord(int from, size_t node, const std::string& key,
                                                Ballot ballot, Ballot promised, Ballot fence);
  // One request with a timeout, retried; nullopt when no attempt got an OK reply.
  template <typename Reply>
  kj::Promise<std::optional<Reply>> CallRetrying(std::function<kj::Promise<Result<Reply>>()> send,
                                                 int attempts);

  // -- writers and readers
  kj::Promise<void> WriterLoop(Client& c);
  kj::Promise<void> ReaderLoop(Client& c);
  kj::Promise<void> WriteFile(Client& c, KeyState& k);
  kj::Promise<bool> PutRound(Client& c, std::shared_ptr<FileWrite> w, std::vector<std::string> ids,
                             int attempts);
  kj::Promise<void> RefreshAndPublish(Client& c, KeyState& k, std::shared_ptr<FileWrite> w,
                                      int round);
  kj::Promise<void> Publish(Client& c, KeyState& k, std::shared_ptr<FileWrite> w);
  kj::Promise<void> Unlink(Client& c, KeyState& k);
  kj::Promise<void> ReadKey(Client& c, KeyState& k, bool final_read, int attempt);
  kj::Duration PublishWait();
  OpOutcome Classify(const Status& s, const std::string& what);
  void Record(Client& c, KeyState& k, Operation op);
  void Observe(Client& c, KeyState& k, const std::string& what,
               const std::optional<std::string>& payload, int64_t invoke);

  // -- the GC client
  kj::Promise<void> GcLoop();
  kj::Promise<void> GcRun();
  kj::Promise<bool> GcScan(std::shared_ptr<GcRound> round, size_t node);
  kj::Promise<bool> GcList(std::shared_ptr<GcRound> round, size_t node);
  kj::Promise<void> GcSweep(std::shared_ptr<GcRound> round);
  kj::Promise<void> GcRemoveRecords(std::shared_ptr<GcRound> round,
                                    std::shared_ptr<std::vector<std::string>> keys, size_t i);

  // -- checks after the run
  void CheckChunks(KeyState& k);
  void CheckRemovals(KeyState& k);
  void CheckLastAcknowledged(KeyState& k);
  void CheckRegister(KeyState& k);
  void Violation(GcViolation kind, KeyState& k, const std::string& text);

  GcSimOptions options_;
  std::mt19937_64 rng_;
  kj::TimerImpl timer_;  // declared before the loop: destroyed after every timer promise
  kj::EventLoop loop_;
  kj::WaitScope ws_;
  kj::Own<kj::TaskSet> tasks_;
  kj::TimePoint start_ = kj::origin<kj::TimePoint>();
  std::unique_ptr<SimNetwork> network_;
  GcSimResult result_;

  int64_t grace_ns_ = 0;
  int64_t workload_end_ns_ = 0;
  std::shared_ptr<const ClusterConfig> config_;
  std::vector<std::string> node_ids_;
  std::vector<ChunkNode> chunk_nodes_;
  std::map<std::string, ChunkTrack> chunks_;
  std::vector<KeyState> keys_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::unique_ptr<Client> final_reader_;
  int gc_client_ = 0;  // the client number the GC's requests come from
  bool gc_done_ = false;
  bool finished_ = false;
};

// ---- Setup -----------------------------------------------------------------------------------

void GcSim::Setup() {
  auto config = std::make_shared<ClusterConfig>();
  config->epoch = 1;
  config->replicas = options_.replicas;
  config->write_quorum = options_.write_quorum;
  config->read_quorum = options_.read_quorum;
  for (int i = 0; i < options_.replicas; ++i) {
    NodeInfo info;
    info.id = std::string(1, static_cast<char>('a' + i));
    info.host = "127.0.0.1";
    info.port = static_cast<uint16_t>(7101 + i);
    info.address = info.host + ":" + std::to_string(info.port);
    config->nodes.push_back(info);
    node_ids_.push_back(info.id);
    network_->AddNode(info.id);
    ChunkNode cn;
    cn.clock_offset_ns = Uniform(-options_.max_clock_skew_us, options_.max_clock_skew_us) * 1000;
    chunk_nodes_.push_back(std::move(cn));
  }
  config_ = config;

  for (int i = 0; i < options_.keys; ++i) {
    KeyState k;
    k.key = InodeKey(1 + i);
    k.name = DescribeKey(k.key);
    keys_.push_back(std::move(k));
  }

  std::vector<uint64_t> used_ids;
  auto make_client = [&](int index, bool writer) {
    auto c = std::make_unique<Client>();
    c->index = index;
    c->writer = writer;
    c->transport = std::make_unique<SimTransport>(*network_, index);
    ProposerOptions po;
    do {
      po.proposer_id = rng_() | 1;
    } while (std::find(used_ids.begin(), used_ids.end(), po.proposer_id) != used_ids.end());
    used_ids.push_back(po.proposer_id);
    po.rng_seed = rng_() | 1;
    po.round_timeout = options_.round_timeout_ms * kj::MILLISECONDS;
    po.op_timeout = options_.op_timeout_ms * kj::MILLISECONDS;
    c->proposer = std::make_unique<Proposer>(*c->transport, timer_, po);
    c->proposer->SetConfig(config_);
    return c;
  };
  int index = 0;
  for (int i = 0; i < options_.writers; ++i) clients_.push_back(make_client(index++, true));
  for (int i = 0; i < options_.readers; ++i) clients_.push_back(make_client(index++, false));
  gc_client_ = index++;
  final_reader_ = make_client(index++, false);
}

// The argument of common/gc_rules.h needs every accept of a publish to land within G/2 of the
// writer's refresh check, less the clock skew. An accept is sent at the latest one prepare
// round after the proposer's operation deadline and takes at most the longest network delay.
void GcSim::CheckTimingAssumption() {
  const FaultOptions& f = options_.faults;
  int64_t longest_net_us = std::max({f.net_max_us, f.net_slow_max_us, f.net_very_slow_max_us});
  int64_t publish_bound_ns =
      (options_.op_timeout_ms + options_.round_timeout_ms) * kNsPerMs + longest_net_us * 1000;
  // A node's last-put time is at least the writer's send time minus the node's clock offset.
  int64_t skew_ns = options_.max_clock_skew_us * 1000;
  if (publish_bound_ns + skew_ns >= grace_ns_ / 2) {
    result_.errors.push_back("options break the GC timing assumption: a publish may land " +
                             std::to_string(publish_bound_ns / 1000) + " us after the refresh " +
                             "check (+" + std::to_string(skew_ns / 1000) +
                             " us skew), not below half the grace (" +
                             std::to_string(grace_ns_ / 2000) + " us)");
  }
}

bool GcSim::Finished() const {
  if (!gc_done_) return false;
  for (const auto& c : clients_) {
    if (!c->done) return false;
  }
  return true;
}

bool GcSim::RunUntil(const std::function<bool()>& done) {
  const kj::TimePoint limit = start_ + options_.max_sim_time_ms * kj::MILLISECONDS;
  while (true) {
    ws_.poll();
    if (done()) return true;
    KJ_IF_MAYBE (next, timer_.nextEvent()) {
      if (*next > limit) {
        result_.errors.push_back("run did not finish within " +
                                 std::to_string(options_.max_sim_time_ms) + " ms simulated");
        return false;
      }
      timer_.advanceTo(*next);
    } else {
      result_.errors.push_back("no event left but the run is not done");
      return false;
    }
  }
}

// ---- Chunk stores ------------------------------------------------------------------------------

void GcSim::StoreChunk(size_t node, const std::string& id) {
  auto& last_put = chunk_nodes_[node].last_put;
  bool fresh = last_put.count(id) == 0;
  last_put[id] = NodeNowNs(node);  // a put of a stored chunk refreshes its last-put time
  if (!fresh) return;
  ChunkTrack& t = chunks_[id];
  if (t.copies++ == 0 && !t.absent.empty() && t.absent.back().second == kInfinity) {
    t.absent.back().second = NowNs();
    Trace("chunk " + id + " is stored again (a late put)");
  }
}

void GcSim::EraseChunk(size_t node, const std::string& id) {
  if (chunk_nodes_[node].last_put.erase(id) == 0) return;
  ChunkTrack& t = chunks_[id];
  if (--t.copies == 0) {
    t.absent.emplace_back(NowNs(), kInfinity);
    Trace("chunk " + id + " is now stored nowhere");
  }
}

bool GcSim::StoredSomewhere(const std::string& id) const {
  auto it = chunks_.find(id);
  return it != chunks_.end() && it->second.copies > 0;
}

// ---- Requests ----------------------------------------------------------------------------------
//
// The chunk-store and GC requests travel through SimNetwork::Call like the acceptor's, so they
// meet the same delays, losses, duplicates and crashes; their replies reuse the acceptor reply
// types the network already carries (AcceptReply.accepted = "done", ReadAcceptedReply.value =
// the listing).

kj::Promise<Result<AcceptReply>> GcSim::PutChunk(int from, size_t node, const std::string& id) {
  return network_->Call<AcceptReply>(
      from, node_ids_[node], network_->tracing() ? "putChunk " + id : "",
      [this, node, id](SimStorage&) -> Result<AcceptorResult<AcceptReply>> {
        StoreChunk(node, id);
        AcceptorResult<AcceptReply> r;
        r.reply.accepted = true;
        return r;
      });
}

kj::Promise<Result<AcceptReply>> GcSim::DeleteChunk(int from, size_t node, const std::string& id,
                                                    int64_t mark_ns) {
  std::string what = network_->tracing()
                         ? "deleteChunk " + id + " mark " + std::to_string(mark_ns / 1000) + " us"
                         : "";
  return network_->Call<AcceptReply>(
      from, node_ids_[node], std::move(what),
      [this, node, id, mark_ns](SimStorage&) -> Result<AcceptorResult<AcceptReply>> {
        AcceptorResult<AcceptReply> r;
        auto& last_put = chunk_nodes_[node].last_put;
        auto it = last_put.find(id);
        if (it == last_put.end()) return r;
        // The chunkserver's rule (chunkserver/service.cc deleteChunk, ChunkStore::DeleteIfOlder).
        if (ChunkMayBeDeleted(it->second, mark_ns, grace_ns_)) {
          EraseChunk(node, id);
          ++result_.stats.chunks_deleted;
          r.reply.accepted = true;
        } else {
          ++result_.stats.chunks_kept_young;
        }
        return r;
      });
}

kj::Promise<Result<ReadAcceptedReply>> GcSim::ListChunks(int from, size_t node) {
  return network_->Call<ReadAcceptedReply>(
      from, node_ids_[node], network_->tracing() ? "listChunks" : "",
      [this, node](SimStorage&) -> Result<AcceptorResult<ReadAcceptedReply>> {
        std::string out;
        for (const auto& [id, last_put] : chunk_nodes_[node].last_put) out += id + "\n";
        AcceptorResult<ReadAcceptedReply> r;
        r.reply.value = std::move(out);
        return r;
      });
}

kj::Promise<Result<ReadAcceptedReply>> GcSim::ScanRows(int from, size_t node) {
  // Like the chunkserver's scanRecords: every row, with its promised and accepted ballots and
  // its accepted value (chosen or not).
  return network_->Call<ReadAcceptedReply>(
      from, node_ids_[node], network_->tracing() ? "scanRecords" : "",
      [](SimStorage& s) -> Result<AcceptorResult<ReadAcceptedReply>> {
        std::string out;
        for (const auto& key : s.Keys("", "", std::numeric_limits<size_t>::max())) {
          QFS_ASSIGN_OR_RETURN(std::optional<AcceptorState> row, s.LoadRecord(key));
          if (!row) continue;
          PutBytes(out, key);
          PutBallot(out, row->promised);
          PutBallot(out, row->accepted);
          PutBytes(out, row->value ? "v" : "-");
          if (row->value) PutBytes(out, *row->value);
        }
        AcceptorResult<ReadAcceptedReply> r;
        r.reply.value = std::move(out);
        return r;
      });
}

kj::Promise<Result<AcceptReply>> GcSim::DeleteRecord(int from, size_t node, const std::string& key,
                                                     Ballot ballot, Ballot promised, Ballot fence) {
  std::string what =
      network_->tracing() ? "deleteRecord " + DescribeKey(key) + " " + ballot.ToString() : "";
  const bool unconditional = options_.unsafe_unconditional_record_delete;
  const bool unfenced = options_.unsafe_unfenced_record_delete;
  return network_->Call<AcceptReply>(
      from, node_ids_[node], std::move(what),
      [this, key, ballot, promised, fence, unconditional,
       unfenced](SimStorage& s) -> Result<AcceptorResult<AcceptReply>> {
        AcceptorResult<AcceptReply> r;
        if (unfenced && !unconditional) {
          // Negative control: the first rule (conditional on the accepted ballot only, the
          // floor raised to this row's own ballots).
          QFS_ASSIGN_OR_RETURN(std::optional<AcceptorState> row, s.LoadRecord(key));
          if (!row) return r;
          QFS_ASSIGN_OR_RETURN(auto d,
                               AcceptorCore::DeleteRecord(s, key, ballot, row->promised, Ballot{}));
          r.reply.accepted = d.reply.deleted;
          r.reply.promised_ballot = d.reply.accepted_ballot;
          r.write = std::move(d.write);
        } else if (unconditional) {
          // Negative control: delete whatever the row holds, raising the floor as usual.
          QFS_ASSIGN_OR_RETURN(std::optional<AcceptorState> row, s.LoadRecord(key));
          QFS_ASSIGN_OR_RETURN(Ballot floor, s.LoadFloor(FloorRangeOf(key)));
          if (!row) return r;
          r.write.rows.emplace_back(key, std::nullopt);
          r.write.floors.emplace_back(FloorRangeOf(key),
                                      MaxBallot(floor, MaxBallot(row->promised, row->accepted)));
          r.reply.accepted = true;
          r.reply.promised_ballot = row->accepted;
        } else {
          QFS_ASSIGN_OR_RETURN(auto d, AcceptorCore::DeleteRecord(s, key, ballot, promised, fence));
          r.reply.accepted = d.reply.deleted;
          r.reply.promised_ballot = d.reply.accepted_ballot;
          r.write = std::move(d.write);
        }
        if (r.reply.accepted) ++result_.stats.records_deleted;
        return r;
      });
}

template <typename Reply>
kj::Promise<std::optional<Reply>> GcSim::CallRetrying(
    std::function<kj::Promise<Result<Reply>>()> send, int attempts) {
  return Gather<Reply>(
             timer_, kGcTimeoutMs * kj::MILLISECONDS, 1, [send](size_t) { return send(); },
             [](const std::vector<std::optional<Result<Reply>>>& r) { return r[0].has_value(); })
      .then([this, send, attempts](Gathered<Reply>&& g) -> kj::Promise<std::optional<Reply>> {
        if (g.replies[0] && g.replies[0]->ok()) {
          return std::optional<Reply>(std::move(*g.replies[0]).value());
        }
        if (attempts <= 1) return std::optional<Reply>();
        return timer_.afterDelay(5 * kj::MILLISECONDS).then([this, send, attempts]() {
          return CallRetrying<Reply>(send, attempts - 1);
        });
      });
}

// ---- Writers and readers -----------------------------------------------------------------------

OpOutcome GcSim::Classify(const Status& s, const std::string& what) {
  switch (s.code()) {
    case StatusCode::kNoQuorum:
    case StatusCode::kTimedOut:
      return OpOutcome::kFailed;
    case StatusCode::kUnknownOutcome:
      return OpOutcome::kUnknown;
    default:
      result_.errors.push_back(what + ": unexpected status " + s.ToString());
      return OpOutcome::kUnknown;
  }
}

void GcSim::Record(Client& c, KeyState& k, Operation op) {
  op.return_time = NowNs();
  Trace("client " + std::to_string(c.index) + " " + k.name + ": " + DescribeOperation(op));
  k.history.push_back(std::move(op));
}

void GcSim::Observe(Client& c, KeyState& k, const std::string& what,
                    const std::optional<std::string>& payload, int64_t invoke) {
  k.observed.push_back(Observation{c.index, what, payload, invoke, NowNs()});
}

kj::Duration GcSim::PublishWait() {
  const int64_t grace_us = options_.chunk_grace_ms * 1000;
  double roll = std::uniform_real_distribution<double>(0, 1)(rng_);
  if (roll < options_.long_wait_rate) return UniformUs(grace_us / 2, grace_us * 3 / 2);
  if (roll < options_.long_wait_rate + options_.medium_wait_rate) return UniformUs(0, grace_us / 2);
  return UniformUs(0, 5000);
}

kj::Promise<void> GcSim::WriterLoop(Client& c) {
  return timer_.afterDelay(UniformUs(0, options_.writer_think_max_ms * 1000))
      .then([this, &c]() -> kj::Promise<void> {
        if (WorkloadOver()) {
          c.done = true;
          Trace("client " + std::to_string(c.index) + " done");
          return kj::READY_NOW;
        }
        KeyState& k = keys_[Uniform(0, static_cast<int64_t>(keys_.size()) - 1)];
        kj::Promise<void> op = Chance(options_.unlink_rate) ? Unlink(c, k) : WriteFile(c, k);
        return op.then([this, &c]() { return WriterLoop(c); });
      });
}

kj::Promise<void> GcSim::ReaderLoop(Client& c) {
  return timer_.afterDelay(UniformUs(0, options_.reader_think_max_ms * 1000))
      .then([this, &c]() -> kj::Promise<void> {
        if (WorkloadOver()) {
          c.done = true;
          Trace("client " + std::to_string(c.index) + " done");
          return kj::READY_NOW;
        }
        KeyState& k = keys_[Uniform(0, static_cast<int64_t>(keys_.size()) - 1)];
        return ReadKey(c, k, false, 0).then([this, &c]() { return ReaderLoop(c); });
      });
}

kj::Promise<void> GcSim::WriteFile(Client& c, KeyState& k) {
  auto w = std::make_shared<FileWrite>();
  w->id = "w" + std::to_string(c.index) + "." + std::to_string(++c.next_id);
  int chunks = static_cast<int>(Uniform(1, options_.max_chunks_per_file));
  for (int i = 0; i < chunks; ++i) w->chunks.push_back(w->id + "/" + std::to_string(i));
  ++result_.stats.writes;
  return PutRound(c, w, w->chunks, 3).then([this, &c, &k, w](bool ok) -> kj::Promise<void> {
    if (!ok) {
      ++result_.stats.abandoned;
      Trace("client " + std::to_string(c.index) + " abandons " + w->id + ": puts failed");
      return kj::READY_NOW;
    }
    return timer_.afterDelay(PublishWait()).then([this, &c, &k, w]() {
      return RefreshAndPublish(c, k, w, 0);
    });
  });
}

// Puts every chunk in `ids` to all N nodes; true once each has W acknowledgements, retried up to
// `attempts` times. The put time recorded is when the successful round was sent.
kj::Promise<bool> GcSim::PutRound(Client& c, std::shared_ptr<FileWrite> w,
                                  std::vector<std::string> ids, int attempts) {
  auto sids = std::make_shared<std::vector<std::string>>(std::move(ids));
  const size_t n = N();
  const int W = options_.write_quorum;
  auto enough = [sids, n, W](const std::vector<std::optional<Result<AcceptReply>>>& replies) {
    for (size_t j = 0; j < sids->size(); ++j) {
      int acks = 0;
      for (size_t i = j * n; i < (j + 1) * n; ++i) {
        if (replies[i] && replies[i]->ok() && (*replies[i])->accepted) ++acks;
      }
      if (acks < W) return false;
    }
    return true;
  };
  int64_t sent = NowNs();
  return Gather<AcceptReply>(
             timer_, kPutTimeoutMs * kj::MILLISECONDS, sids->size() * n,
             [this, &c, sids, n](size_t i) { return PutChunk(c.index, i % n, (*sids)[i / n]); },
             enough)
      .then([this, &c, w, sids, enough, sent,
             attempts](Gathered<AcceptReply>&& g) -> kj::Promise<bool> {
        if (enough(g.replies)) {
          for (const auto& id : *sids) w->put_ns[id] = sent;
          return true;
        }
        if (attempts <= 1) return false;
        return PutRound(c, w, *sids, attempts - 1);
      });
}

// Before publishing, re-put every chunk put more than half the grace period ago (common/
// gc_rules.h ChunkNeedsRefresh), until none is; then publish at once.
kj::Promise<void> GcSim::RefreshAndPublish(Client& c, KeyState& k, std::shared_ptr<FileWrite> w,
                                           int round) {
  std::vector<std::string> stale;
  for (const auto& id : w->chunks) {
    if (ChunkNeedsRefresh(w->put_ns[id], NowNs(), grace_ns_)) stale.push_back(id);
  }
  // The negative control publishes whatever the age of its puts.
  if (stale.empty() || options_.unsafe_writer_skips_refresh) return Publish(c, k, w);
  if (round >= 3) {
    ++result_.stats.abandoned;
    return kj::READY_NOW;
  }
  ++result_.stats.refreshes;
  Trace("client " + std::to_string(c.index) + " re-puts " + std::to_string(stale.size()) +
        " chunk(s) of " + w->id);
  return PutRound(c, w, std::move(stale), 2)
      .then([this, &c, &k, w, round](bool ok) -> kj::Promise<void> {
        if (!ok) {
          ++result_.stats.abandoned;
          return kj::READY_NOW;
        }
        return RefreshAndPublish(c, k, w, round + 1);
      });
}

kj::Promise<void> GcSim::Publish(Client& c, KeyState& k, std::shared_ptr<FileWrite> w) {
  std::string payload = EncodeLayout(w->id, w->chunks);
  Operation op;
  op.client = c.index;
  op.kind = OpKind::kWrite;
  op.value = payload;
  op.invoke_time = NowNs();
  auto saw = std::make_shared<std::optional<std::string>>();
  std::string what = "client " + std::to_string(c.index) + " writes " + w->id + " to " + k.name;
  return c.proposer
      ->Change(k.key,
               [payload, saw](const std::optional<std::string>& current) {
                 *saw = current;
                 return Decision::Write(payload);
               })
      .then([this, &c, &k, op, payload, saw, what](Result<RecordValue>&& r) mutable {
        Mutation m{op.invoke_time, kInfinity, false, payload, what};
        if (r.ok()) {
          op.outcome = OpOutcome::kOk;
          ++result_.stats.writes_ok;
          if (!IsLayout(*saw)) ++result_.stats.recreates;
          if (r->payload != payload) {
            result_.errors.push_back(what + ": returned " + Quote(r->payload));
          }
          m.ok = true;
          m.ret = NowNs();
          Observe(c, k, what, payload, op.invoke_time);
        } else {
          op.outcome = Classify(r.status(), what);
          if (op.outcome == OpOutcome::kFailed) {
            ++result_.stats.writes_failed;
          } else {
            ++result_.stats.writes_unknown;
          }
        }
        if (op.outcome != OpOutcome::kFailed) k.mutations.push_back(std::move(m));
        Record(c, k, std::move(op));
      });
}

kj::Promise<void> GcSim::Unlink(Client& c, KeyState& k) {
  ++result_.stats.unlinks;
  std::string id = "t" + std::to_string(c.index) + "." + std::to_string(++c.next_id);
  int64_t invoke = NowNs();
  // The tombstone written depends on the layout it replaces (the change function must be a
  // pure function of the current value), so the returned payload tells which one it saw.
  auto produced = std::make_shared<std::map<std::string, std::optional<std::string>>>();
  std::string what = "client " + std::to_string(c.index) + " unlinks " + k.name + " (" + id + ")";
  return c.proposer
      ->Change(k.key,
               [id, invoke, produced](const std::optional<std::string>& current) {
                 if (!IsLayout(current)) return Decision::Keep();
                 std::string tomb = EncodeTombstone(id + "^" + HashOf(current), invoke);
                 (*produced)[tomb] = current;
                 return Decision::Write(tomb);
               })
      .then([this, &c, &k, invoke, produced, what](Result<RecordValue>&& r) {
        Operation op;
        op.client = c.index;
        op.invoke_time = invoke;
        if (r.ok()) {
          ++result_.stats.unlinks_ok;
          op.outcome = OpOutcome::kOk;
          Observe(c, k, what, r->payload, invoke);
          auto it = r->payload ? produced->find(*r->payload) : produced->end();
          if (it != produced->end()) {
            op.kind = OpKind::kCas;
            op.expected = it->second;
            op.value = std::nullopt;
            op.cas_succeeded = true;
            k.mutations.push_back(Mutation{invoke, NowNs(), true, std::nullopt, what});
          } else if (IsLayout(r->payload)) {
            result_.errors.push_back(what + ": kept the layout " + Quote(r->payload));
            return;
          } else {
            op.kind = OpKind::kRead;  // already a tombstone (or absent): nothing written
            op.value = std::nullopt;
          }
          Record(c, k, std::move(op));
          return;
        }
        op.outcome = Classify(r.status(), what);
        if (op.outcome == OpOutcome::kFailed) return;
        // Any one of the tombstones it produced may take effect (at most one will).
        for (const auto& [tomb, current] : *produced) {
          Operation each = op;
          each.kind = OpKind::kCas;
          each.expected = current;
          each.value = std::nullopt;
          k.mutations.push_back(Mutation{invoke, kInfinity, false, std::nullopt, what});
          Record(c, k, std::move(each));
        }
      });
}

kj::Promise<void> GcSim::ReadKey(Client& c, KeyState& k, bool final_read, int attempt) {
  if (!final_read) ++result_.stats.reads;
  int64_t invoke = NowNs();
  std::string what = "client " + std::to_string(c.index) + " reads " + k.name;
  return c.proposer->Read(k.key).then([this, &c, &k, invoke, what, final_read,
                                       attempt](Result<RecordValue>&& r) -> kj::Promise<void> {
    if (!r.ok()) {
      Classify(r.status(), what);
      if (!final_read) return kj::READY_NOW;
      if (attempt >= 20) {
        result_.errors.push_back("final read of " + k.name + " failed: " + r.status().ToString());
        return kj::READY_NOW;
      }
      return timer_.afterDelay(20 * kj::MILLISECONDS).then([this, &c, &k, attempt]() {
        return ReadKey(c, k, true, attempt + 1);
      });
    }
    if (!final_read) ++result_.stats.reads_ok;
    Operation op;
    op.client = c.index;
    op.kind = OpKind::kRead;
    op.invoke_time = invoke;
    op.outcome = OpOutcome::kOk;
    op.value = Canonical(r->payload);
    Observe(c, k, what + (final_read ? " (final)" : ""), r->payload, invoke);
    // Fetch the layout's chunks: is each still stored on some node (up or down) now? A
    // miss is a violation only if the layout is still current (see CheckChunks); here it
    // is counted.
    if (IsLayout(r->payload)) {
      auto p = ParsePayload(*r->payload);
      for (const auto& id : p ? p->chunks : std::vector<std::string>{}) {
        if (!StoredSomewhere(id)) {
          ++result_.stats.missing_at_read;
          Trace(what + ": chunk " + id + " is stored nowhere");
          break;
        }
      }
    }
    Record(c, k, std::move(op));
    return kj::READY_NOW;
  });
}

// ---- The GC client ------------------------------------------------------------------------------

kj::Promise<void> GcSim::GcLoop() {
  return timer_
      .afterDelay(UniformUs(options_.gc_interval_min_ms * 1000, options_.gc_interval_max_ms * 1000))
      .then([this]() -> kj::Promise<void> {
        if (WorkloadOver()) {
          gc_done_ = true;
          Trace("gc done");
          return kj::READY_NOW;
        }
        return GcRun().then([this]() { return GcLoop(); });
      });
}

kj::Promise<void> GcSim::GcRun() {
  auto round = std::make_shared<GcRound>();
  round->mark_ns = NowNs();  // before any record is read
  round->rows.resize(N());
  round->chunks.resize(N());
  ++result_.stats.gc_rounds;
  Trace("gc: mark starts");
  return GcScan(round, 0).then([this, round](bool ok) -> kj::Promise<void> {
    if (!ok) {
      ++result_.stats.gc_skipped;
      Trace("gc: a node did not answer the record scan; round skipped");
      return kj::READY_NOW;
    }
    return GcList(round, 0).then([this, round](bool ok) -> kj::Promise<void> {
      if (!ok) {
        ++result_.stats.gc_skipped;
        Trace("gc: a node did not answer the chunk listing; round skipped");
        return kj::READY_NOW;
      }
      // A long sweep: time passes between the mark and the deletes (a big store, a slow
      // disk). Only a sweep that measures from the mark start is safe against it.
      kj::Duration pause = 0 * kj::NANOSECONDS;
      if (Chance(options_.long_sweep_rate))
        pause = UniformUs(0, options_.sweep_pause_max_ms * 1000);
      return timer_.afterDelay(pause).then([this, round]() {
        return GcSweep(round).then([this, round]() {
          auto keys = std::make_shared<std::vector<std::string>>();
          for (const auto& k : keys_) keys->push_back(k.key);
          return GcRemoveRecords(round, keys, 0);
        });
      });
    });
  });
}

kj::Promise<bool> GcSim::GcScan(std::shared_ptr<GcRound> round, size_t node) {
  if (node == N()) return true;
  return CallRetrying<ReadAcceptedReply>([this, node]() { return ScanRows(gc_client_, node); },
                                         kGcAttempts)
      .then([this, round, node](std::optional<ReadAcceptedReply>&& r) -> kj::Promise<bool> {
        if (!r) return false;
        auto rows = DecodeRows(r->value.value_or(""));
        if (!rows) {
          result_.errors.push_back("gc: undecodable scan reply from " + node_ids_[node]);
          return false;
        }
        round->rows[node] = std::move(*rows);
        return GcScan(round, node + 1);
      });
}

kj::Promise<bool> GcSim::GcList(std::shared_ptr<GcRound> round, size_t node) {
  if (node == N()) return true;
  return CallRetrying<ReadAcceptedReply>([this, node]() { return ListChunks(gc_client_, node); },
                                         kGcAttempts)
      .then([this, round, node](std::optional<ReadAcceptedReply>&& r) -> kj::Promise<bool> {
        if (!r) return false;
        std::string_view list = r->value ? std::string_view(*r->value) : std::string_view();
        while (!list.empty()) {
          size_t nl = list.find('\n');
          round->chunks[node].emplace_back(list.substr(0, nl));
          list.remove_prefix(nl == std::string_view::npos ? list.size() : nl + 1);
        }
        return GcList(round, node + 1);
      });
}

kj::Promise<void> GcSim::GcSweep(std::shared_ptr<GcRound> round) {
  // Mark: every chunk any accepted value on any node references, chosen or not.
  std::set<std::string> referenced;
  for (const auto& rows : round->rows) {
    for (const auto& [key, row] : rows) {
      auto payload = PayloadOf(row.value);
      if (!IsLayout(payload)) continue;
      if (auto p = ParsePayload(*payload)) referenced.insert(p->chunks.begin(), p->chunks.end());
    }
  }
  auto targets = std::make_shared<std::vector<std::pair<size_t, std::string>>>();
  for (size_t node = 0; node < N(); ++node) {
    for (const auto& id : round->chunks[node]) {
      if (!referenced.count(id)) targets->emplace_back(node, id);
    }
  }
  result_.stats.chunks_swept += static_cast<int64_t>(targets->size());
  // The mark start deleteChunk compares with; the negative control passes the sweep's clock.
  int64_t mark = options_.unsafe_sweep_uses_own_clock ? NowNs() : round->mark_ns;
  Trace("gc: sweeping " + std::to_string(targets->size()) + " unreferenced chunk copies (" +
        std::to_string(referenced.size()) + " chunks referenced), mark " +
        std::to_string(mark / 1000) + " us");
  return Gather<AcceptReply>(
             timer_, kSweepTimeoutMs * kj::MILLISECONDS, targets->size(),
             [this, targets, mark](size_t i) {
               return DeleteChunk(gc_client_, (*targets)[i].first, (*targets)[i].second, mark);
             },
             [](const std::vector<std::optional<Result<AcceptReply>>>&) { return false; })
      .ignoreResult();
}

// A key whose every replica holds the same accepted ballot and a tombstone older than the
// tombstone grace is removed with deleteRecord(key, ballot) on every replica.
kj::Promise<void> GcSim::GcRemoveRecords(std::shared_ptr<GcRound> round,
                                         std::shared_ptr<std::vector<std::string>> keys, size_t i) {
  if (i == keys->size()) {
    ++result_.stats.gc_completed;
    Trace("gc: round done");
    return kj::READY_NOW;
  }
  const std::string key = (*keys)[i];
  const ScannedRow* first = nullptr;
  bool same = true;
  for (size_t node = 0; node < N() && same; ++node) {
    auto it = round->rows[node].find(key);
    if (it == round->rows[node].end() || !it->second.value) {
      same = false;
    } else if (!first) {
      first = &it->second;
    } else if (it->second.accepted != first->accepted || it->second.value != first->value) {
      same = false;
    }
  }
  std::optional<std::string> payload = same ? PayloadOf(first->value) : std::nullopt;
  std::optional<Payload> p = payload ? ParsePayload(*payload) : std::nullopt;
  if (!p || p->layout || p->unlink_ns >= round->mark_ns - options_.tombstone_grace_ms * kNsPerMs) {
    return GcRemoveRecords(round, keys, i + 1);
  }
  Ballot ballot = first->accepted;
  auto promised = std::make_shared<std::vector<Ballot>>();
  Ballot fence;
  for (size_t node = 0; node < N(); ++node) {
    promised->push_back(round->rows[node].at(key).promised);
    fence = MaxBallot(fence, promised->back());
  }
  std::string tomb = *payload;
  Trace("gc: removing " + DescribeKey(key) + " (" + tomb + ") at " + ballot.ToString());
  return Gather<AcceptReply>(
             timer_, kSweepTimeoutMs * kj::MILLISECONDS, N(),
             [this, key, ballot, promised, fence](size_t node) {
               return DeleteRecord(gc_client_, node, key, ballot, (*promised)[node], fence);
             },
             [](const std::vector<std::optional<Result<AcceptReply>>>&) { return false; })
      .then([this, round, keys, i, key, tomb](Gathered<AcceptReply>&& g) {
        bool all = true;
        for (const auto& r : g.replies) all = all && r && r->ok() && (*r)->accepted;
        if (all) {
          ++result_.stats.removals_complete;
          for (auto& k : keys_) {
            if (k.key == key) k.removals.push_back(Removal{tomb, round->mark_ns, NowNs()});
          }
          Trace("gc: " + DescribeKey(key) + " removed on every replica");
        }
        return GcRemoveRecords(round, keys, i + 1);
      });
}

// ---- Checks -------------------------------------------------------------------------------------

void GcSim::Violation(GcViolation kind, KeyState& k, const std::string& text) {
  result_.violations.emplace_back(kind, k.name + ": " + text);
  if (std::find(result_.violating_keys.begin(), result_.violating_keys.end(), k.name) ==
      result_.violating_keys.end()) {
    result_.violating_keys.push_back(k.name);
  }
}

std::string Span(int64_t from, int64_t to) {
  auto us = [](int64_t t) {
    return t == kInfinity ? std::string("end") : std::to_string(t / 1000);
  };
  return "[" + us(from) + ", " + us(to) + "] us";
}

// Invariant 1. A layout is the key's value over one contiguous span of time (its id is unique,
// and a register's value does not return once replaced). Each definite operation that returned
// it saw it current at some instant within its own [invoke, return], so it was current over
// [earliest return, latest invocation] of them. A chunk of it stored nowhere at any instant of
// that span, or during the whole of one such operation, was deleted while referenced.
void GcSim::CheckChunks(KeyState& k) {
  std::map<std::string, std::vector<const Observation*>> by_layout;
  for (const auto& o : k.observed) {
    if (IsLayout(o.payload)) by_layout[*o.payload].push_back(&o);
  }
  for (const auto& [layout, obs] : by_layout) {
    auto p = ParsePayload(layout);
    if (!p) continue;
    int64_t min_ret = kInfinity, max_invoke = -1;
    for (const auto* o : obs) {
      min_ret = std::min(min_ret, o->ret);
      max_invoke = std::max(max_invoke, o->invoke);
    }
    for (const auto& id : p->chunks) {
      auto t = chunks_.find(id);
      if (t == chunks_.end()) {
        Violation(GcViolation::kChunkDeleted, k,
                  "layout " + p->id + " lists chunk " + id + ", which was never stored");
        continue;
      }
      for (const auto& [from, to] : t->second.absent) {
        std::string found;
        if (min_ret <= max_invoke && from <= max_invoke && to > min_ret) {
          found = "while the layout was current " + Span(min_ret, max_invoke);
        }
        for (const auto* o : obs) {
          if (found.empty() && from <= o->invoke && o->ret <= to) {
            found = "during the whole of: " + o->what + " " + Span(o->invoke, o->ret);
          }
        }
        if (found.empty()) continue;
        Violation(GcViolation::kChunkDeleted, k,
                  "chunk " + id + " of layout " + p->id + " was stored nowhere " + Span(from, to) +
                      ", " + found);
        break;
      }
    }
  }
}

// Invariant 2. When GC's deleteRecord succeeded on every replica, every replica held the
// tombstone at the scanned ballot until it deleted it: the tombstone was the key's latest value,
// and every value observed before the round's mark began was at most that old. None of them
// may be returned by an operation invoked after the removal completed.
void GcSim::CheckRemovals(KeyState& k) {
  for (const auto& rm : k.removals) {
    std::set<std::string> removed{rm.tombstone};
    for (const auto& o : k.observed) {
      if (o.payload && o.ret < rm.mark_ns) removed.insert(*o.payload);
    }
    for (const auto& o : k.observed) {
      if (o.invoke > rm.done_ns && o.payload && removed.count(*o.payload)) {
        Violation(*o.payload == rm.tombstone ? GcViolation::kTombstoneResurrected
                                             : GcViolation::kKeyCameBack,
                  k,
                  o.what + " " + Span(o.invoke, o.ret) + " returned " + Quote(o.payload) +
                      ", a value from before the key was removed (tombstone " + rm.tombstone +
                      ", mark at " + std::to_string(rm.mark_ns / 1000) +
                      " us, removed on every replica at " + std::to_string(rm.done_ns / 1000) +
                      " us)");
        break;
      }
    }
  }
}

// Invariant 3, plainly: the last acknowledged write or unlink of a key, when every other change
// that may have taken effect was acknowledged before it began, is what the final read returns.
void GcSim::CheckLastAcknowledged(KeyState& k) {
  const Mutation* last = nullptr;
  for (const auto& m : k.mutations) {
    if (m.ok && (!last || m.ret > last->ret)) last = &m;
  }
  if (!last) return;
  for (const auto& m : k.mutations) {
    if (&m != last && !(m.ok && m.ret < last->invoke)) return;  // may have landed after it
  }
  const Observation* final_read = nullptr;
  for (const auto& o : k.observed) {
    if (o.client == final_reader_->index) final_read = &o;
  }
  if (!final_read) return;
  if (Canonical(final_read->payload) != last->canonical) {
    Violation(GcViolation::kAcknowledgedLost, k,
              last->what + " was acknowledged at " + std::to_string(last->ret / 1000) +
                  " us and nothing changed the key afterwards, but the final read returned " +
                  Quote(final_read->payload));
  }
}

void GcSim::CheckRegister(KeyState& k) {
  ++result_.stats.keys_checked;
  CheckResult check = CheckRegisterHistory(k.history, options_.checker_max_states);
  if (check.gave_up) ++result_.stats.checker_gave_up;
  if (!check.linearizable) Violation(GcViolation::kNotLinearizable, k, check.explanation);
}

GcSimResult GcSim::Run() {
  result_.seed = options_.seed;
  Setup();
  CheckTimingAssumption();
  for (auto& c : clients_) tasks_->add(c->writer ? WriterLoop(*c) : ReaderLoop(*c));
  tasks_->add(GcLoop());
  if (options_.faults.crashes) network_->StartFaults([this]() { return finished_; });
  bool ran = RunUntil([this]() { return Finished(); });
  finished_ = true;
  if (ran) {
    // Settle: every node up, every message in flight delivered; then read every key.
    network_->RestartAll();
    const kj::TimePoint settle = timer_.now() + kSettleMs * kj::MILLISECONDS;
    tasks_->add(timer_.atTime(settle));
    RunUntil([this, settle]() { return timer_.now() >= settle; });
    auto reads_done = std::make_shared<size_t>(0);
    for (auto& k : keys_) {
      tasks_->add(ReadKey(*final_reader_, k, true, 0).then([reads_done]() { ++*reads_done; }));
    }
    RunUntil([this, reads_done]() { return *reads_done == keys_.size(); });
  }
  result_.stats.sim_time_us = NowNs() / 1000;
  const NetworkStats& net = network_->stats();
  result_.stats.messages = net.messages;
  result_.stats.dropped = net.dropped;
  result_.stats.duplicated = net.duplicated;
  result_.stats.crashes = net.crashes;
  for (auto& k : keys_) {
    CheckChunks(k);
    CheckRemovals(k);
    if (ran) CheckLastAcknowledged(k);
    CheckRegister(k);
    result_.histories[k.name] = std::move(k.history);
  }
  return std::move(result_);
}

}  // namespace

GcSimResult RunGcSimulation(const GcSimOptions& options) {
  GcSim sim(options);
  return sim.Run();
}

}  // namespace quorumfs::sim
