#include "tools/fsck.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "common/cluster_client.h"
#include "common/file_locks.h"
#include "common/gc_rules.h"
#include "common/placement.h"
#include "common/record.h"
#include "common/record_key.h"
#include "tools/json.h"

namespace quorumfs {
namespace {

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Issue {
  std::string kind;     // stable machine-readable kind
  std::string subject;  // record key, chunk id, node
  std::string path;     // affected file, when known
  std::string detail;
  bool fixed = false;
  std::vector<std::string> keys = {};  // record keys whose paths are filled in after the walk
  bool withdrawn = false;              // found right when checked again: not reported
};

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled && ::isatty(2)) {}
  void Phase(const std::string& name, uint64_t total) {
    Done();
    name_ = name;
    total_ = total;
    count_ = 0;
    start_ = std::chrono::steady_clock::now();
    Draw();
  }
  void Tick(uint64_t n = 1) {
    count_ += n;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ > std::chrono::milliseconds(100)) Draw();
  }
  void Done() {
    if (enabled_ && !name_.empty()) {
      Draw();
      std::fprintf(stderr, "\n");
    }
    name_.clear();
  }

 private:
  void Draw() {
    if (!enabled_) return;
    last_ = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(last_ - start_).count();
    double rate = s > 0 ? count_ / s : 0;
    if (total_) {
      int width = 30;
      int filled = static_cast<int>(width * std::min<double>(1.0, double(count_) / total_));
      std::fprintf(stderr, "\r%-22s [%s%s] %llu/%llu %.0f/s   ", name_.c_str(),
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                   static_cast<unsigned long long>(count_), static_cast<unsigned long long>(total_),
                   rate);
    } else {
      std::fprintf(stderr, "\r%-22s %llu %.0f/s   ", name_.c_str(),
                   static_cast<unsigned long long>(count_), rate);
    }
    std::fflush(stderr);
  }
  bool enabled_;
  std::string name_;
  uint64_t total_ = 0, count_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
};

// One record as every node stores it.
struct RecordCopies {
  std::map<std::string, ScannedRecord> by_node;
};

class Fsck {
 public:
  Fsck(const FsckOptions& o, std::shared_ptr<const ClusterConfig> config)
      : o_(o), config_(config), progress_(!o.json) {
    ClusterClientOptions copts;
    auto t = static_cast<int64_t>(o.timeout_s * 1e9) * kj::NANOSECONDS;
    copts.rpc.call_timeout = std::min(t, 5 * kj::SECONDS);
    copts.rpc.connect_timeout = std::min(t, 2 * kj::SECONDS);
    copts.proposer.op_timeout = t;
    copts.ns.busy_timeout = t;
    // Every change fsck makes takes the full protocol, at a ballot above every promise its
    // prepares heard. A one-round change goes one ballot past the last, and a replica whose
    // promise is far above (raised by a writer's retries there while the others' disks were
    // full) refused each repair of a record there in turn, so it stayed behind.
    copts.proposer.one_round_changes = false;
    // A check changes nothing: its walk reads a transaction pending past its deadline as
    // pending instead of aborting it (only --repair finishes or aborts transactions).
    copts.ns.observe_only = !o.repair;
    if (o.recount_quiet_s > 0) {
      copts.ns.recount_quiet_ns = static_cast<int64_t>(o.recount_quiet_s * 1e9);
    }
    // --deep hashes every replica: on every core.
    copts.hash_threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    client_ = std::make_unique<ClusterClient>(config, copts);
  }

  int Run() {
    mark_start_ns_ = WallNs();  // GC: the mark begins before any record is read
    if (!CheckNodes()) return Finish(true);
    ScanRecords();
    CheckRecordReplicas();
    CheckTransactions();
    WalkNamespace();
    RecountDeferred();
    FillPaths();
    CheckOrphans();
    ScanChunks();
    CheckChunks();
    if (o_.gc) CollectGarbage();
    if (o_.repair) FinishRejoins();
    if (o_.rebalance) FinishRebalance();
    return Finish(false);
  }

 private:
  template <typename T>
  T Sync(std::function<kj::Promise<T>()> fn) {
    return client_->RunSync<T>(std::move(fn));
  }

  void Report(Issue issue) { issues_.push_back(std::move(issue)); }

  // ---- nodes -------------------------------------------------------------------------------

  bool CheckNodes() {
    std::vector<std::string> ids = config_->NodeIds();
    for (const auto& id : config_->previous) {
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    for (const auto& id : ids) {
      auto s = client_->Stats(id);
      if (!s.ok()) {
        down_.insert(id);
        Issue i{"node_down", id, "", s.status().message()};
        Report(i);
        continue;
      }
      up_.push_back(id);
      if (s->epoch != config_->epoch) {
        operational_ = "node " + id + " is at epoch " + std::to_string(s->epoch) +
                       ", the cluster file says " + std::to_string(config_->epoch);
        return false;
      }
      if (!s->voting) rejoining_.insert(id);
    }
    // Every replica set needs a quorum of reachable, voting nodes.
    int usable = 0;
    for (const auto& id : up_) usable += rejoining_.count(id) == 0;
    int need = std::max(config_->write_quorum, config_->read_quorum);
    int missing = static_cast<int>(ids.size()) - usable;
    if (missing > config_->replicas - need) {
      std::string names;
      for (const auto& d : down_) names += (names.empty() ? "" : ", ") + d;
      for (const auto& d : rejoining_) names += (names.empty() ? "" : ", ") + d + " (rejoining)";
      operational_ = "no quorum reachable for some replica sets; unusable nodes: " + names;
      return false;
    }
    return true;
  }

  // ---- records -----------------------------------------------------------------------------

  void ScanRecords() {
    progress_.Phase("scanning records", 0);
    for (const auto& node : up_) {
      std::string after;
      for (;;) {
        auto page = Sync<Result<ScanPage>>(
            [&]() { return client_->rpc().ScanRecords(node, "", after, 4096); });
        if (!page.ok()) {
          operational_ = "scanning records on " + node + ": " + page.status().ToString();
          break;
        }
        const std::string before = after;
        for (auto& rec : page->records) {
          after = rec.key;
          records_[rec.key].by_node[node] = std::move(rec);
        }
        progress_.Tick(page->records.size());
        if (!page->more) break;
        if (after <= before) {  // a page that does not move on would be asked for forever
          operational_ = "scanning records on " + node + ": a page did not advance past '" +
                         DescribeKey(before) + "'";
          break;
        }
      }
    }
  }

  static std::optional<MetaRecord> Decode(const ScannedRecord& r) {
    if (!r.value) return std::nullopt;
    auto env = RecordEnvelope::Decode(*r.value);
    if (!env.ok()) return std::nullopt;
    auto rec = MetaRecord::Decode(env->payload);
    if (!rec.ok()) return std::nullopt;
    return *rec;
  }

  // Whether a directory's record (its body, or an intent's value) carries a rename mark of
  // transaction `txn`.
  static bool HasRenameMark(const MetaRecord& rec, uint64_t txn) {
    auto marked = [txn](const Inode* in) {
      return in && std::any_of(in->rename_marks.begin(), in->rename_marks.end(),
                               [txn](const RenameMark& m) { return m.txn == txn; });
    };
    if (marked(rec.inode())) return true;
    return rec.intent && marked(std::get_if<Inode>(&rec.intent->value));
  }

  // The copy with the highest accepted ballot.
  static const ScannedRecord* Latest(const RecordCopies& c) {
    const ScannedRecord* best = nullptr;
    for (const auto& [node, r] : c.by_node) {
      if (!best || r.accepted > best->accepted) best = &r;
    }
    return best;
  }

  std::string PathOfKey(const std::string& key) {
    if (key[0] == 'I' || key[0] == 'C') {
      uint64_t ino = DecodeU64(std::string_view(key).substr(2, 8));
      auto it = paths_.find(ino);
      return it != paths_.end() ? it->second : "";
    }
    if (key[0] == 'D') {
      uint64_t parent = DecodeU64(std::string_view(key).substr(2, 8));
      auto it = paths_.find(parent);
      std::string name = key.substr(20);
      if (it != paths_.end()) return (it->second == "/" ? "" : it->second) + "/" + name;
      return "?/" + name;
    }
    return "";
  }

  // Names the paths of issues found before the walk (record replicas, transactions).
  void FillPaths() {
    for (auto& i : issues_) {
      if (!i.path.empty()) continue;
      std::vector<std::string> seen;
      for (const auto& k : i.keys) {
        std::string p = PathOfKey(k);
        if (p.empty() || std::find(seen.begin(), seen.end(), p) != seen.end()) continue;
        seen.push_back(p);
        i.path += (i.path.empty() ? "" : " ") + p;
      }
    }
  }

  // Rewrites a record through CASPaxos so every replica of its set holds it.
  bool RepairRecord(const std::string& key) {
    // An inode or entry that a quorum lacks while some replica holds it (a create that failed
    // or crashed midway, on disks that refused the others' writes) was never chosen. Keeping
    // "nothing" writes nothing, and that replica's copy would stay, reported forever (or be
    // adopted by whichever later read hears it). An explicit absence at this fresh ballot
    // settles every replica, as the recount settles a directory's keys; stamped as removed
    // long ago, so that nothing reads it as a recent unlink.
    const bool ns_key = key[0] == 'I' || key[0] == 'D';
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto r = Sync<Result<RecordValue>>([&]() {
        return client_->proposer().Change(key, [ns_key](const std::optional<std::string>& cur) {
          if (cur) return Decision::Write(*cur);
          if (!ns_key) return Decision::Keep();
          MetaRecord absent;
          absent.removed_ns = 1;
          return Decision::Write(absent.Encode());
        });
      });
      if (!r.ok()) continue;
      // The accept went to every replica; the last ones may still be syncing.
      for (int wait = 0; wait < 20; ++wait) {
        if (ReplicasAgree(key)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
      }
    }
    return false;
  }

  // Of the replicas the scan saw behind `best`, those still behind it a moment later (or with
  // another value at its ballot). Accepted ballots only rise: a replica whose accept was in
  // flight, or that took a newer change since (a key mounts keep changing, where the replicas
  // never agree at one instant), has caught up; a stale one has not.
  std::vector<std::string> StillBehind(const std::string& key,
                                       const std::vector<std::string>& lagging,
                                       const ScannedRecord& best) {
    if (!settle_waited_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // once per run
      settle_waited_ = true;
    }
    std::vector<std::string> out;
    for (const auto& node : lagging) {
      auto r =
          Sync<Result<ReadAcceptedReply>>([&]() { return client_->rpc().ReadAccepted(node, key); });
      if (!r.ok() || r->accepted_ballot < best.accepted ||
          (r->accepted_ballot == best.accepted && r->value != best.value)) {
        out.push_back(node);
      }
    }
    return out;
  }

  bool ReplicasAgree(const std::string& key) {
    auto groups = ReplicaGroupsFor(*config_, RecordPlacementKey(key));
    std::optional<std::pair<Ballot, std::optional<std::string>>> first;
    for (const auto& node : ReplicaUnion(groups)) {
      if (down_.count(node)) continue;
      auto r =
          Sync<Result<ReadAcceptedReply>>([&]() { return client_->rpc().ReadAccepted(node, key); });
      if (!r.ok()) return false;
      auto v = std::make_pair(r->accepted_ballot, r->value);
      if (!first) {
        first = v;
      } else if (first->first != v.first || first->second != v.second) {
        return false;
      }
    }
    return true;
  }

  void CheckRecordReplicas() {
    progress_.Phase("checking records", records_.size());
    std::vector<std::string> malformed;
    for (const auto& [key, copies] : records_) {
      progress_.Tick();
      if (!ValidateRecordKey(key).ok()) {
        Report(Issue{"malformed_record_key", DescribeKey(key), "", "unknown key format"});
        malformed.push_back(key);
        // Its value may name chunks this fsck cannot see: --gc must not run.
        for (const auto& [node, copy] : copies.by_node) {
          if (copy.value) unknown_references_ = true;
        }
        continue;
      }
      const ScannedRecord* best = Latest(copies);
      auto groups = ReplicaGroupsFor(*config_, RecordPlacementKey(key));
      auto members = ReplicaUnion(groups);
      std::vector<std::string> lagging;
      for (const auto& m : members) {
        if (down_.count(m)) continue;
        auto it = copies.by_node.find(m);
        if (it == copies.by_node.end() || it->second.accepted != best->accepted ||
            it->second.value != best->value) {
          lagging.push_back(m);
        }
      }
      // A change in flight while the nodes were scanned (its last accepts land after its
      // quorum): ask the replicas again before calling them divergent.
      if (!lagging.empty() && ReplicasAgree(key)) lagging.clear();
      if (!lagging.empty()) lagging = StillBehind(key, lagging, *best);
      bool needs_refill = false;
      for (const auto& m : members) needs_refill |= rejoining_.count(m) > 0;
      if (best->value && (!lagging.empty() || (o_.repair && needs_refill) ||
                          (o_.rebalance && config_->InTransition()))) {
        // Lagging replicas that are expected to lack the record: a rejoining node not yet
        // refilled, or a new member of the key's set during a membership change. Only other
        // lagging replicas mean the copies disagree.
        const std::vector<std::string>* old_members =
            config_->InTransition() ? &groups.back().members : nullptr;
        std::string who, expected;
        for (const auto& l : lagging) {
          bool refill = rejoining_.count(l) > 0;
          // (A row holding only a promise, left by a read's prepare, is no copy either.)
          auto row = copies.by_node.find(l);
          bool no_copy = row == copies.by_node.end() || !row->second.value;
          bool joining =
              old_members && no_copy &&
              std::find(old_members->begin(), old_members->end(), l) == old_members->end();
          std::string& list = refill || joining ? expected : who;
          list += (list.empty() ? "" : ",") + l;
        }
        Issue i;
        i.kind = !who.empty()   ? "record_replicas_disagree"
                 : needs_refill ? "record_refill"
                                : "record_rebalance";
        i.subject = DescribeKey(key);
        if (!who.empty()) {
          i.detail = "lagging or divergent on " + who;
        } else if (!expected.empty()) {
          i.detail = "no copy yet on " + expected;
        }
        if (i.kind == "record_rebalance" && !o_.rebalance && !o_.repair) {
          i.detail += (i.detail.empty() ? "" : "; ") + std::string("run fsck --rebalance");
        }
        if (o_.repair || o_.rebalance) i.fixed = RepairRecord(key);
        i.keys = {key};
        // Routine copies to new or refilled replicas are counted, not listed, once done.
        if (!who.empty() || !i.fixed) Report(i);
      }
      CheckAwayCopies(key, copies, members);
    }
    // Reported once; no later check may take such a key apart as a well-formed one.
    for (const auto& key : malformed) records_.erase(key);
    for (const auto& [key, node] : away_dropped_) records_[key].by_node.erase(node);
    ReportAwayCopies();
  }

  // Copies on nodes outside the key's replica sets. A rebalance writes every key to its old and
  // new sets; once the next epoch is installed, the nodes of the old set only keep theirs. They
  // pin the chunks they name, and a later change that makes such a node a replica again would
  // offer a copy the replicas have since removed as the key's latest value.
  struct AwayTally {
    int found = 0, dropped = 0, kept = 0, changed = 0;
    std::string error;
  };

  void CheckAwayCopies(const std::string& key, const RecordCopies& copies,
                       const std::vector<std::string>& members) {
    std::optional<Ballot> newest_home;
    for (const auto& m : members) {
      auto it = copies.by_node.find(m);
      if (it == copies.by_node.end() || !it->second.value) continue;
      newest_home =
          newest_home ? MaxBallot(*newest_home, it->second.accepted) : it->second.accepted;
    }
    for (const auto& [node, copy] : copies.by_node) {
      if (!copy.value || std::find(members.begin(), members.end(), node) != members.end()) {
        continue;
      }
      AwayTally& t = away_[node];
      ++t.found;
      // Dropped only where a replica accepted a ballot at least as high. A newer away copy may be
      // the only one of a key that a membership change never moved: kept, and reported.
      if ((!newest_home || *newest_home < copy.accepted) && !(o_.repair && o_.drop_stale_copies)) {
        ++t.kept;
        continue;
      }
      if (!o_.repair && !o_.rebalance) continue;
      auto r = Sync<Result<bool>>([&]() {
        return client_->rpc().DeleteRecord(node, key, copy.accepted, copy.promised, copy.promised);
      });
      if (!r.ok()) {
        if (t.error.empty()) t.error = r.status().ToString();
      } else if (*r) {
        ++t.dropped;
        away_dropped_.emplace_back(key, node);
      } else {
        ++t.changed;  // written since it was scanned
      }
    }
  }

  // One issue per node: after a membership change there is one such copy per key that moved.
  void ReportAwayCopies() {
    for (const auto& [node, t] : away_) {
      Issue i{"record_away_from_home", node, "",
              std::to_string(t.found) + " record copies on a node outside their replica sets"};
      if (t.kept > 0) {
        i.detail += "; " + std::to_string(t.kept) +
                    " kept: no replica holds the key as new (left by a --gc of an older fsck, "
                    "or a membership change installed without its rebalance); a change that "
                    "makes this node their replica again would bring them back: unless a "
                    "change skipped its rebalance, drop them with --repair --drop-stale-copies";
      }
      if (t.changed > 0) {
        i.detail += "; " + std::to_string(t.changed) + " changed while checked (run again)";
      }
      if (!t.error.empty()) i.detail += "; dropping failed: " + t.error;
      if ((o_.repair || o_.rebalance) && t.kept == 0) {
        i.fixed = t.dropped == t.found;
      } else if (!o_.repair && !o_.rebalance && t.kept < t.found) {
        i.detail += "; fsck --repair drops the ones a replica holds as new";
      }
      Report(i);
    }
  }

  // ---- transactions ------------------------------------------------------------------------

  void CheckTransactions() {
    int64_t now = WallNs();
    int stuck = 0;
    struct StuckTxn {
      std::string key;
      bool expired, marks_left;
      std::vector<std::string> participants;
    };
    std::vector<StuckTxn> suspects;
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'X') continue;
      auto rec = Decode(*Latest(copies));
      if (!rec || !rec->txn()) continue;
      const Txn& t = *rec->txn();
      bool expired = t.state == TxnState::kPending && now > t.deadline_ns;
      // A decided transaction whose intents are still attached somewhere.
      bool unresolved = false, marks_left = false;
      if (t.state != TxnState::kPending) {
        for (const auto& p : t.participants) {
          auto it = records_.find(p);
          if (it == records_.end()) continue;
          auto prec = Decode(*Latest(it->second));
          if (prec && prec->intent && prec->intent->txn == t.id) unresolved = true;
        }
        for (uint64_t dir : t.marked_dirs) {
          auto it = records_.find(InodeKey(dir));
          if (it == records_.end()) continue;
          auto prec = Decode(*Latest(it->second));
          if (prec && HasRenameMark(*prec, t.id)) unresolved = marks_left = true;
        }
      }
      if (expired || unresolved) suspects.push_back({key, expired, marks_left, t.participants});
    }
    // The scan read X and its participants at different moments, and a transaction's intents
    // and marks go right after its decision: reported only if still stuck when read again.
    suspects = AfterLooks<StuckTxn>(suspects, [&](const StuckTxn& x) { return !StuckNow(x.key); });
    for (const auto& x : suspects) {
      ++stuck;
      // Paths are known only after the walk (FillPaths).
      Issue i{x.expired ? "transaction_expired" : "transaction_unresolved", DescribeKey(x.key), "",
              x.expired      ? "pending past its deadline"
              : x.marks_left ? "decided, intents or rename marks not settled"
                             : "decided, intents not resolved"};
      i.keys = x.participants;
      Report(i);
      txn_issue_indices_.push_back(issues_.size() - 1);
    }
    if (stuck && o_.repair) {
      auto r = Sync<Result<int>>([&]() { return client_->ns().ResolveTransactions(); });
      if (r.ok()) {
        for (size_t i : txn_issue_indices_) issues_[i].fixed = true;
      }
    }
  }

  // Whether transaction `key` is stuck now, read again through every replica that answers:
  // pending past its deadline (by a fresh clock), or decided with an intent or a rename mark of
  // it still in place. A read that fails keeps it stuck.
  bool StuckNow(const std::string& key) {
    bool failed = false;
    auto read = [&](const std::string& k) -> std::optional<MetaRecord> {
      auto r = Sync<Result<RecordValue>>([&]() { return client_->proposer().ReadWithoutWrite(k); });
      if (!r.ok()) failed = true;
      if (!r.ok() || !r->payload) return std::nullopt;
      auto m = MetaRecord::Decode(*r->payload);
      if (!m.ok()) return std::nullopt;
      return *m;
    };
    auto x = read(key);
    if (failed) return true;
    if (!x || !x->txn()) return false;
    const Txn& t = *x->txn();
    if (t.state == TxnState::kPending) return WallNs() > t.deadline_ns;
    bool left = false;
    for (const auto& p : t.participants) {
      auto rec = read(p);
      left |= rec && rec->intent && rec->intent->txn == t.id;
    }
    for (uint64_t dir : t.marked_dirs) {
      auto rec = read(InodeKey(dir));
      left |= rec && HasRenameMark(*rec, t.id);
    }
    return failed || left;
  }

  // ---- namespace ---------------------------------------------------------------------------

  Result<uint64_t> ResolvePath(const std::string& path) {
    uint64_t ino = kRootIno;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t next = path.find('/', pos);
      if (next == std::string::npos) next = path.size();
      std::string comp = path.substr(pos, next - pos);
      pos = next + 1;
      if (comp.empty() || comp == ".") continue;
      auto r = Sync<Result<Inode>>([&]() { return client_->ns().Lookup(ino, comp); });
      if (!r.ok()) return r.status().WithContext(path);
      if (!r->is_dir()) {
        return Status(StatusCode::kNotDirectory, path + ": " + comp + " is not a directory");
      }
      ino = r->ino;
    }
    return ino;
  }

  void WalkNamespace() {
    // A cluster no mount has used yet holds no inode, not even the root's (the first mount
    // makes it): nothing to walk, and nothing wrong.
    // (A read of the root may have left a promise on I/1, which holds no value.)
    auto holds_value = [](const auto& r) {
      for (const auto& [node, copy] : r.second.by_node) {
        if (copy.value) return true;
      }
      return false;
    };
    if ((o_.path.empty() || o_.path == "/") &&
        std::none_of(records_.begin(), records_.end(), holds_value)) {
      if (!o_.json) std::printf("no file system yet: no mount has used this cluster\n");
      no_file_system_ = true;
      return;
    }
    auto root = ResolvePath(o_.path);
    if (!root.ok()) {
      operational_ = "cannot resolve " + o_.path + ": " + root.status().ToString();
      return;
    }
    std::string root_path = o_.path.empty() ? "/" : o_.path;
    if (root_path.size() > 1 && root_path.back() == '/') root_path.pop_back();
    std::vector<std::pair<uint64_t, std::string>> queue = {{*root, root_path}};
    paths_[*root] = root_path;
    progress_.Phase("walking namespace", 0);
    while (!queue.empty()) {
      auto [dir, path] = queue.back();
      queue.pop_back();
      std::vector<DirListing::Entry> entries;
      uint64_t offset = 0;
      bool uncertain = false;  // some entry or inode could not be read: no recount verdict
      for (;;) {
        auto page =
            Sync<Result<DirListing>>([&]() { return client_->ns().ReadDir(dir, offset, 512); });
        if (!page.ok()) {
          Report(
              Issue{"unreadable_directory", std::to_string(dir), path, page.status().ToString()});
          uncertain = true;
          break;
        }
        for (auto& e : page->entries) entries.push_back(e);
        if (page->end || page->entries.empty()) break;
        offset = page->entries.back().offset;
      }
      // Inodes of the entries, in parallel.
      std::vector<Result<Inode>> inodes;
      for (size_t i = 0; i < entries.size(); i += o_.jobs) {
        size_t end = std::min(entries.size(), i + o_.jobs);
        auto batch = Sync<std::vector<Result<Inode>>>([&]() {
          kj::Vector<kj::Promise<Result<Inode>>> all;
          for (size_t k = i; k < end; ++k) all.add(client_->ns().GetAttr(entries[k].ino));
          return kj::joinPromises(all.releaseAsArray()).then([](kj::Array<Result<Inode>>&& rs) {
            std::vector<Result<Inode>> out;
            for (auto& r : rs) out.push_back(std::move(r));
            return out;
          });
        });
        for (auto& r : batch) inodes.push_back(std::move(r));
      }
      uint64_t live = 0, subdirs = 0;
      for (size_t k = 0; k < entries.size(); ++k) {
        progress_.Tick();
        const auto& e = entries[k];
        std::string child = (path == "/" ? "" : path) + "/" + e.name;
        if (!inodes[k].ok() && inodes[k].status().code() != StatusCode::kNotFound) {
          // A timeout or a lost quorum says nothing about the inode: never remove its entry.
          Report(Issue{"unreadable_inode", child, child,
                       "inode " + std::to_string(e.ino) + ": " + inodes[k].status().ToString()});
          uncertain = true;
          continue;
        }
        if (!inodes[k].ok() || inodes[k]->state == InodeState::kDying) {
          // An unlink or a replacing rename in flight: its entry was listed before it went, and
          // its inode read after it was marked dying. Read the entry again: only one that still
          // names a dying or missing inode dangles.
          // (One renamed over names another inode now: that one is walked instead.)
          auto now = EntryNow(dir, e.name);
          if (now.ok() && !*now) continue;  // removed meanwhile
          if (now.ok()) {
            entries[k].ino = **now;
            inodes[k] = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(e.ino); });
          }
          if (!inodes[k].ok() && inodes[k].status().code() != StatusCode::kNotFound) {
            Report(Issue{"unreadable_inode", child, child,
                         "inode " + std::to_string(e.ino) + ": " + inodes[k].status().ToString()});
            uncertain = true;
            continue;
          }
        }
        if (!inodes[k].ok() || inodes[k]->state == InodeState::kDying) {
          Issue i{"dangling_entry", child, child,
                  "entry names inode " + std::to_string(e.ino) +
                      (inodes[k].ok() ? ", which was removed" : ", which does not exist")};
          if (o_.repair) {
            auto r =
                Sync<Result<bool>>([&]() { return client_->ns().RemoveEntry(dir, e.name, e.ino); });
            i.fixed = r.ok();
            if (r.ok() && !*r) continue;  // gone or renamed meanwhile: it did not dangle
          }
          Report(i);
          continue;
        }
        ++live;
        const Inode& in = *inodes[k];
        if (in.is_dir()) {
          ++subdirs;
          if (paths_.count(in.ino)) {
            // Moved from where the walk first found it to here, not yet walked: seen twice
            // in passing. Only a directory its first entry still names is reached twice.
            auto first = first_seen_.find(in.ino);
            if (first != first_seen_.end()) {
              auto then = EntryNow(first->second.first, first->second.second);
              if (then.ok() && *then != std::optional<uint64_t>(in.ino)) continue;
            }
            Report(Issue{"directory_cycle", child, child,
                         "directory " + std::to_string(in.ino) + " reached again (also at " +
                             paths_[in.ino] + ")"});
            continue;
          }
          paths_[in.ino] = child;
          first_seen_[in.ino] = {dir, e.name};
          queue.emplace_back(in.ino, child);
        } else {
          refs_[in.ino] += 1;
          walk_names_[in.ino].push_back({dir, e.name});
          if (!paths_.count(in.ino)) paths_[in.ino] = child;
          files_[in.ino] = in;
        }
      }
      auto d = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(dir); });
      if (d.ok() && !uncertain &&
          (d->entry_count != live || d->nlink != 2 + subdirs || !d->rename_marks.empty())) {
        // Rename marks outlive a renamer that crashed between its commit and settling them;
        // --repair settles them (README, "Renames keep the directories out of their
        // transactions").
        Issue i{"wrong_link_count", path, path,
                "directory has " + std::to_string(live) + " entries, " + std::to_string(subdirs) +
                    " subdirectories; record says count " + std::to_string(d->entry_count) +
                    ", nlink " + std::to_string(d->nlink) +
                    (d->rename_marks.empty() ? std::string()
                                             : ", " + std::to_string(d->rename_marks.size()) +
                                                   " rename(s) not yet settled")};
        bool right_after_all = false;
        {
          // The walk read the listing and the record at different moments, so a create, unlink
          // or rename in flight shows as a wrong count: counted again under the recount's rules
          // (a check only reads), and if changed lately, once it has been quiet (below).
          auto r = Sync<Result<bool>>([&]() { return Recount(dir); });
          i.fixed = o_.repair && r.ok();
          if (!r.ok() && r.status().code() == StatusCode::kBusy) {
            // Changed lately: counted again once it has been quiet long enough (below).
            last_deferred_ = std::chrono::steady_clock::now();
            deferred_.emplace_back(dir, issues_.size());
          } else if (!r.ok()) {
            i.detail += "; " + r.status().message();
          }
          // Counted again under the recount's rules and found right: the walk saw the
          // directory mid-change (its listing and its record read at different moments).
          right_after_all = r.ok() && !*r;
        }
        if (!right_after_all) Report(i);
      }
    }
    walked_whole_ = root_path == "/";
    if (!walked_whole_) return;
    // A check counts the names again as FixInode counts them, which --repair does below before
    // it changes anything: a check finds wrong what a repair would fix, and nothing else.
    std::vector<uint64_t> suspects;
    for (const auto& [ino, in] : files_) {
      if (in.nlink != refs_[ino]) suspects.push_back(ino);
    }
    if (!o_.repair) {
      suspects = AfterLooks<uint64_t>(suspects, [&](const uint64_t& ino) {
        // Plus the names the walk found that still name it without a back-pointer: a name
        // FixInode cannot see is still a link an unlink of another name would not count.
        auto now = NamesNow(ino, walk_names_[ino]);
        return now.ok() && now->first.nlink == now->second.size();
      });
    }
    for (uint64_t ino : suspects) {
      const Inode& in = files_[ino];
      Issue i{"wrong_link_count", paths_[ino], paths_[ino],
              "file has " + std::to_string(refs_[ino]) + " names; nlink says " +
                  std::to_string(in.nlink)};
      if (o_.repair) {
        auto r = Sync<Result<bool>>([&]() { return client_->ns().FixInode(ino); });
        i.fixed = r.ok();
        if (!r.ok()) i.detail += ": " + r.status().ToString();
        if (r.ok() && !*r) continue;  // right when checked again: a link or unlink since the walk
      }
      Report(i);
    }
  }

  // The inode entry (parent, name) names now, read through a quorum; nullopt if none.
  Result<std::optional<uint64_t>> EntryNow(uint64_t parent, const std::string& name) {
    return Sync<Result<std::optional<uint64_t>>>(
        [&]() { return client_->ns().EntryTarget(parent, name); });
  }

  // The names that really name inode `ino` now, among its back-pointers (as FixInode counts
  // them) and `also`, read through a quorum; with the inode as read first. The walk read names
  // and inodes at different moments: a link, an unlink or a move during it showed as a wrong
  // count.
  Result<std::pair<Inode, std::vector<BackPointer>>> NamesNow(
      uint64_t ino, const std::vector<BackPointer>& also = {}) {
    auto in = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(ino); });
    if (!in.ok()) return in.status();
    std::vector<BackPointer> candidates = in->parents, named;
    candidates.insert(candidates.end(), also.begin(), also.end());
    for (const auto& bp : candidates) {
      if (std::find(named.begin(), named.end(), bp) != named.end()) continue;
      auto e = EntryNow(bp.parent, bp.name);
      if (!e.ok()) return e.status();
      if (*e == std::optional<uint64_t>(ino)) named.push_back(bp);
    }
    return std::make_pair(std::move(*in), std::move(named));
  }

  // Whether inode `ino` is named now by an entry whose directory the walk reached, or is named
  // so itself (a directory moved from a part not yet walked into one already walked): the walk
  // missed it in passing. A subtree no walked directory leads to stays an orphan.
  bool NamedUnderWalked(uint64_t ino) {
    std::set<uint64_t> visited;  // each directory asked once: damage can loop or fan out
    return NamedUnderWalked(ino, &visited);
  }
  bool NamedUnderWalked(uint64_t ino, std::set<uint64_t>* visited) {
    if (!visited->insert(ino).second || visited->size() > 256) return false;
    auto now = NamesNow(ino);
    if (!now.ok()) return false;
    for (const auto& bp : now->second) {
      if (paths_.count(bp.parent) || NamedUnderWalked(bp.parent, visited)) return true;
    }
    return false;
  }

  // Whether a live inode the walk did not reach is no orphan after all: no longer live (an
  // unlink between its entry's removal and the inode's change), or named under a walked
  // directory (NamedUnderWalked). (--repair's FixInode leaves such an inode as it finds it.)
  bool NoOrphan(uint64_t ino) {
    auto in = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(ino); });
    if (in.ok() && in->state != InodeState::kLive) return true;
    return NamedUnderWalked(ino);
  }

  // Of `suspects`, those `cleared` does not clear in any of four looks, 500 ms apart (one
  // pause per look for all of them): what a check saw may be an operation in flight, and a
  // move can fall between two reads of one look.
  template <typename T>
  std::vector<T> AfterLooks(std::vector<T> suspects, const std::function<bool(const T&)>& cleared) {
    for (int look = 0; look < 4 && !suspects.empty(); ++look) {
      if (look > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
      std::vector<T> left;
      for (auto& x : suspects) {
        if (!cleared(x)) left.push_back(std::move(x));
      }
      suspects = std::move(left);
    }
    return suspects;
  }

  // --repair recounts and fixes; a check counts the same way and only reads. Either answers
  // whether the counts were wrong.
  kj::Promise<Result<bool>> Recount(uint64_t dir) {
    return o_.repair ? client_->ns().FixDirectoryCounts(dir)
                     : client_->ns().CheckDirectoryCounts(dir);
  }

  // Directories whose recount was refused because they changed lately (a create or unlink
  // might be between its two rounds): once the quiet period has passed since the last such
  // refusal (after a crash, about a minute), each is counted again, once. One still changing
  // (mounts at work in it) stays reported, with the reason.
  void RecountDeferred() {
    if (deferred_.empty()) return;
    const int64_t quiet_ns = client_->ns().options().RecountQuietNs();
    auto until = last_deferred_ + std::chrono::nanoseconds(quiet_ns) + std::chrono::seconds(1);
    auto now = std::chrono::steady_clock::now();
    if (until > now) {
      auto wait_s = std::chrono::duration_cast<std::chrono::seconds>(until - now).count() + 1;
      if (!o_.json) {
        std::fprintf(stderr,
                     "fsck: %zu director%s changed lately (a create or unlink may be half done); "
                     "waiting %lld s to recount %s\n",
                     deferred_.size(), deferred_.size() == 1 ? "y" : "ies",
                     static_cast<long long>(wait_s), deferred_.size() == 1 ? "it" : "them");
      }
      std::this_thread::sleep_until(until);
    }
    for (const auto& [dir, index] : deferred_) {
      auto r = Sync<Result<bool>>([&]() { return Recount(dir); });
      issues_[index].fixed = o_.repair && r.ok();
      if (!r.ok()) issues_[index].detail += "; " + r.status().message();
      // Right when counted: the walk had seen it mid-change.
      issues_[index].withdrawn = r.ok() && !*r;
      if (!o_.repair && !r.ok() && r.status().code() == StatusCode::kBusy) {
        // A check found nothing wrong: it saw a directory mounts kept changing and could not
        // count it. Said so, but not as an error (--repair reports it, as it cannot fix it).
        issues_[index].withdrawn = true;
        unverified_.push_back(issues_[index].path);
      }
    }
    issues_.erase(
        std::remove_if(issues_.begin(), issues_.end(), [](const Issue& i) { return i.withdrawn; }),
        issues_.end());
  }

  void CheckOrphans() {
    if (!walked_whole_) return;
    int64_t now = WallNs();
    int64_t skew = client_->ns().options().clock_skew_ns;
    std::vector<std::pair<std::string, Inode>> suspects;  // key, inode as read
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'I') continue;
      uint64_t ino = DecodeU64(std::string_view(key).substr(2, 8));
      if (ino == kRootIno || paths_.count(ino)) continue;
      auto in = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(ino); });
      if (!in.ok() || in->state == InodeState::kDying) continue;
      if (in->state == InodeState::kUnlinkedOpen) {
        if (in->lease_until_ns >= now) continue;  // still held open by a mount
        Issue i{"lease_expired", DescribeKey(key), "", "unlinked file whose mount's lease lapsed"};
        if (o_.repair) {
          auto r = Sync<Result<bool>>([&]() { return client_->ns().FixInode(ino); });
          i.fixed = r.ok();
          if (!r.ok()) i.detail += ": " + r.status().ToString();
        }
        Report(i);
        continue;
      }
      if (now <= in->birth_deadline_ns + skew) continue;  // a client may still be creating it
      suspects.emplace_back(key, std::move(*in));
    }
    if (!o_.repair) {  // moved or unlinked past the walk
      suspects = AfterLooks<std::pair<std::string, Inode>>(
          suspects, [&](const std::pair<std::string, Inode>& s) { return NoOrphan(s.second.ino); });
    }
    for (auto& [key, in_now] : suspects) {
      const Inode* in = &in_now;
      uint64_t ino = in->ino;
      // The name its creator meant to give it (its back-pointer).
      std::string meant;
      for (const auto& bp : in->parents) {
        auto p = paths_.find(bp.parent);
        std::string dir = p != paths_.end() ? p->second : "?" + std::to_string(bp.parent);
        meant += (meant.empty() ? "" : " ") + (dir == "/" ? "" : dir) + "/" + bp.name;
      }
      Issue i{"orphan_inode", DescribeKey(key), meant,
              std::string(in->is_dir() ? "directory" : "file") + " no entry names" +
                  (meant.empty() ? "" : " (its creator meant to name it " + meant + ")")};
      if (o_.repair) {
        auto r = Sync<Result<bool>>([&]() { return client_->ns().FixInode(ino); });
        i.fixed = r.ok();
        // Nothing to do when checked again: named meanwhile (a rename the walk crossed, or a
        // create that finished), so it was never an orphan.
        if (r.ok() && !*r) continue;
        if (!r.ok()) {
          i.detail += ": " + r.status().ToString();
        } else if (auto after = Sync<Result<Inode>>([&]() { return client_->ns().GetAttr(ino); });
                   after.ok() && after->state == InodeState::kDying) {
          // An empty directory, or a file whose name was removed or reused since its birth (an
          // unlink that stopped midway).
          i.detail +=
              in->is_dir()
                  ? "; empty: marked dying"
                  : "; its name was removed since its birth: unlink finished (marked dying)";
        } else {
          i.detail += "; adopted as /lost+found/#" + std::to_string(ino);
        }
      }
      Report(i);
    }
  }

  // ---- chunks ------------------------------------------------------------------------------

  void ScanChunks() {
    progress_.Phase("listing chunks", 0);
    for (const auto& node : up_) {
      std::optional<ChunkId> after;
      for (;;) {
        auto page = Sync<Result<std::pair<std::vector<ListedChunk>, bool>>>(
            [&]() { return client_->rpc().ListChunks(node, after, 4096); });
        if (!page.ok()) {
          operational_ = "listing chunks on " + node + ": " + page.status().ToString();
          return;
        }
        for (auto& c : page->first) {
          after = c.id;
          stored_[c.id][node] = c;
        }
        progress_.Tick(page->first.size());
        if (!page->second) break;
      }
    }
    // Referenced chunks: from every accepted value and every pending intent of every inode.
    struct PageOf {
      uint64_t ino = 0, index = 0;
      uint32_t chunk_size = 0;
    };
    std::map<ChunkId, PageOf> pages;
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'I') continue;
      bool undecodable = false;
      for (const auto& [node, r] : copies.by_node) {
        auto rec = Decode(r);
        if (!rec) {
          // A copy this fsck cannot read (damaged, or written by a newer version) may name
          // chunks: nothing can be collected until it is understood.
          if (r.value && !undecodable) {
            undecodable = true;
            unknown_references_ = true;
            Report(Issue{"record_undecodable", DescribeKey(key), "",
                         "a copy on " + node +
                             " cannot be decoded by this fsck; --gc will not "
                             "run while it may name chunks"});
          }
          continue;
        }
        // A dying inode (no entry names it, no mount holds it open) references nothing: its
        // chunks go once no live copy of any inode references them.
        auto mark = [&](const RecordBody& body) {
          const Inode* in = std::get_if<Inode>(&body);
          if (in && in->state != InodeState::kDying) {
            for (const auto& s : in->slots) {
              if (!s.hole()) referenced_[s.id].insert(in->ino);
            }
            for (const auto& p : in->pages) {
              referenced_[p.id].insert(in->ino);
              pages[p.id] = {in->ino, p.index, in->chunk_size};
            }
          }
        };
        mark(rec->body);
        if (rec->intent) mark(rec->intent->value);
      }
    }
    // The slots of layout pages (each page a chunk): read from any replica whose bytes match
    // the page's id. Every slot a page holds counts, even one past a truncation's clip.
    progress_.Phase("reading layout pages", pages.size());
    for (const auto& [id, where] : pages) {
      progress_.Tick();
      std::vector<std::string> holders;
      for (const auto& [node, c] : stored_[id]) holders.push_back(node);
      auto bytes = VerifiedBytes(id, holders);
      Result<std::vector<Slot>> slots =
          bytes.ok() ? DecodeLayoutPage(**bytes, where.ino, where.index, where.chunk_size)
                     : Result<std::vector<Slot>>(bytes.status());
      if (!slots.ok()) {
        // CheckChunks reports a page no replica holds as chunk_lost; a page some replica holds
        // but none can give back whole is reported here. Either way the chunks it names are
        // unknown, so --gc must not run.
        if (!stored_[id].empty()) {
          Report(Issue{"layout_page_unreadable", id.ToHex(), PathsOf(id),
                       "page " + std::to_string(where.index) + " of inode " +
                           std::to_string(where.ino) + ": " + slots.status().ToString()});
        }
        unknown_references_ = true;
        continue;
      }
      for (const auto& s : *slots) {
        if (!s.hole()) referenced_[s.id].insert(where.ino);
      }
    }
  }

  std::string PathsOf(const ChunkId& id) {
    std::string out;
    auto it = referenced_.find(id);
    if (it == referenced_.end()) return out;
    for (uint64_t ino : it->second) {
      auto p = paths_.find(ino);
      out += (out.empty() ? "" : " ") +
             (p != paths_.end() ? p->second : "inode " + std::to_string(ino));
    }
    return out;
  }

  Result<std::shared_ptr<const std::string>> VerifiedBytes(
      const ChunkId& id, const std::vector<std::string>& holders) {
    for (const auto& node : holders) {
      auto r = Sync<Result<std::string>>([&]() { return client_->rpc().GetChunk(node, id); });
      if (r.ok() && ChunkId::Of(*r) == id) {
        return std::make_shared<const std::string>(std::move(r).value());
      }
    }
    return Status(StatusCode::kCorruption, "no replica whose bytes match the chunk id");
  }

  // --deep: every replica of every referenced chunk is read and hashed, 2 x --jobs reads in
  // flight and the hashing spread over every core, so the disks, not one CPU, set the pace.
  // Fills deep_corrupt_ with the replicas whose bytes do not match their id.
  void DeepVerify() {
    std::vector<std::pair<ChunkId, std::string>> work;
    for (const auto& [id, inos] : referenced_) {
      for (const auto& [node, c] : stored_[id]) work.emplace_back(id, node);
    }
    progress_.Phase("hashing replicas", work.size());
    const size_t window = static_cast<size_t>(std::max(1, o_.jobs)) * 2;
    for (size_t next = 0; next < work.size();) {
      size_t end = std::min(work.size(), next + window);
      auto bad = Sync<std::vector<bool>>([&]() {
        kj::Vector<kj::Promise<bool>> all;
        for (size_t k = next; k < end; ++k) {
          ChunkId id = work[k].first;
          all.add(client_->rpc()
                      .GetChunk(work[k].second, id)
                      .then([this, id](Result<std::string>&& r) -> kj::Promise<bool> {
                        // A replica the disk cannot read is as bad as wrong bytes; any
                        // other failure (down, busy) is retried by the home check below.
                        if (!r.ok()) return r.status().code() == StatusCode::kCorruption;
                        auto bytes = std::make_shared<std::string>(std::move(r).value());
                        return client_->hashers().Run<bool>(
                            [bytes, id]() { return ChunkId::Of(*bytes) != id; });
                      }));
        }
        return kj::joinPromises(all.releaseAsArray()).then([](kj::Array<bool>&& rs) {
          return std::vector<bool>(rs.begin(), rs.end());
        });
      });
      for (size_t k = next; k < end; ++k) {
        if (bad[k - next]) deep_corrupt_[work[k].first].insert(work[k].second);
      }
      progress_.Tick(end - next);
      next = end;
    }
  }

  void CheckChunks() {
    if (o_.deep) DeepVerify();
    progress_.Phase("checking chunks", referenced_.size());
    for (const auto& [id, inos] : referenced_) {
      progress_.Tick();
      auto groups = ReplicaGroupsFor(*config_, id.view());
      std::vector<std::string> homes = o_.rebalance ? groups.front().members : ReplicaUnion(groups);
      auto& copies = stored_[id];
      std::vector<std::string> holders;
      for (const auto& [node, c] : copies) holders.push_back(node);
      std::set<std::string> corrupt = deep_corrupt_[id];
      std::vector<std::string> good;
      for (const auto& n : holders) {
        if (!corrupt.count(n)) good.push_back(n);
      }
      std::string paths = PathsOf(id);
      if (good.empty()) {
        Report(Issue{"chunk_lost", id.ToHex(), paths, "no good replica on any reachable node"});
        continue;
      }
      std::vector<std::string> missing;
      for (const auto& h : homes) {
        if (down_.count(h)) continue;
        if (corrupt.count(h)) {
          missing.push_back(h);
        } else if (!copies.count(h)) {
          // A put in flight while the node was listed lands moments later: ask again.
          auto has =
              Sync<Result<std::vector<bool>>>([&]() { return client_->rpc().HasChunks(h, {id}); });
          if (!has.ok() || has->size() != 1 || !has->front()) missing.push_back(h);
        }
      }
      std::vector<std::string> away;
      for (const auto& n : holders) {
        if (std::find(homes.begin(), homes.end(), n) == homes.end()) away.push_back(n);
      }
      std::set<std::string> still_corrupt;  // the server could not quarantine its copy
      for (const auto& n : corrupt) {
        Issue i{"chunk_corrupt", id.ToHex(), paths, "replica on " + n + " does not match its hash"};
        if (o_.repair) {
          // The server hashes its copy again and moves it aside if it is bad; the copy is then
          // replaced below with verified bytes (if home) or dropped (if away). A put onto a bad
          // copy that is still in place would only refresh it.
          auto r = Sync<Result<bool>>([&]() { return client_->rpc().ReportCorrupt(n, id); });
          i.fixed = r.ok();
          if (!r.ok()) {
            still_corrupt.insert(n);
            i.detail += "; could not have it moved aside: " + r.status().ToString();
          }
        }
        Report(i);
      }
      bool missing_fixed = missing.empty();
      if (!missing.empty()) {
        std::string who;
        for (const auto& m : missing) who += (who.empty() ? "" : ",") + m;
        Issue i{"chunk_under_replicated", id.ToHex(), paths,
                std::to_string(homes.size() - missing.size()) + " of " +
                    std::to_string(homes.size()) + " home replicas; missing on " + who};
        if (o_.repair || o_.rebalance) {
          auto bytes = VerifiedBytes(id, good);
          bool ok = bytes.ok();
          for (const auto& m : missing) {
            if (!ok) break;
            if (still_corrupt.count(m)) {
              ok = false;
              break;
            }
            Status s = Sync<Status>([&]() { return client_->rpc().PutChunk(m, id, *bytes, ""); });
            ok = s.ok();
          }
          i.fixed = ok;
          missing_fixed = ok;
        }
        Report(i);
      }
      if (!away.empty()) {
        std::string who;
        for (const auto& a : away) who += (who.empty() ? "" : ",") + a;
        Issue i{"chunk_away_from_home", id.ToHex(), paths,
                "stored on " + who + " outside its home set"};
        // An away copy may be the only one a down or unrepaired home lacks: drop it only once
        // every home holds a good copy.
        bool homes_complete = missing_fixed;
        for (const auto& h : homes) homes_complete &= down_.count(h) == 0;
        if ((o_.repair || o_.rebalance) && !homes_complete) {
          i.detail += "; kept until every home replica is good";
        } else if (o_.repair || o_.rebalance) {
          bool ok = true;
          for (const auto& a : away) {
            auto r = Sync<Result<bool>>(
                [&]() { return client_->rpc().DeleteChunk(a, id, WallNs(), 0); });
            ok &= r.ok();
          }
          i.fixed = ok;
        }
        Report(i);
      }
    }
  }

  // ---- gc ----------------------------------------------------------------------------------

  void CollectGarbage() {
    if (!down_.empty()) {
      operational_ = "--gc runs only when every node answers";
      return;
    }
    // The mark must have seen every record and every stored chunk.
    if (!operational_.empty()) return;
    if (no_file_system_ && !stored_.empty()) {
      // No metadata at all, yet chunks: a lost or misplaced metadata store, not garbage.
      operational_ = "--gc: chunks are stored but no node holds any metadata record";
      return;
    }
    if (unknown_references_) {
      operational_ =
          "--gc needs every inode record and layout page read, and some could not be (see above)";
      return;
    }
    int64_t grace_ns = static_cast<int64_t>(o_.grace_s * 1e9);
    if (grace_ns < kMinGcGraceNs && !o_.no_writers) {
      operational_ = "--grace " + std::to_string(static_cast<int64_t>(o_.grace_s)) +
                     " s is shorter than mounts refresh their chunks for (" +
                     std::to_string(kMinGcGraceNs / 1'000'000'000) +
                     " s): a chunk a mount is about to publish could be deleted; use a longer "
                     "grace, or pass --no-writers if no mount is writing";
      return;
    }
    progress_.Phase("collecting garbage", 0);
    for (const auto& [id, copies] : stored_) {
      if (referenced_.count(id)) continue;
      for (const auto& [node, c] : copies) {
        auto r = Sync<Result<bool>>(
            [&]() { return client_->rpc().DeleteChunk(node, id, mark_start_ns_, grace_ns); });
        if (!r.ok()) {
          GcFailed("deleting chunk " + id.ToHex() + " on " + node, r.status());
        } else if (*r) {
          ++gc_chunks_;
          gc_bytes_ += c.size;
        }
        progress_.Tick();
      }
    }
    // Decided transactions older than the grace period whose intents are all resolved.
    int64_t now = WallNs();
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'X') continue;
      const ScannedRecord* best = Latest(copies);
      auto rec = Decode(*best);
      if (!rec || !rec->txn() || rec->txn()->state == TxnState::kPending) continue;
      if (rec->txn()->created_ns > now - grace_ns) continue;
      // No copy of any participant, on any replica, may still carry its intent: a lower-ballot
      // copy could otherwise be adopted later and name a transaction that no longer exists.
      bool resolved = true;
      for (const auto& p : rec->txn()->participants) {
        auto it = records_.find(p);
        if (it == records_.end()) continue;
        for (const auto& [node, copy] : it->second.by_node) {
          auto prec = Decode(copy);
          if (prec && prec->intent && prec->intent->txn == rec->txn()->id) resolved = false;
        }
      }
      // Nor any copy of a directory it marked still carry the mark (settled by reading X).
      for (uint64_t dir : rec->txn()->marked_dirs) {
        auto it = records_.find(InodeKey(dir));
        if (it == records_.end()) continue;
        for (const auto& [node, copy] : it->second.by_node) {
          auto prec = Decode(copy);
          if (prec && HasRenameMark(*prec, rec->txn()->id)) resolved = false;
        }
      }
      if (!resolved || !DeleteEverywhere(key, best->accepted)) continue;
      ++gc_records_;
    }
    // Entries a live inode's back-pointer names: such a tombstone is kept, since it is how
    // FixInode tells an unlink that stopped midway (finished: dying) from a create that never
    // named its inode (adopted). Without it a deleted file would come back in lost+found.
    // (Copies outside the inode's replica sets count not: no read hears them, and they go
    // with the inode below.)
    std::set<std::string> named_by_live;
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'I') continue;
      auto members = ReplicaUnion(ReplicaGroupsFor(*config_, RecordPlacementKey(key)));
      for (const auto& [node, copy] : copies.by_node) {
        if (std::find(members.begin(), members.end(), node) == members.end()) continue;
        auto rec = Decode(copy);
        const Inode* in = rec ? rec->inode() : nullptr;
        if (!in || in->state == InodeState::kDying) continue;
        for (const auto& bp : in->parents) named_by_live.insert(DirEntryKey(bp.parent, bp.name));
      }
    }
    // Tombstones (entries removed) and dead inodes (dying, no entry found by the walk) older
    // than the grace period. Dead inodes need the whole namespace walked.
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'D' && key[0] != 'I') continue;
      if (key[0] == 'D' && named_by_live.count(key)) continue;
      const ScannedRecord* best = Latest(copies);
      if (!best->value) continue;  // a promise only
      auto rec = Decode(*best);
      if (!rec || rec->intent) continue;
      bool old_enough = false;
      if (key[0] == 'D') {
        old_enough = rec->absent() && rec->removed_ns > 0 && rec->removed_ns < now - grace_ns;
      } else if (const Inode* in = rec->inode()) {
        old_enough = walked_whole_ && in->state == InodeState::kDying && in->ino != kRootIno &&
                     paths_.count(in->ino) == 0 && in->ctime_ns < now - grace_ns;
      }
      if (!old_enough || !DeleteEverywhere(key, best->accepted)) continue;
      ++(key[0] == 'D' ? gc_tombstones_ : gc_dead_inodes_);
      ++gc_records_;
    }
    // Lock tables (F/) whose locks all lapsed, last changed before the grace period: their
    // mounts are gone or unlocked (a lapsed lock no longer counts for anyone).
    const int64_t skew_ns = NamespaceOptions{}.clock_skew_ns;
    for (const auto& [key, copies] : records_) {
      if (key[0] != 'F') continue;
      const ScannedRecord* best = Latest(copies);
      if (!best->value) continue;
      auto rec = Decode(*best);
      const FileLocks* t = rec ? rec->file_locks() : nullptr;
      if (!t || t->changed_ns >= now - grace_ns || !LocksAllExpired(*t, now - grace_ns, skew_ns))
        continue;
      if (!DeleteEverywhere(key, best->accepted)) continue;
      ++gc_lock_tables_;
      ++gc_records_;
    }
  }

  // deleteRecord on every replica, only if every replica holds the same accepted ballot; each
  // replica deletes only if its row is still as scanned, and every floor rises to the highest
  // promise seen on any replica (common/acceptor.h).
  bool DeleteEverywhere(const std::string& key, Ballot ballot) {
    auto members = ReplicaUnion(ReplicaGroupsFor(*config_, RecordPlacementKey(key)));
    auto it = records_.find(key);
    Ballot fence;
    for (const auto& m : members) {
      auto c = it->second.by_node.find(m);
      if (c == it->second.by_node.end() || c->second.accepted != ballot) return false;
      fence = MaxBallot(fence, c->second.promised);
    }
    // Copies outside the key's replica sets go first (CheckAwayCopies): left behind, such a copy
    // would be the key's only one, and the rebalance of a change that makes its node a replica
    // again would bring the removed key back. One newer than the replicas' is not this GC's.
    std::vector<std::pair<std::string, const ScannedRecord*>> away;
    for (const auto& [node, c] : it->second.by_node) {
      if (std::find(members.begin(), members.end(), node) != members.end()) continue;
      if (ballot < c.accepted) return false;
      fence = MaxBallot(fence, c.promised);
      away.emplace_back(node, &c);
    }
    for (const auto& [node, c] : away) {
      auto r = Sync<Result<bool>>([&]() {
        return client_->rpc().DeleteRecord(node, key, c->accepted, c->promised, fence);
      });
      if (!r.ok()) GcFailed("deleting record " + DescribeKey(key) + " on " + node, r.status());
      if (!r.ok() || !*r) return false;
    }
    bool ok = true;
    for (const auto& m : members) {
      Ballot promised = it->second.by_node.find(m)->second.promised;
      auto r = Sync<Result<bool>>(
          [&]() { return client_->rpc().DeleteRecord(m, key, ballot, promised, fence); });
      if (!r.ok()) GcFailed("deleting record " + DescribeKey(key) + " on " + m, r.status());
      ok &= r.ok() && *r;
    }
    return ok;
  }

  // A delete that failed (not one refused because the row or chunk changed): the run did not
  // do what it set out to, so it ends with exit 8 and says where; the next run catches up.
  void GcFailed(const std::string& what, const Status& why) {
    ++gc_failures_;
    if (operational_.empty()) {
      operational_ = "--gc: " + what + ": " + why.ToString();
    }
  }

  // ---- rejoin and rebalance ----------------------------------------------------------------

  void FinishRejoins() {
    for (const auto& node : rejoining_) {
      Issue i{"node_rejoining", node, "", "node lost its data and is refilled before it votes"};
      // Only after a run that saw everything: a node whose records or chunks could not be
      // listed may hold copies the rejoining node was never given.
      bool clean = operational_.empty() && !unknown_references_;
      for (const auto& is : issues_) {
        clean &= is.fixed || is.kind == "node_rejoining" || is.kind == "record_away_from_home";
      }
      if (!clean) i.detail += "; not finished: the run left errors (see above)";
      if (clean) {
        Status s = Sync<Status>([&]() { return client_->rpc().FinishRejoin(node); });
        i.fixed = s.ok();
        if (!s.ok()) i.detail += ": " + s.ToString();
      }
      Report(i);
    }
  }

  void FinishRebalance() {
    if (!config_->InTransition()) {
      Report(Issue{"rebalance_not_needed", o_.cluster_file, "",
                   "no `previous` line: nothing to move"});
      issues_.back().fixed = true;
      return;
    }
    // Only after a run that listed every record and chunk and moved all of them: a chunk a
    // failed listing hid may live only on a leaving node.
    bool clean = operational_.empty() && !unknown_references_;
    // (Copies kept on nodes outside every replica set of both memberships move nowhere.)
    for (const auto& is : issues_) clean &= is.fixed || is.kind == "record_away_from_home";
    if (!clean) return;
    ClusterConfig next = *config_;
    next.epoch += 1;
    next.previous.clear();
    next.leaving.clear();
    std::string path = o_.cluster_file + ".next";
    Status written = WriteFileDurably(path, next.Format());
    if (!written.ok()) {
      operational_ = "rebalance moved everything, but writing " + path +
                     " failed: " + written.ToString() + "; run it again";
      return;
    }
    next_config_path_ = path;
  }

  // Writes `text` to a temporary file beside `path`, syncs it and renames it over `path`, so
  // `path` is either absent, the old file or the whole new one.
  static Status WriteFileDurably(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Status(StatusCode::kIoError, tmp + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return Status(StatusCode::kIoError, tmp + ": " + std::strerror(e));
      }
      done += static_cast<size_t>(n);
    }
    int synced = ::fsync(fd), e = errno;
    if (::close(fd) != 0 && synced == 0) synced = -1, e = errno;
    if (synced != 0) {
      ::unlink(tmp.c_str());
      return Status(StatusCode::kIoError, tmp + ": " + std::strerror(e));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      return Status(StatusCode::kIoError, path + ": " + std::strerror(e));
    }
    return Status::Ok();
  }

  // ---- output ------------------------------------------------------------------------------

  int Finish(bool operational_only) {
    progress_.Done();
    int found = 0, fixed = 0;
    std::map<std::string, std::pair<int, int>> by_kind;
    for (const auto& i : issues_) {
      if (i.kind == "rebalance_not_needed") continue;
      ++found;
      fixed += i.fixed;
      by_kind[i.kind].first++;
      by_kind[i.kind].second += i.fixed;
    }
    int code = !operational_.empty() ? 8 : found == 0 ? 0 : fixed == found ? 1 : 4;
    (void)operational_only;
    if (o_.json) {
      JsonWriter j;
      j.BeginObject();
      j.Key("exit_code").Number(code);
      if (!operational_.empty()) j.Key("operational_error").String(operational_);
      j.Key("issues").BeginArray();
      for (const auto& i : issues_) {
        j.BeginObject();
        j.Key("kind").String(i.kind);
        j.Key("subject").String(i.subject);
        j.Key("path").String(i.path);
        j.Key("detail").String(i.detail);
        j.Key("fixed").Bool(i.fixed);
        j.EndObject();
      }
      j.EndArray();
      j.Key("unverified_directories").BeginArray();
      for (const auto& p : unverified_) j.String(p);
      j.EndArray();
      j.Key("summary").BeginObject();
      j.Key("records").Number(static_cast<double>(records_.size()));
      j.Key("files").Number(static_cast<double>(files_.size()));
      j.Key("directories").Number(static_cast<double>(paths_.size() - files_.size()));
      j.Key("chunks_referenced").Number(static_cast<double>(referenced_.size()));
      j.Key("chunks_stored").Number(static_cast<double>(stored_.size()));
      j.Key("found").Number(found);
      j.Key("fixed").Number(fixed);
      j.Key("gc_chunks_deleted").Number(static_cast<double>(gc_chunks_));
      j.Key("gc_records_deleted").Number(static_cast<double>(gc_records_));
      j.Key("gc_tombstones_deleted").Number(static_cast<double>(gc_tombstones_));
      j.Key("gc_dead_inodes_deleted").Number(static_cast<double>(gc_dead_inodes_));
      j.Key("gc_lock_tables_deleted").Number(static_cast<double>(gc_lock_tables_));
      j.Key("gc_delete_failures").Number(static_cast<double>(gc_failures_));
      j.EndObject();
      if (!next_config_path_.empty()) j.Key("next_cluster_file").String(next_config_path_);
      j.EndObject();
      std::printf("%s\n", j.str().c_str());
      return code;
    }
    for (const auto& i : issues_) {
      if (i.kind == "rebalance_not_needed") continue;
      std::printf("%-8s %-24s %s%s%s%s\n", i.fixed ? "FIXED" : "ERROR", i.kind.c_str(),
                  i.subject.c_str(),
                  i.path.empty() || i.path == i.subject ? "" : ("  [" + i.path + "]").c_str(),
                  i.detail.empty() ? "" : ": ", i.detail.c_str());
    }
    if (!operational_.empty()) std::printf("OPERATIONAL ERROR: %s\n", operational_.c_str());
    for (const auto& p : unverified_) {
      std::printf(
          "NOTE     %-24s %s: changed throughout the check (mounts at work in it); its "
          "counts were not verified\n",
          "unverified_directory", p.c_str());
    }
    std::printf("\n%-28s %8s %8s %8s\n", "check", "found", "fixed", "left");
    for (const auto& [kind, fx] : by_kind) {
      std::printf("%-28s %8d %8d %8d\n", kind.c_str(), fx.first, fx.second, fx.first - fx.second);
    }
    std::printf("%-28s %8d %8d %8d\n", "total", found, fixed, found - fixed);
    std::printf(
        "\nscanned %zu records, %zu files, %zu directories, %zu chunks referenced, %zu stored",
        records_.size(), files_.size(), paths_.size() - files_.size(), referenced_.size(),
        stored_.size());
    if (o_.gc) {
      std::printf(
          "; gc deleted %llu chunks (%llu bytes), %llu records (%llu tombstones, %llu dead "
          "inodes)",
          static_cast<unsigned long long>(gc_chunks_), static_cast<unsigned long long>(gc_bytes_),
          static_cast<unsigned long long>(gc_records_),
          static_cast<unsigned long long>(gc_tombstones_),
          static_cast<unsigned long long>(gc_dead_inodes_));
      if (gc_failures_ > 0) {
        std::printf("; %llu deletes failed", static_cast<unsigned long long>(gc_failures_));
      }
    }
    std::printf("\n");
    if (!next_config_path_.empty()) {
      std::printf(
          "rebalance done: install %s (epoch %llu, no `previous`) on every node and client\n",
          next_config_path_.c_str(), static_cast<unsigned long long>(config_->epoch + 1));
    }
    // --repair cannot bring a node back: say so first when one is down.
    const char* left = down_.empty() ? "errors left uncorrected (run with --repair)"
                                     : "errors left uncorrected (start the nodes that are "
                                       "down, then run with --repair)";
    std::printf("exit %d: %s\n", code,
                code == 0   ? "clean"
                : code == 1 ? "errors found and all corrected"
                : code == 4 ? left
                            : "operational error");
    return code;
  }

  FsckOptions o_;
  std::shared_ptr<const ClusterConfig> config_;
  std::unique_ptr<ClusterClient> client_;
  Progress progress_;
  int64_t mark_start_ns_ = 0;
  std::vector<std::string> up_;
  std::set<std::string> down_, rejoining_;
  std::string operational_;
  std::map<std::string, RecordCopies> records_;
  bool settle_waited_ = false;             // StillBehind's pause, taken once
  std::vector<std::string> unverified_;    // directories a check could not count (changing)
  std::map<std::string, AwayTally> away_;  // by node
  std::vector<std::pair<std::string, std::string>> away_dropped_;  // (key, node)
  std::map<uint64_t, std::string> paths_;
  std::map<uint64_t, std::pair<uint64_t, std::string>> first_seen_;  // directory -> its entry
  std::map<uint64_t, std::vector<BackPointer>> walk_names_;  // file -> the names the walk found
  std::map<uint64_t, uint32_t> refs_;
  std::map<uint64_t, Inode> files_;
  bool walked_whole_ = false;
  std::map<ChunkId, std::map<std::string, ListedChunk>> stored_;
  std::map<ChunkId, std::set<uint64_t>> referenced_;
  bool no_file_system_ = false;      // no record holds a value: nothing was ever mounted
  bool unknown_references_ = false;  // a layout page could not be read: --gc must not run
  std::map<ChunkId, std::set<std::string>> deep_corrupt_;  // --deep: replicas that fail the hash
  std::vector<Issue> issues_;
  std::vector<size_t> txn_issue_indices_;
  std::vector<std::pair<uint64_t, size_t>> deferred_;  // (directory, its issue) to recount
  std::chrono::steady_clock::time_point last_deferred_;
  uint64_t gc_chunks_ = 0, gc_bytes_ = 0, gc_records_ = 0, gc_tombstones_ = 0, gc_dead_inodes_ = 0,
           gc_lock_tables_ = 0, gc_failures_ = 0;
  std::string next_config_path_;
};

}  // namespace

int RunFsck(const FsckOptions& options) {
  auto config = ClusterConfig::Load(options.cluster_file);
  if (!config.ok()) {
    std::fprintf(stderr, "quorumfs fsck: %s\n", config.status().message().c_str());
    return 8;
  }
  Fsck fsck(options, std::make_shared<const ClusterConfig>(*config));
  return fsck.Run();
}

}  // namespace quorumfs
