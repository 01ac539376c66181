#include "common/namespace.h"

#include <kj/vector.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "common/placement.h"
#include "common/record.h"
#include "common/record_key.h"

namespace quorumfs {

namespace {

class SystemClock : public WallClock {
 public:
  int64_t NowNs() override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

Status Conflict(const std::string& why) { return Status(StatusCode::kConflict, why); }
bool IsConflict(const Status& s) { return s.code() == StatusCode::kConflict; }

// A change function: the current record (no foreign intent) -> the new record, nullopt to keep
// it, or an error that aborts the change.
using RecordFn = std::function<Result<std::optional<MetaRecord>>(const MetaRecord&)>;

MetaRecord WithBody(RecordBody body) {
  MetaRecord r;
  r.body = std::move(body);
  return r;
}

void RemoveBackPointer(Inode& inode, uint64_t parent, const std::string& name) {
  auto it = std::find(inode.parents.begin(), inode.parents.end(), BackPointer{parent, name});
  if (it != inode.parents.end()) inode.parents.erase(it);
}

}  // namespace

WallClock& SystemWallClock() {
  static SystemClock clock;
  return clock;
}

Status ValidateName(const std::string& name) {
  if (name.empty()) return Status(StatusCode::kNotFound, "empty name");
  if (name.size() > kMaxNameSize) {
    return Status(StatusCode::kNameTooLong,
                  "name of " + std::to_string(name.size()) + " bytes (max 255)");
  }
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    return InvalidArgument("name contains '/' or NUL");
  }
  if (name == "." || name == "..") return InvalidArgument("'.' and '..' are not entries");
  return Status::Ok();
}

class Namespace::Impl {
 public:
  Impl(Proposer& proposer, InodeAllocator& allocator, RecordLister& lister, kj::Timer& timer,
       WallClock& clock, const NamespaceOptions& options)
      : proposer_(proposer),
        allocator_(allocator),
        lister_(lister),
        timer_(timer),
        clock_(clock),
        o_(options),
        fibers_(options.fiber_stack) {
    std::random_device rd;
    rng_.seed(options.client_id ? options.client_id * 0x9E3779B97F4A7C15ull
                                : (static_cast<uint64_t>(rd()) << 32) ^ rd());
  }

  template <typename T>
  kj::Promise<T> Run(std::function<T(kj::WaitScope&)> fn) {
    return fibers_.startFiber([fn = std::move(fn)](kj::WaitScope& ws) { return fn(ws); });
  }

  uint64_t NewId() { return rng_() | 1; }
  int64_t Now() { return clock_.NowNs(); }

  // A create changes its parent's count in its first round and writes the entry in its second;
  // a last-link unlink writes the tombstone first and lowers the count second. fsck recounts a
  // directory only when it has been quiet for longer than the birth grace (its ctime and every
  // tombstone in it older than that, plus twice the skew bound), so an operation whose second
  // round comes later than the birth grace after its first (by its own clock, less the skew
  // bound) may meet a recount that already left it out: it then gives up that second round's
  // count change (a create removes its entry, an unlink skips the count drop), which leaves a
  // count high, never low.
  bool LateSecondRound(int64_t first_round_ns) {
    return Now() > first_round_ns + o_.birth_grace_ns - o_.clock_skew_ns;
  }
  int64_t RecountQuietNs() const { return o_.RecountQuietNs(); }

  // Every record value the namespace writes goes through here: a record that is (or becomes) a
  // tombstone keeps the time it first became one, which `fsck --gc` measures its grace from.
  static std::string Encode(MetaRecord rec, int64_t now) {
    if (rec.absent() && rec.removed_ns == 0) rec.removed_ns = now;
    return rec.Encode();
  }

  void Backoff(kj::WaitScope& ws, int attempt) {
    int64_t base = o_.busy_wait / kj::NANOSECONDS;
    int64_t hi = std::min<int64_t>(base << std::min(attempt, 6), 100'000'000);
    std::uniform_int_distribution<int64_t> d(base / 2, std::max(base, hi));
    timer_.afterDelay(d(rng_) * kj::NANOSECONDS).wait(ws);
  }

  // ---- records -------------------------------------------------------------------------------

  kj::Promise<Result<RecordValue>> Read(const std::string& key) {
    return (o_.observe_only ? proposer_.ReadWithoutWrite(key) : proposer_.Read(key))
        .then([this, key](Result<RecordValue>&& r) {
          if (r.ok()) SawVersion(key, r->version);
          return kj::mv(r);
        });
  }

  // ---- this client's own directory changes (RecentOwnDirectory) ------------------------------
  //
  // By inode key: the highest version of the record this client has seen, and the directory
  // inode its own change left at that version (none once a newer version was read, an intent
  // written, or a change's outcome was unknown). Versions only rise, so a result that comes
  // back late never replaces a newer one. An entry exists from the start of each change of an
  // inode key until it ends (`changing`), so that the versions read or written meanwhile are
  // recorded: a change's result may come back after a read of a newer version (its accept was
  // chosen, the replies were lost, and the retry found its change id), and must not be kept
  // then. A change started after a read returns a newer version than that read, so entries no
  // change is using may be dropped.
  struct OwnDirectory {
    uint64_t version = 0;
    std::optional<Inode> inode;
    kj::TimePoint at = kj::origin<kj::TimePoint>();
    int changing = 0;
  };
  std::unordered_map<std::string, OwnDirectory> own_dirs_;

  // Marks a change of `key` in flight for its lifetime (inode keys only).
  class OwnChange {
   public:
    OwnChange(Impl& impl, const std::string& key) : impl_(impl), key_(key) {
      if (!IsInodeKey(key)) return;
      auto it = impl_.own_dirs_.find(key);
      if (it == impl_.own_dirs_.end()) {
        if (impl_.own_dirs_.size() >= 4096) impl_.DropIdleOwn();
        it = impl_.own_dirs_.emplace(key, OwnDirectory{}).first;
      }
      ++it->second.changing;
      active_ = true;
    }
    ~OwnChange() {
      if (!active_) return;
      auto it = impl_.own_dirs_.find(key_);
      if (it != impl_.own_dirs_.end()) --it->second.changing;
    }
    OwnChange(const OwnChange&) = delete;
    OwnChange& operator=(const OwnChange&) = delete;

   private:
    Impl& impl_;
    const std::string& key_;
    bool active_ = false;
  };
  void DropIdleOwn() {
    for (auto it = own_dirs_.begin(); it != own_dirs_.end();) {
      it = it->second.changing > 0 ? std::next(it) : own_dirs_.erase(it);
    }
  }

  void SawVersion(const std::string& key, uint64_t version) {
    if (own_dirs_.empty()) return;
    auto it = own_dirs_.find(key);
    if (it == own_dirs_.end() || version <= it->second.version) return;
    it->second.version = version;
    it->second.inode.reset();
  }
  void ForgetOwn(const std::string& key) {
    auto it = own_dirs_.find(key);
    if (it != own_dirs_.end()) it->second.inode.reset();
  }
  // The value a change of this client's left (or found, if it changed nothing) at `version`.
  // Kept only if `key` is a directory's inode and no newer version was seen during the change.
  void NoteOwn(const std::string& key, uint64_t version, const MetaRecord& rec) {
    auto it = own_dirs_.find(key);
    if (it == own_dirs_.end() || version < it->second.version) return;
    it->second.version = version;
    const Inode* in = rec.inode();
    if (!in || !in->is_dir() || rec.intent) return it->second.inode.reset();
    it->second.inode = *in;
    it->second.at = timer_.now();
  }
  // After this client wrote or resolved an intent on `key`: nothing to answer from until its
  // next plain change, and a late result older than this write is not kept.
  void SawIntentWrite(const std::string& key, const Result<RecordValue>& r) {
    if (r.ok()) SawVersion(key, r->version);
    ForgetOwn(key);
  }

  std::optional<Inode> RecentOwnDirectory(uint64_t ino, kj::Duration max_age,
                                          kj::Duration* age) const {
    auto it = own_dirs_.find(InodeKey(ino));
    if (it == own_dirs_.end() || !it->second.inode) return std::nullopt;
    kj::Duration a = timer_.now() - it->second.at;
    if (a >= max_age) return std::nullopt;
    if (age) *age = a;
    return it->second.inode;
  }

  // Read of many keys at once (batched per node; see Proposer::ReadMany).
  std::vector<Result<RecordValue>> ReadMany(kj::WaitScope& ws, std::vector<std::string> keys) {
    if (!o_.observe_only) {
      auto out = proposer_.ReadMany(keys).wait(ws);
      for (size_t i = 0; i < out.size() && i < keys.size() && !own_dirs_.empty(); ++i) {
        if (out[i].ok()) SawVersion(keys[i], out[i]->version);
      }
      return out;
    }
    kj::Vector<kj::Promise<Result<RecordValue>>> reads(keys.size());
    for (const auto& key : keys) reads.add(proposer_.ReadWithoutWrite(key));
    auto done = kj::joinPromises(reads.releaseAsArray()).wait(ws);
    std::vector<Result<RecordValue>> out;
    out.reserve(done.size());
    for (auto& r : done) out.push_back(std::move(r));
    return out;
  }

  Result<MetaRecord> ReadRaw(kj::WaitScope& ws, const std::string& key) {
    auto r = Read(key).wait(ws);
    if (!r.ok()) return r.status();
    return MetaRecord::DecodeOptional(r->payload);
  }

  // A transaction's state as readers must take it; aborts it first if pending past its
  // deadline and `abort_if_expired`.
  Result<TxnState> TxnFate(kj::WaitScope& ws, uint64_t txn, bool abort_if_expired) {
    QFS_ASSIGN_OR_RETURN(MetaRecord x, ReadRaw(ws, TxnKey(txn)));
    const Txn* t = x.txn();
    if (!t) {
      // X is written before any intent and removed only after every intent is resolved.
      return Internal("intent names transaction " + std::to_string(txn) + " with no record");
    }
    if (t->state != TxnState::kPending || !abort_if_expired || o_.observe_only ||
        Now() <= t->deadline_ns) {
      return t->state;
    }
    return SetTxnState(ws, txn, TxnState::kAborted);
  }

  // CAS X/txn from pending to `to`; returns the state it ends in (the other decision if someone
  // decided first).
  Result<TxnState> SetTxnState(kj::WaitScope& ws, uint64_t txn, TxnState to) {
    for (int attempt = 0;; ++attempt) {
      auto r = proposer_
                   .Change(TxnKey(txn),
                           [to](const std::optional<std::string>& payload) {
                             auto rec = MetaRecord::DecodeOptional(payload);
                             if (!rec.ok()) return Decision::Abort(rec.status());
                             Txn* t = rec->txn();
                             if (!t) return Decision::Abort(Internal("transaction record missing"));
                             if (t->state != TxnState::kPending) return Decision::Keep();
                             t->state = to;
                             return Decision::Write(rec->Encode());
                           })
                   .wait(ws);
      if (r.ok()) {
        auto rec = MetaRecord::DecodeOptional(r->payload);
        if (!rec.ok()) return rec.status();
        return rec->txn()->state;
      }
      // The CAS is idempotent by state, so an unknown outcome is settled by trying again.
      if (r.status().code() != StatusCode::kUnknownOutcome || attempt > 20) return r.status();
    }
  }

  // Replaces an intent of `txn` by its outcome (committed: the intent's value).
  Status ApplyIntent(kj::WaitScope& ws, const std::string& key, uint64_t txn, bool committed) {
    for (int attempt = 0;; ++attempt) {
      auto r =
          proposer_
              .Change(key,
                      [txn, committed, now = Now()](const std::optional<std::string>& payload) {
                        auto rec = MetaRecord::DecodeOptional(payload);
                        if (!rec.ok()) return Decision::Abort(rec.status());
                        if (!rec->intent || rec->intent->txn != txn) return Decision::Keep();
                        if (committed) {
                          rec->body = std::move(rec->intent->value);
                          rec->removed_ns = 0;
                        }
                        rec->intent.reset();
                        return Decision::Write(Encode(std::move(rec).value(), now));
                      })
              .wait(ws);
      SawIntentWrite(key, r);
      if (r.ok()) return Status::Ok();
      if (r.status().code() != StatusCode::kUnknownOutcome || attempt > 20) return r.status();
    }
  }

  // The body a reader sees: follows the intent if any.
  Result<MetaRecord> ReadVisible(kj::WaitScope& ws, const std::string& key) {
    QFS_ASSIGN_OR_RETURN(MetaRecord rec, ReadRaw(ws, key));
    if (!rec.intent || o_.unsafe_read_ignores_intents) {
      rec.intent.reset();
      return rec;
    }
    QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, rec.intent->txn, true));
    MetaRecord out;
    out.body = fate == TxnState::kCommitted ? std::move(rec.intent->value) : std::move(rec.body);
    return out;
  }

  Result<Inode> ReadInode(kj::WaitScope& ws, uint64_t ino) {
    QFS_ASSIGN_OR_RETURN(MetaRecord rec, ReadVisible(ws, InodeKey(ino)));
    if (!rec.inode()) return NotFound("no inode " + std::to_string(ino));
    return *rec.inode();
  }

  // ReadInode of many inodes, batched: one result per inode, in order.
  std::vector<Result<Inode>> ReadInodes(kj::WaitScope& ws, const std::vector<uint64_t>& inos) {
    std::vector<std::string> keys;
    keys.reserve(inos.size());
    for (uint64_t ino : inos) keys.push_back(InodeKey(ino));
    auto raw = ReadMany(ws, keys);
    std::vector<Result<Inode>> out;
    out.reserve(inos.size());
    for (size_t i = 0; i < inos.size(); ++i) {
      Result<MetaRecord> rec = raw[i].ok() ? MetaRecord::DecodeOptional(raw[i]->payload)
                                           : Result<MetaRecord>(raw[i].status());
      if (rec.ok() && rec->intent) rec = ReadVisible(ws, keys[i]);  // follows the intent
      if (!rec.ok()) {
        out.push_back(rec.status());
      } else if (!rec->inode()) {
        out.push_back(NotFound("no inode " + std::to_string(inos[i])));
      } else {
        out.push_back(*rec->inode());
      }
    }
    return out;
  }

  // Resolves an intent of `txn` found on `key` by a plain change: applies or drops it once
  // decided, waits while pending, aborts it past its deadline.
  Status ResolveBlocking(kj::WaitScope& ws, const std::string& key, uint64_t txn, int attempt) {
    QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, txn, true));
    if (fate == TxnState::kPending) {
      Backoff(ws, attempt);
      return Status::Ok();
    }
    return ApplyIntent(ws, key, txn, fate == TxnState::kCommitted);
  }

  // A proposer change function that decodes the record and, when it carries another
  // transaction's intent, keeps it and reports the transaction in `*blocked` (the caller
  // resolves it and retries); otherwise it hands the record to `body`.
  static ChangeFn UnlessIntent(uint64_t* blocked, std::function<Decision(MetaRecord)> body) {
    return [blocked, body = std::move(body)](const std::optional<std::string>& payload) {
      *blocked = 0;
      auto rec = MetaRecord::DecodeOptional(payload);
      if (!rec.ok()) return Decision::Abort(rec.status());
      if (rec->intent) {
        *blocked = rec->intent->txn;
        return Decision::Keep();
      }
      return body(std::move(rec).value());
    };
  }

  // A retry's failure to write (no quorum, busy) after an attempt whose outcome was unknown
  // does not make the change "not done": the result stays UnknownOutcome.
  static Status StillUnknown(const std::string& key, bool unknown, const Status& s) {
    bool not_done = s.code() == StatusCode::kNoQuorum || s.code() == StatusCode::kTimedOut ||
                    s.code() == StatusCode::kUnavailable ||
                    s.code() == StatusCode::kEpochMismatch || s.code() == StatusCode::kBusy ||
                    s.code() == StatusCode::kNoSpace;
    if (!unknown || !not_done) return s;
    return Status(StatusCode::kUnknownOutcome,
                  DescribeKey(key) +
                      ": an earlier attempt may have been applied; the retry: " + s.ToString());
  }

  // A plain change: resolves any intent first, then applies fn. Unknown outcomes are retried
  // (fn must be idempotent: it sets values; a change that adds or subtracts goes through
  // ChangeCombined).
  // `retry_unknown` false: fn is not idempotent, so an unknown outcome is returned as is.
  // Once an attempt's outcome was unknown, a later attempt that fails without writing (no
  // quorum, busy) does not make the change "not done": the result stays UnknownOutcome.
  // `first_write`: the record's value if fn finds it absent, for a key other clients may be
  // creating too (a new entry): the first attempt tries Proposer::CreateShared (one round when
  // every replica accepts).
  Result<MetaRecord> Change(kj::WaitScope& ws, const std::string& key, RecordFn fn,
                            bool retry_unknown = true,
                            std::optional<MetaRecord> first_write = std::nullopt) {
    OwnChange own(*this, key);
    auto deadline = timer_.now() + o_.busy_timeout;
    bool unknown = false;
    auto failed = [&](const Status& s) { return StillUnknown(key, unknown, s); };
    for (int attempt = 0;; ++attempt) {
      uint64_t blocked = 0;
      int64_t now = Now();
      ChangeFn change = UnlessIntent(&blocked, [&fn, now](MetaRecord rec) {
        auto next = fn(rec);
        if (!next.ok()) return Decision::Abort(next.status());
        if (!*next) return Decision::Keep();
        return Decision::Write(Encode(std::move(**next), now));
      });
      auto r = (attempt == 0 && first_write && o_.fast_create
                    ? proposer_.CreateShared(key, Encode(*first_write, now), std::move(change))
                    : proposer_.Change(key, std::move(change)))
                   .wait(ws);
      if (!r.ok()) {
        ForgetOwn(key);
        if (r.status().code() == StatusCode::kUnknownOutcome && retry_unknown && attempt < 20) {
          unknown = true;
          continue;
        }
        return failed(r.status());
      }
      if (blocked) {
        if (timer_.now() > deadline) {
          return failed(
              Status(StatusCode::kBusy, DescribeKey(key) + " held by a pending transaction"));
        }
        Status resolved = ResolveBlocking(ws, key, blocked, attempt);
        if (!resolved.ok()) return failed(resolved);
        continue;
      }
      auto rec = MetaRecord::DecodeOptional(r->payload);
      if (rec.ok()) NoteOwn(key, r->version, *rec);
      return rec;
    }
  }

  // ---- combining: concurrent changes of one record from this client share one CAS ----------
  //
  // Many operations in flight on one directory (creates, unlinks) all change its I/ record.
  // Rather than race each other for ballots, the first becomes the leader and runs one
  // proposer change that applies every queued function in arrival order; each caller gets the
  // record as its own function left it (or its own error). Leadership passes to the first
  // waiter of the next batch. So this client has at most one batch in flight per record, and
  // RunBatch applies a retried batch once; the functions need not be idempotent themselves.

  struct Waiter {
    RecordFn fn;
    std::optional<Result<MetaRecord>> result;
    kj::Own<kj::PromiseFulfiller<void>> wake;
    bool lead = false;
    std::vector<Waiter*> batch;
  };
  struct CombineQueue {
    bool busy = false;
    std::vector<Waiter*> waiting;
  };

  Result<MetaRecord> ChangeCombined(kj::WaitScope& ws, const std::string& key, RecordFn fn) {
    Waiter me;
    me.fn = std::move(fn);
    CombineQueue& q = combine_[key];
    if (q.busy) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      me.wake = kj::mv(paf.fulfiller);
      q.waiting.push_back(&me);
      paf.promise.wait(ws);
      if (!me.lead) return std::move(*me.result);
    } else {
      q.busy = true;
      me.batch = {&me};
    }
    RunBatch(ws, key, me.batch);
    std::vector<Waiter*> finished = std::move(me.batch);
    CombineQueue& q2 = combine_[key];
    if (q2.waiting.empty()) {
      combine_.erase(key);
    } else {
      Waiter* next = q2.waiting.front();
      next->lead = true;
      next->batch = std::move(q2.waiting);
      q2.waiting.clear();
      next->wake->fulfill();
    }
    for (Waiter* w : finished) {
      if (w != &me) w->wake->fulfill();
    }
    return std::move(*me.result);
  }

  // One batch's change, retried while its outcome is unknown. Each evaluation of the batch on
  // the record's value writes a fresh tag as this client's entry in the inode's `applied`
  // list. This client runs at most one batch per record at a time (ChangeCombined), so on a
  // retry the entry names one of this batch's tags exactly when that evaluation was chosen:
  // the batch is then not applied again, and each waiter gets what that evaluation gave it.
  // Were this client's entry dropped meanwhile (more than o_.applied_clients other clients
  // changed the inode), the retry could not tell, so it answers UnknownOutcome instead.
  void RunBatch(kj::WaitScope& ws, const std::string& key, const std::vector<Waiter*>& batch) {
    OwnChange own(*this, key);
    auto deadline = timer_.now() + o_.busy_timeout;
    struct Evaluation {
      std::vector<Status> statuses;
      std::vector<MetaRecord> afters;
      uint64_t evictions = 0;  // the inode's applied_evictions as this evaluation wrote it
    };
    std::map<uint64_t, Evaluation> written;  // by tag: evaluations that wrote the record
    Evaluation last;                         // the latest evaluation (written or not)
    const uint64_t client = o_.client_id;
    const size_t max_clients = o_.applied_clients ? o_.applied_clients : kAppliedClients;
    const bool check = !o_.unsafe_parent_change_without_op_id;
    bool unknown = false;
    bool lost_track = false, found_applied = false;
    auto evaluate = [&](MetaRecord cur) -> Decision {
      lost_track = found_applied = false;
      const Inode* in = cur.inode();
      if (check && in && !written.empty()) {
        auto it = written.find(in->AppliedTag(client));
        if (it != written.end()) {
          last = it->second;  // applied: not again
          found_applied = true;
          return Decision::Keep();
        }
        uint64_t least = UINT64_MAX;
        for (const auto& [tag, ev] : written) least = std::min(least, ev.evictions);
        if (in->applied_evictions > least && !o_.unsafe_retry_ignores_evictions) {
          lost_track = true;
          return Decision::Keep();
        }
      }
      Evaluation ev;
      bool changed = false;
      for (Waiter* w : batch) {
        auto next = w->fn(cur);
        ev.statuses.push_back(next.ok() ? Status::Ok() : next.status());
        if (next.ok() && *next) {
          cur = std::move(**next);
          changed = true;
        }
        ev.afters.push_back(cur);
      }
      if (!changed) {
        last = std::move(ev);
        return Decision::Keep();
      }
      if (Inode* out = cur.inode()) {
        uint64_t tag = NewId();
        out->NoteApplied(client, tag, max_clients);
        ev.evictions = out->applied_evictions;
        written[tag] = ev;
      }
      last = std::move(ev);
      return Decision::Write(Encode(cur, Now()));
    };
    for (int attempt = 0;; ++attempt) {
      uint64_t blocked = 0;
      lost_track = found_applied = false;
      auto r = proposer_.Change(key, UnlessIntent(&blocked, evaluate)).wait(ws);
      Status failure;
      if (!r.ok()) {
        ForgetOwn(key);
        if (r.status().code() == StatusCode::kUnknownOutcome && attempt < 20) {
          unknown = true;
          continue;
        }
        failure = r.status();
      } else if (blocked) {
        if (timer_.now() > deadline) {
          failure = Status(StatusCode::kBusy, DescribeKey(key) + " held by a pending transaction");
        } else {
          Status s = ResolveBlocking(ws, key, blocked, attempt);
          if (s.ok()) continue;
          failure = s;
        }
      } else if (lost_track) {
        ++batches_lost_track_;
        failure = Status(StatusCode::kUnknownOutcome,
                         DescribeKey(key) + ": more than " + std::to_string(max_clients) +
                             " other clients changed it while this change's outcome was unknown");
      } else if (last.statuses.size() != batch.size()) {
        failure = Internal(DescribeKey(key) + ": a batch change ended without an evaluation");
      } else if (auto rec = MetaRecord::DecodeOptional(r->payload); rec.ok()) {
        // Decoded from the reply: the value `r->version` names.
        NoteOwn(key, r->version, *rec);
      }
      if (failure.ok() && found_applied) ++batches_found_applied_;
      if (!failure.ok()) failure = StillUnknown(key, unknown, failure);
      for (size_t i = 0; i < batch.size(); ++i) {
        Waiter* w = batch[i];
        if (!failure.ok()) {
          w->result = Result<MetaRecord>(failure);
        } else if (!last.statuses[i].ok()) {
          w->result = Result<MetaRecord>(last.statuses[i]);
        } else {
          w->result = Result<MetaRecord>(last.afters[i]);
        }
      }
      return;
    }
  }

  // ---- transactions --------------------------------------------------------------------------

  struct TxnCtx {
    Txn txn;
    std::vector<std::string> attached;
    bool holds_rename_lock = false;
  };

  Result<TxnCtx> BeginTxn(kj::WaitScope& ws, std::vector<std::string> participants,
                          std::vector<uint64_t> marked_dirs = {}) {
    std::sort(participants.begin(), participants.end());
    participants.erase(std::unique(participants.begin(), participants.end()), participants.end());
    TxnCtx ctx;
    ctx.txn.id = NewId();
    ctx.txn.state = TxnState::kPending;
    ctx.txn.created_ns = Now();
    ctx.txn.deadline_ns = ctx.txn.created_ns + o_.txn_timeout_ns;
    ctx.txn.participants = std::move(participants);
    ctx.txn.marked_dirs = std::move(marked_dirs);
    // The id is fresh and ours alone, so the first write may skip prepare.
    auto r = proposer_.CreateFresh(TxnKey(ctx.txn.id), WithBody(ctx.txn).Encode()).wait(ws);
    if (!r.ok()) return r.status();
    return ctx;
  }

  bool Younger(const Txn& a, const Txn& b) {
    return a.created_ns != b.created_ns ? a.created_ns > b.created_ns : a.id > b.id;
  }

  // Attaches this transaction's intent to `key`: fn computes the participant's new value from
  // its current one. Conflict: this transaction is the younger one and must abort.
  Status Attach(kj::WaitScope& ws, TxnCtx& ctx, const std::string& key, RecordFn fn) {
    const uint64_t me = ctx.txn.id;
    for (int attempt = 0;; ++attempt) {
      uint64_t blocked = 0;
      auto r =
          proposer_
              .Change(key,
                      [&blocked, &fn, me, now = Now()](const std::optional<std::string>& payload) {
                        blocked = 0;
                        auto rec = MetaRecord::DecodeOptional(payload);
                        if (!rec.ok()) return Decision::Abort(rec.status());
                        if (rec->intent) {
                          if (rec->intent->txn == me) return Decision::Keep();
                          blocked = rec->intent->txn;
                          return Decision::Keep();
                        }
                        auto next = fn(*rec);
                        if (!next.ok()) return Decision::Abort(next.status());
                        MetaRecord out = *rec;
                        out.intent = Intent{me, *next ? (*next)->body : rec->body};
                        return Decision::Write(Encode(std::move(out), now));
                      })
              .wait(ws);
      SawIntentWrite(key, r);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kUnknownOutcome && attempt < 20) continue;
        return r.status();
      }
      if (!blocked) {
        ctx.attached.push_back(key);
        return Status::Ok();
      }
      QFS_ASSIGN_OR_RETURN(MetaRecord other_rec, ReadRaw(ws, TxnKey(blocked)));
      const Txn* other = other_rec.txn();
      if (!other) return Internal("intent names a transaction with no record");
      TxnState fate = other->state;
      if (fate == TxnState::kPending) {
        if (Now() <= other->deadline_ns && Younger(ctx.txn, *other)) {
          return Conflict("younger than transaction " + std::to_string(blocked));
        }
        QFS_ASSIGN_OR_RETURN(fate, SetTxnState(ws, blocked, TxnState::kAborted));
      }
      QFS_RETURN_IF_ERROR(ApplyIntent(ws, key, blocked, fate == TxnState::kCommitted));
      if (attempt > 1000) return Status(StatusCode::kBusy, "attach kept meeting intents");
    }
  }

  // Resolves this transaction's intents and releases its lock.
  void Finish(kj::WaitScope& ws, TxnCtx& ctx, bool committed) {
    // All participants at once; best effort: a failure leaves the intent for readers and fsck.
    std::vector<kj::Promise<void>> resolving;
    for (const auto& key : ctx.attached) {
      resolving.push_back(
          fibers_.startFiber([this, key, txn = ctx.txn.id, committed](kj::WaitScope& ws) {
            (void)ApplyIntent(ws, key, txn, committed);
          }));
    }
    for (auto& p : resolving) p.wait(ws);
    if (ctx.holds_rename_lock) ReleaseRenameLock(ws, ctx.txn.id);
  }

  void Abort(kj::WaitScope& ws, TxnCtx& ctx) {
    auto fate = SetTxnState(ws, ctx.txn.id, TxnState::kAborted);
    bool committed = fate.ok() && *fate == TxnState::kCommitted;
    Finish(ws, ctx, committed);
  }

  // Commits: the CAS of X from pending to committed. Conflict if someone aborted it first.
  // `beside_finish` (optional): run once it has committed, beside the resolution of its
  // intents.
  Status Commit(kj::WaitScope& ws, TxnCtx& ctx,
                std::function<void(kj::WaitScope&)> beside_finish = nullptr) {
    if (o_.test_crash_txn_after_intents) {
      return Status(StatusCode::kUnavailable, "test crash with intents attached");
    }
    QFS_ASSIGN_OR_RETURN(TxnState fate, SetTxnState(ws, ctx.txn.id, TxnState::kCommitted));
    if (o_.test_crash_txn_after_commit && fate == TxnState::kCommitted) {
      return Status(StatusCode::kUnavailable, "test crash after commit");
    }
    if (fate != TxnState::kCommitted) {
      Finish(ws, ctx, false);
      return Conflict("transaction aborted by another client");
    }
    std::optional<kj::Promise<void>> beside;
    if (beside_finish) {
      beside = fibers_.startFiber([beside_finish](kj::WaitScope& ws) { beside_finish(ws); });
    }
    Finish(ws, ctx, true);
    if (beside) beside->wait(ws);
    return Status::Ok();
  }

  // Runs one transactional operation attempt after attempt while it loses conflicts.
  Status RetryConflicts(kj::WaitScope& ws, std::function<Status(kj::WaitScope&)> attempt_fn) {
    auto deadline = timer_.now() + o_.busy_timeout;
    for (int attempt = 0;; ++attempt) {
      Status s = attempt_fn(ws);
      if (!IsConflict(s)) return s;
      if (timer_.now() > deadline) return Status(StatusCode::kBusy, s.message());
      ++conflict_retries_;
      Backoff(ws, attempt);
    }
  }

  // ---- the rename lock -----------------------------------------------------------------------

  Status AcquireRenameLock(kj::WaitScope& ws, TxnCtx& ctx) {
    const std::string key = LockKey("rename");
    for (int attempt = 0;; ++attempt) {
      uint64_t holder = 0;
      auto r = Change(ws, key, [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        holder = 0;
        const Lock* l = rec.lock();
        if (l && l->holder_txn != 0 && l->holder_txn != ctx.txn.id) {
          holder = l->holder_txn;
          return std::optional<MetaRecord>();
        }
        return std::optional<MetaRecord>(WithBody(Lock{ctx.txn.id, ctx.txn.deadline_ns}));
      });
      if (!r.ok()) return r.status();
      if (!holder) {
        ctx.holds_rename_lock = true;
        return Status::Ok();
      }
      // The lock is as valid as its holder's transaction: decided or expired frees it.
      QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, holder, true));
      if (fate != TxnState::kPending) {
        auto freed =
            Change(ws, key, [holder](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
              const Lock* l = rec.lock();
              if (!l || l->holder_txn != holder) return std::optional<MetaRecord>();
              return std::optional<MetaRecord>(WithBody(Lock{}));
            });
        if (!freed.ok()) return freed.status();
        continue;
      }
      if (Younger(ctx.txn, Txn{holder, TxnState::kPending, 0, 0, {}, {}}) && attempt > 50) {
        return Conflict("rename lock busy");
      }
      Backoff(ws, attempt);
    }
  }

  void ReleaseRenameLock(kj::WaitScope& ws, uint64_t txn) {
    (void)Change(ws, LockKey("rename"),
                 [txn](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                   const Lock* l = rec.lock();
                   if (!l || l->holder_txn != txn) return std::optional<MetaRecord>();
                   return std::optional<MetaRecord>(WithBody(Lock{}));
                 });
  }

  // ---- helpers for parent changes ------------------------------------------------------------

  // Applies `apply` to a live directory's inode. Retried after an unknown outcome only through
  // ChangeCombined (RunBatch), which tells whether an earlier attempt was applied, or inside a
  // transaction's intent, which is attached once.
  static RecordFn DirChange(std::function<Status(Inode&)> apply) {
    return [apply](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
      const Inode* in = rec.inode();
      if (!in) return NotFound("directory does not exist");
      if (!in->is_dir()) return Status(StatusCode::kNotDirectory, "not a directory");
      if (in->state != InodeState::kLive) return NotFound("directory is being removed");
      MetaRecord out = rec;
      QFS_RETURN_IF_ERROR(apply(*out.inode()));
      return std::optional<MetaRecord>(std::move(out));
    };
  }

  // The dying mark of an rmdir (or of a rename over an empty directory), on the directory's
  // inode, which (parent, name) names: requires an empty directory and stops every later
  // entry-adding change. A rename mark stands for a count change to come (or one its crashed
  // renamer never made): the change then fails with Conflict and sets `*marked`, and the
  // caller settles the marks before it tries again.
  static RecordFn DyingMark(int64_t now, uint64_t parent, std::string name,
                            std::shared_ptr<bool> marked) {
    return [now, parent, name = std::move(name),
            marked](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
      const Inode* d = rec.inode();
      *marked = false;
      // Gone or not a directory (types never change): damage a retry cannot mend (fsck's).
      if (!d) return NotFound("the directory's inode is missing");
      if (!d->is_dir()) return Status(StatusCode::kNotDirectory, "not a directory");
      if (!d->rename_marks.empty()) {
        *marked = true;
        return Conflict("renames pending in the directory");
      }
      if (d->entry_count != 0) return Status(StatusCode::kNotEmpty, "directory not empty");
      MetaRecord out = rec;
      out.inode()->state = InodeState::kDying;
      out.inode()->nlink = 0;
      out.inode()->ctime_ns = now;
      RemoveBackPointer(*out.inode(), parent, name);
      return std::optional<MetaRecord>(std::move(out));
    };
  }

  // ---- rename marks (README, "Renames keep the directories out of their transactions") -------

  static constexpr size_t kMaxRenameMarks = 4096;

  // Adds `mark` to live directory `dir` (once: a retry finds it there). A mark for a name the
  // directory gains raises its count at once, as a create's change does before its entry
  // exists: the count runs high while the rename is pending, never low.
  Status AddRenameMark(kj::WaitScope& ws, uint64_t dir, RenameMark mark) {
    const bool raise = !o_.unsafe_rename_raise_on_settle;
    auto r = ChangeCombined(ws, InodeKey(dir), DirChange([mark, raise](Inode& d) -> Status {
                              for (const auto& m : d.rename_marks) {
                                if (m.txn == mark.txn) return Status::Ok();
                              }
                              if (d.rename_marks.size() >= kMaxRenameMarks) {
                                return Status(StatusCode::kBusy,
                                              "too many renames pending in the directory");
                              }
                              d.rename_marks.push_back(mark);
                              if (mark.delta > 0 && raise) d.entry_count += 1;
                              return Status::Ok();
                            }));
    return r.ok() ? Status::Ok() : r.status();
  }

  // Settles `dir`'s mark of transaction `txn`, decided as `committed`: removes it and makes
  // the count change the mark still owes (committed: a lost name's -1, and the times;
  // aborted: the +1 raised when the mark was added comes off). The mark's presence is what
  // makes this happen once; without one (settled already) nothing changes.
  Status SettleRenameMark(kj::WaitScope& ws, uint64_t dir, uint64_t txn, bool committed) {
    auto r = ChangeCombined(
        ws, InodeKey(dir),
        [txn, committed, raised = !o_.unsafe_rename_raise_on_settle](
            const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          const Inode* in = rec.inode();
          if (!in) return std::optional<MetaRecord>();
          auto found = [txn](const RenameMark& m) { return m.txn == txn; };
          if (std::none_of(in->rename_marks.begin(), in->rename_marks.end(), found)) {
            return std::optional<MetaRecord>();
          }
          MetaRecord out = rec;
          Inode& d = *out.inode();
          auto it = std::find_if(d.rename_marks.begin(), d.rename_marks.end(), found);
          const RenameMark m = *it;
          d.rename_marks.erase(it);
          if (!raised) {  // negative control
            if (committed && m.delta > 0) d.entry_count += 1;
            if (committed && m.delta < 0 && d.entry_count > 0) d.entry_count -= 1;
          } else if ((committed ? m.delta < 0 : m.delta > 0) && d.entry_count > 0) {
            d.entry_count -= 1;
          }
          if (committed) {
            d.mtime_ns = std::max(d.mtime_ns, m.time_ns);
            d.ctime_ns = std::max(d.ctime_ns, m.time_ns);
          }
          return std::optional<MetaRecord>(std::move(out));
        });
    return r.ok() ? Status::Ok() : r.status();
  }

  // Settles the marks on `dir` whose transactions are decided, aborting those pending past
  // their deadline. Returns how many are left pending; counts the settled ones in `*settled`.
  Result<size_t> ResolveRenameMarks(kj::WaitScope& ws, uint64_t dir, size_t* settled = nullptr) {
    QFS_ASSIGN_OR_RETURN(MetaRecord rec, ReadVisible(ws, InodeKey(dir)));
    const Inode* in = rec.inode();
    if (!in) return size_t{0};
    size_t pending = 0;
    for (const auto& m : in->rename_marks) {
      // X is written before any mark naming it, and fsck's --gc keeps it while one does.
      QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, m.txn, true));
      if (fate == TxnState::kPending) {
        ++pending;
        continue;
      }
      QFS_RETURN_IF_ERROR(SettleRenameMark(ws, dir, m.txn, fate == TxnState::kCommitted));
      if (settled) ++*settled;
    }
    return pending;
  }

  // ---- operations ----------------------------------------------------------------------------

  Result<Inode> DoEnsureRoot(kj::WaitScope& ws, uint32_t mode, uint32_t uid, uint32_t gid) {
    int64_t now = Now();
    auto r = Change(ws, InodeKey(kRootIno),
                    [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                      if (rec.inode()) return std::optional<MetaRecord>();
                      Inode root;
                      root.ino = kRootIno;
                      root.type = FileType::kDirectory;
                      root.mode = mode & 07777;
                      root.uid = uid;
                      root.gid = gid;
                      root.nlink = 2;
                      root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = now;
                      root.parents.push_back(BackPointer{kRootIno, ""});
                      return std::optional<MetaRecord>(WithBody(root));
                    });
    if (!r.ok()) return r.status();
    return *r->inode();
  }

  Result<Inode> DoLookup(kj::WaitScope& ws, uint64_t parent, const std::string& name,
                         bool parent_is_dir = false) {
    if (name.size() > kMaxNameSize) return Status(StatusCode::kNameTooLong, "name over 255 bytes");
    if (name == ".") return DoGetAttr(ws, parent);
    if (name == "..") {
      QFS_ASSIGN_OR_RETURN(Inode dir, ReadInode(ws, parent));
      if (dir.parents.empty()) return NotFound("directory has no parent");
      return DoGetAttr(ws, dir.parents.front().parent);
    }
    QFS_RETURN_IF_ERROR(ValidateName(name));
    const std::string entry_key = DirEntryKey(parent, name);
    // If the entry now names another inode than the hinted one, or the hinted read failed, the
    // named inode is read after the entry as before.
    auto [e, hint, target] = ReadEntryAndHinted(ws, entry_key);
    if (!e.ok()) return e.status();
    if (!e->entry()) {
      entry_hints_.erase(entry_key);
      if (parent_is_dir) return NotFound(name + ": no such entry");
      // Distinguish ENOTDIR for a lookup under a non-directory.
      auto p = ReadInode(ws, parent);
      if (p.ok() && !p->is_dir()) return Status(StatusCode::kNotDirectory, "not a directory");
      return NotFound(name + ": no such entry");
    }
    const uint64_t ino = e->entry()->ino;
    NoteEntry(entry_key, ino);
    if (hint && *hint == ino && target->ok()) {
      ++lookups_with_hint_;
      return std::move(*target);
    }
    return ReadInode(ws, ino);
  }

  Result<Inode> DoGetAttr(kj::WaitScope& ws, uint64_t ino) { return ReadInode(ws, ino); }

  // The inode a name was last seen to name (by a lookup or a create of this client): an unlink
  // reads that inode beside the entry instead of after it. A hint only: when the entry names
  // another inode, that one is read after all.
  std::unordered_map<std::string, uint64_t> entry_hints_;
  uint64_t unlinks_without_reads_ = 0, lookups_with_hint_ = 0, conflict_retries_ = 0;
  uint64_t batches_found_applied_ = 0, batches_lost_track_ = 0;
  void NoteEntry(const std::string& key, uint64_t ino) {
    if (entry_hints_.size() >= 16384) entry_hints_.clear();
    entry_hints_[key] = ino;
  }
  // Reads an entry and, when this client knows which inode the name last named, that inode
  // beside it (one round trip instead of two). `target` holds the hinted read iff `hint` is set.
  struct HintedEntry {
    Result<MetaRecord> entry;
    std::optional<uint64_t> hint;
    std::optional<Result<Inode>> target;
  };
  HintedEntry ReadEntryAndHinted(kj::WaitScope& ws, const std::string& entry_key) {
    std::optional<uint64_t> hint;
    if (auto h = entry_hints_.find(entry_key); h != entry_hints_.end()) hint = h->second;
    std::optional<kj::Promise<Result<Inode>>> hinted;
    if (hint) {
      hinted =
          fibers_.startFiber([this, ino = *hint](kj::WaitScope& ws) { return ReadInode(ws, ino); });
    }
    auto e = ReadVisible(ws, entry_key);
    std::optional<Result<Inode>> target;
    if (hinted) target = hinted->wait(ws);  // always waited: never cancelled midway
    return HintedEntry{std::move(e), hint, std::move(target)};
  }

  Result<Inode> DoSetAttr(kj::WaitScope& ws, uint64_t ino, const SetAttrRequest& req) {
    int64_t now = Now();
    auto r =
        Change(ws, InodeKey(ino), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          const Inode* cur = rec.inode();
          if (!cur) return NotFound("no inode " + std::to_string(ino));
          MetaRecord out = rec;
          QFS_RETURN_IF_ERROR(ApplyAttrs(*out.inode(), req, now));
          return std::optional<MetaRecord>(std::move(out));
        });
    if (!r.ok()) return r.status();
    return *r->inode();
  }

  // A setattr's changes to `in`, as ext4 makes them (setattr, and a publish that carries one).
  static Status ApplyAttrs(Inode& in, const SetAttrRequest& req, int64_t now) {
    bool changed = false;
    if (req.mode) {
      in.mode = *req.mode & 07777;
      changed = true;
    }
    if ((req.uid && *req.uid != in.uid) || (req.gid && *req.gid != in.gid)) {
      // As ext4 (Linux since 2.2.13, root included): chown clears setuid, and setgid when the
      // group-execute bit is set, on anything but a directory.
      if (!in.is_dir() && !req.mode) {
        in.mode &= ~static_cast<uint32_t>(S_ISUID);
        if (in.mode & S_IXGRP) in.mode &= ~static_cast<uint32_t>(S_ISGID);
      }
    }
    if (req.uid) in.uid = *req.uid, changed = true;
    if (req.gid) in.gid = *req.gid, changed = true;
    if (req.size && !(req.size_grow_only && in.size >= *req.size)) {
      if (in.is_dir()) return Status(StatusCode::kIsDirectory, "truncate of a directory");
      if (in.type != FileType::kRegular) return InvalidArgument("truncate of a special file");
      if (*req.size > MaxFileSize(in.chunk_size)) return TooLarge();
      TruncateLayout(in, *req.size);
      in.size = *req.size;
      in.mtime_ns = now;
      changed = true;
    }
    if (req.atime_ns)
      in.atime_ns = *req.atime_ns == SetAttrRequest::kNow ? now : *req.atime_ns, changed = true;
    if (req.mtime_ns)
      in.mtime_ns = *req.mtime_ns == SetAttrRequest::kNow ? now : *req.mtime_ns, changed = true;
    if (changed) in.ctime_ns = req.ctime_ns ? *req.ctime_ns : now;
    return Status::Ok();
  }

  static Status TooLarge() {
    return Status(StatusCode::kTooLarge, "file size over the largest this chunk size allows");
  }

  static void TruncateLayout(Inode& in, uint64_t size) {
    if (in.chunk_size == 0) return;
    uint64_t cs = in.chunk_size;
    const uint64_t page_bytes = kSlotsPerPage * cs;
    std::vector<PageRef> kept;
    for (PageRef p : in.pages) {
      uint64_t start = p.index * page_bytes;
      if (start >= size) continue;
      if (p.live > size - start) p.live = size - start;
      p.used = std::min(p.used, p.live);
      kept.push_back(p);
    }
    in.pages = std::move(kept);
    uint64_t keep = (size + cs - 1) / cs;
    if (in.slots.size() > kSlotsPerPage) {
      // A layout held inline whole (written before pages existed) stays so, with holes past
      // the new end: a mount that read it must never find its slots moved to pages.
      for (uint64_t i = keep; i < in.slots.size(); ++i) in.slots[i] = Slot{};
      keep = std::max<uint64_t>(keep, kSlotsPerPage + 1);
    }
    if (in.slots.size() > keep) in.slots.resize(keep);
    if (size % cs != 0 && size / cs < in.slots.size()) {  // the slot the new end falls in
      Slot& last = in.slots[size / cs];
      uint32_t max_len = static_cast<uint32_t>(size % cs);
      if (last.length > max_len) last.length = max_len;
    }
  }

  // What this client last saw of a directory's setgid bit and group (which decide a new
  // inode's group), so that its next create there can skip the pre-reads.
  struct DirGroup {
    bool setgid = false;
    uint32_t gid = 0;
  };
  std::unordered_map<uint64_t, DirGroup> dir_groups_;
  DirGroup RememberDirGroup(uint64_t dir, const Inode& d) {
    if (dir_groups_.size() >= 65536) dir_groups_.clear();
    return dir_groups_[dir] = DirGroup{(d.mode & S_ISGID) != 0, d.gid};
  }

  Result<Inode> DoCreate(kj::WaitScope& ws, uint64_t parent, const std::string& name,
                         const CreateRequest& req, bool use_known_parent = true) {
    QFS_RETURN_IF_ERROR(ValidateName(name));
    if (req.type == FileType::kNone) return InvalidArgument("no file type");
    if (req.type == FileType::kSymlink && req.symlink_target.empty()) {
      return NotFound("empty symlink target");  // ENOENT, as symlink(2)
    }
    if (req.type == FileType::kSymlink && req.symlink_target.size() > kMaxSymlinkSize) {
      return Status(StatusCode::kNameTooLong, "symlink target must be 1..4095 bytes");
    }
    // The parent's setgid bit and group decide the new inode's group. If this client saw them
    // lately (its last create in this directory), it skips the pre-reads: the parent's change
    // in round 1 checks that they still hold and that the parent is a live directory, and an
    // existing name is met by the entry's write in round 2 and undone as a lost race is
    // (NamespaceTest.CreateAfterTheParentsGroupChanged). Otherwise cheap pre-checks (both
    // reads at once) first, so the common EEXIST/ENOENT do not allocate or write anything.
    std::optional<DirGroup> known;
    if (use_known_parent && o_.create_skips_prereads) {
      auto it = dir_groups_.find(parent);
      if (it != dir_groups_.end()) known = it->second;
    }
    const bool check_parent_group = known.has_value();
    if (!known) {
      auto parent_read =
          fibers_.startFiber([this, parent](kj::WaitScope& ws) { return ReadInode(ws, parent); });
      auto existing = ReadVisible(ws, DirEntryKey(parent, name));
      auto parent_r0 = parent_read.wait(ws);
      if (!parent_r0.ok()) return parent_r0.status();
      const Inode& p = *parent_r0;
      if (!p.is_dir()) return Status(StatusCode::kNotDirectory, "parent is not a directory");
      if (p.state != InodeState::kLive) return NotFound("parent directory is being removed");
      if (!existing.ok()) return existing.status();
      if (existing->entry()) return Status(StatusCode::kAlreadyExists, name + " exists");
      known = RememberDirGroup(parent, p);
    }

    // A block CAS whose outcome is unknown at worst wastes a block, so it is simply retried
    // (many clients taking their first block at once overflow the proposer's window).
    auto ino_r = allocator_.Allocate().wait(ws);
    for (int attempt = 0;
         !ino_r.ok() && attempt < 10 && ino_r.status().code() == StatusCode::kUnknownOutcome;
         ++attempt) {
      Backoff(ws, attempt);
      ino_r = allocator_.Allocate().wait(ws);
    }
    if (!ino_r.ok()) return ino_r.status();
    const uint64_t ino = *ino_r;
    const bool is_dir = req.type == FileType::kDirectory;
    int64_t now = Now();
    Inode inode;
    inode.ino = ino;
    inode.type = req.type;
    inode.mode = req.type == FileType::kSymlink ? 0777 : (req.mode & 07777);
    inode.uid = req.uid;
    inode.gid = req.gid;
    inode.rdev = req.rdev;
    inode.nlink = is_dir ? 2 : 1;
    inode.atime_ns = inode.mtime_ns = inode.ctime_ns = inode.btime_ns = now;
    inode.symlink_target = req.symlink_target;
    inode.size = req.symlink_target.size();
    inode.chunk_size = req.type == FileType::kRegular ? o_.default_chunk_size : 0;
    inode.parents.push_back(BackPointer{parent, name});
    inode.birth_deadline_ns = now + o_.birth_grace_ns;
    if (known->setgid) {  // BSD group semantics of a setgid directory, as ext4
      inode.gid = known->gid;
      if (is_dir) inode.mode |= S_ISGID;
    }

    // Round 1: the inode (skip-prepare, once) beside the parent's change.
    auto inode_write = proposer_.CreateFresh(InodeKey(ino), WithBody(inode).Encode());
    if (o_.test_crash_create_after_inode) {
      auto r = inode_write.wait(ws);
      return Status(StatusCode::kUnavailable,
                    "test crash after inode write (" +
                        (r.ok() ? std::string("written") : r.status().ToString()) + ")");
    }
    Result<MetaRecord> parent_r = MetaRecord{};
    auto group_changed = std::make_shared<bool>(false);
    if (!o_.unsafe_create_skips_parent_change) {
      const DirGroup used = *known;
      parent_r = ChangeCombined(
          ws, InodeKey(parent),
          DirChange([is_dir, now, used, check_parent_group, group_changed](Inode& d) -> Status {
            *group_changed = check_parent_group && (((d.mode & S_ISGID) != 0) != used.setgid ||
                                                    (used.setgid && d.gid != used.gid));
            if (*group_changed) return Status(StatusCode::kConflict, "parent's group changed");
            if (is_dir && d.nlink >= kMaxLinks) return Status(StatusCode::kTooManyLinks, "EMLINK");
            d.entry_count += 1;
            if (is_dir) d.nlink += 1;
            // Never back in time: a change evaluated long after its `now` (a retried batch)
            // must still show the directory as changed lately (fsck's recount reads ctime).
            d.mtime_ns = std::max(d.mtime_ns, now);
            d.ctime_ns = std::max(d.ctime_ns, now);
            return Status::Ok();
          }));
    }
    auto inode_r = inode_write.wait(ws);
    if (!parent_r.ok() && *group_changed) {
      // Built from an old view of the parent: this inode is dropped, the create starts over.
      dir_groups_.erase(parent);
      if (inode_r.ok()) MarkDying(ws, ino);
      return DoCreate(ws, parent, name, req, /*use_known_parent=*/false);
    }
    if (parent_r.ok() && parent_r->inode()) RememberDirGroup(parent, *parent_r->inode());
    if (!parent_r.ok() || !inode_r.ok()) {
      Status why = !parent_r.ok() ? parent_r.status() : inode_r.status();
      if (parent_r.ok() && !o_.unsafe_create_skips_parent_change)
        UndoParentAdd(ws, parent, is_dir, now);
      if (inode_r.ok()) MarkDying(ws, ino);
      return why;
    }
    // Round 2: the entry, absent -> present (the O_EXCL point). Not retried after an unknown
    // outcome: by then another client may have renamed or unlinked the entry this change made,
    // and writing it again would give the inode a second name (a directory two parents).
    // Never written later than the birth grace after round 1 (LateSecondRound): fsck may have
    // recounted the parent without it by then. The count keeps this create's +1 (high by one,
    // or right if a recount left the entry out) and the inode dies.
    auto too_late = [this, now]() {
      return Status(StatusCode::kConflict,
                    "create's second round came " + std::to_string((Now() - now) / 1'000'000'000) +
                        " s after its first, past the birth grace; started again");
    };
    if (LateSecondRound(now)) {
      MarkDying(ws, ino);
      return too_late();
    }
    auto entry_r = Change(
        ws, DirEntryKey(parent, name),
        [this, ino, &req, now,
         &too_late](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          if (const DirEntry* e = rec.entry()) {
            if (e->ino == ino) return std::optional<MetaRecord>();  // ours, from a retried change
            return Status(StatusCode::kAlreadyExists, "entry exists");
          }
          if (LateSecondRound(now)) return too_late();
          return std::optional<MetaRecord>(WithBody(DirEntry{ino, req.type}));
        },
        /*retry_unknown=*/false, WithBody(DirEntry{ino, req.type}));
    if (!entry_r.ok()) {
      // An unknown outcome may yet name the inode: undoing would leave an entry naming a dying
      // inode and a count too low. Leave both for fsck (the count high, the inode adoptable).
      if (entry_r.status().code() == StatusCode::kUnknownOutcome) return entry_r.status();
      if (!o_.unsafe_create_skips_parent_change) UndoParentAdd(ws, parent, is_dir, now);
      MarkDying(ws, ino);
      return entry_r.status();
    }
    NoteEntry(DirEntryKey(parent, name), ino);
    // Too slow: fsck may have adopted the inode meanwhile (DESIGN.md, create).
    if (LateSecondRound(now)) {
      // Adopted: fsck replaced the back-pointers with its /lost+found name "#<ino>" (DoAdopt),
      // or none yet, so (parent, name) is no longer among them. A link or rename by another client
      // since changes them too, but keeps or moves this name, and must not be undone here.
      auto now_inode = ReadInode(ws, ino);
      const BackPointer mine{parent, name};
      const std::string adopted_name = "#" + std::to_string(ino);
      auto adopted = [&](const Inode& in) {
        bool still_mine = std::find(in.parents.begin(), in.parents.end(), mine) != in.parents.end();
        bool in_lost_found =
            std::any_of(in.parents.begin(), in.parents.end(),
                        [&](const BackPointer& b) { return b.name == adopted_name; });
        // Empty: fsck has dropped this name and is about to link the inode into /lost+found.
        return !still_mine && (in.parents.empty() || in_lost_found);
      };
      if (now_inode.ok() && adopted(*now_inode)) {
        (void)Change(ws, DirEntryKey(parent, name),
                     [ino](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                       if (!rec.entry() || rec.entry()->ino != ino)
                         return std::optional<MetaRecord>();
                       return std::optional<MetaRecord>(MetaRecord{});
                     });
        UndoParentAdd(ws, parent, is_dir, now);
        return Conflict("inode adopted by fsck during a slow create");
      }
    }
    return inode;
  }

  // Undoes a create's first-round count change (`now`: the create's), unless too late for
  // that (LateSecondRound: a recount may have left it out already; the count stays high).
  void UndoParentAdd(kj::WaitScope& ws, uint64_t parent, bool is_dir, int64_t now) {
    (void)ChangeCombined(ws, InodeKey(parent), DirChange([this, is_dir, now](Inode& d) -> Status {
                           if (LateSecondRound(now)) return Status::Ok();
                           if (d.entry_count > 0) d.entry_count -= 1;
                           if (is_dir && d.nlink > 2) d.nlink -= 1;
                           d.ctime_ns = std::max(d.ctime_ns, now);
                           return Status::Ok();
                         }));
  }

  void MarkDying(kj::WaitScope& ws, uint64_t ino) {
    int64_t now = Now();
    (void)Change(ws, InodeKey(ino),
                 [now](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                   if (!rec.inode()) return std::optional<MetaRecord>();
                   MetaRecord out = rec;
                   out.inode()->state = InodeState::kDying;
                   out.inode()->ctime_ns = now;
                   out.inode()->nlink = 0;
                   out.inode()->parents.clear();
                   return std::optional<MetaRecord>(std::move(out));
                 });
  }

  Result<std::string> DoReadLink(kj::WaitScope& ws, uint64_t ino) {
    QFS_ASSIGN_OR_RETURN(Inode in, ReadInode(ws, ino));
    if (in.type != FileType::kSymlink) return InvalidArgument("not a symlink");
    return in.symlink_target;
  }

  // The file-side change of removing entry (parent, name): nlink - 1, back-pointer gone; at 0
  // dying, or unlinked-open under the caller's lease.
  // Not idempotent: run it through ChangeCombined or a transaction's intent.
  // `left_open`, if given, is set to whether the change left the file unlinked-open.
  RecordFn DropLink(uint64_t parent, const std::string& name, int64_t now, bool held_open,
                    uint64_t holder, bool whole_dir, std::shared_ptr<bool> left_open = nullptr) {
    int64_t lease_until = now + o_.lease_ns;
    return [=](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
      if (left_open) *left_open = false;
      const Inode* cur = rec.inode();
      if (!cur) return std::optional<MetaRecord>();
      MetaRecord out = rec;
      Inode& in = *out.inode();
      RemoveBackPointer(in, parent, name);
      if (whole_dir) {
        in.nlink = 0;
      } else if (in.nlink > 0) {
        in.nlink -= 1;
      }
      in.ctime_ns = now;
      if (in.nlink == 0) {
        if (held_open && !whole_dir) {
          in.state = InodeState::kUnlinkedOpen;
          in.lease_until_ns = lease_until;
          in.lease_holder = holder;
          if (left_open) *left_open = true;
        } else {
          in.state = InodeState::kDying;
        }
      }
      return std::optional<MetaRecord>(std::move(out));
    };
  }

  // The entry and the inode it names as this client last wrote them, when the one-round cache
  // holds both (see Proposer::PeekPrepared) and they show a live non-directory with one link
  // and no pending transaction; nullopt otherwise.
  std::optional<std::pair<DirEntry, Inode>> CachedUnlinkTarget(const std::string& entry_key) {
    if (o_.observe_only) return std::nullopt;
    auto cached = [this](const std::string& key) -> std::optional<MetaRecord> {
      auto payload = proposer_.PeekPrepared(key);
      if (!payload) return std::nullopt;
      auto rec = MetaRecord::DecodeOptional(payload);
      if (!rec.ok() || rec->intent) return std::nullopt;
      return std::move(rec).value();
    };
    auto e = cached(entry_key);
    if (!e || !e->entry() || e->entry()->type == FileType::kDirectory) return std::nullopt;
    auto in = cached(InodeKey(e->entry()->ino));
    if (!in || !in->inode()) return std::nullopt;
    const Inode& inode = *in->inode();
    if (inode.ino != e->entry()->ino || inode.state != InodeState::kLive || inode.nlink != 1)
      return std::nullopt;
    return std::make_pair(*e->entry(), inode);
  }

  Status DoUnlink(kj::WaitScope& ws, uint64_t parent, const std::string& name, bool held_open,
                  uint64_t holder) {
    QFS_RETURN_IF_ERROR(ValidateName(name));
    return RetryConflicts(ws, [&](kj::WaitScope& ws) -> Status {
      const std::string entry_key = DirEntryKey(parent, name);
      DirEntry entry;
      Inode target;
      if (auto cached = CachedUnlinkTarget(entry_key)) {
        // This client wrote the entry and the inode last and still holds both promises: no
        // reads. The tombstone's one-round accept proves the entry unchanged (or falls back and
        // its check fails: Conflict, and the retry reads). The link count that picks the path
        // below is this client's last view; if another client linked the file since, the
        // last-link path runs and its count change lowers nlink from the current value, which
        // leaves what the transaction would (only a crash in between differs, count high).
        entry = cached->first;
        target = std::move(cached->second);
        entry_hints_.erase(entry_key);
        ++unlinks_without_reads_;
      } else {
        auto [e, hint, target_r] = ReadEntryAndHinted(ws, entry_key);
        if (!e.ok()) return e.status();
        if (!e->entry()) return NotFound(name + ": no such entry");
        entry = *e->entry();
        if (entry.type == FileType::kDirectory)
          return Status(StatusCode::kIsDirectory, "is a directory");
        if (!hint || *hint != entry.ino) target_r = ReadInode(ws, entry.ino);
        entry_hints_.erase(entry_key);
        if (!target_r->ok()) return target_r->status();
        target = std::move(*target_r).value();
      }
      int64_t now = Now();
      auto parent_fn = DirChange([now](Inode& d) -> Status {
        if (d.entry_count > 0) d.entry_count -= 1;
        d.mtime_ns = d.ctime_ns = now;
        return Status::Ok();
      });
      // The last-link path's count drop, a round after the tombstone: given up if that round
      // comes too late (LateSecondRound; the count stays high).
      auto late_parent_fn = DirChange([this, now](Inode& d) -> Status {
        if (LateSecondRound(now)) return Status::Ok();
        if (d.entry_count > 0) d.entry_count -= 1;
        d.mtime_ns = std::max(d.mtime_ns, now);
        d.ctime_ns = std::max(d.ctime_ns, now);
        return Status::Ok();
      });
      auto entry_fn = [entry](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (!rec.entry() || !(*rec.entry() == entry)) return Conflict("entry changed");
        return std::optional<MetaRecord>(MetaRecord{});
      };
      auto inode_fn = DropLink(parent, name, now, held_open, holder, false);
      if (target.nlink > 1) {
        // Other links remain: one transaction, so the count never disagrees with the entries.
        QFS_ASSIGN_OR_RETURN(TxnCtx ctx, BeginTxn(ws, {DirEntryKey(parent, name), InodeKey(parent),
                                                       InodeKey(entry.ino)}));
        std::map<std::string, RecordFn> fns = {{DirEntryKey(parent, name), entry_fn},
                                               {InodeKey(parent), parent_fn},
                                               {InodeKey(entry.ino), inode_fn}};
        for (const auto& key : ctx.txn.participants) {
          Status s = Attach(ws, ctx, key, fns[key]);
          if (!s.ok()) {
            Abort(ws, ctx);
            return s;
          }
        }
        return Commit(ws, ctx);
      }
      // Last link: the entry's tombstone is the linearization point; then the counts.
      // Not retried on an unknown outcome: entry -> tombstone cannot tell its own earlier write
      // from another unlink's, so a retry would answer ENOENT for an unlink that took effect
      // (and skip the counts). Unknown stays unknown (EIO); fsck lowers the counts.
      auto tomb = Change(ws, DirEntryKey(parent, name), entry_fn, /*retry_unknown=*/false);
      if (!tomb.ok()) return tomb.status();
      if (o_.test_crash_unlink_after_tombstone) {
        return Status(StatusCode::kUnavailable, "test crash after the unlink's tombstone");
      }
      // The parent's count and the inode's link count at once; a failure leaves a count high,
      // which fsck repairs, never low.
      auto inode_change =
          fibers_.startFiber([this, key = InodeKey(entry.ino), inode_fn](kj::WaitScope& ws) {
            (void)ChangeCombined(ws, key, inode_fn);
          });
      (void)ChangeCombined(ws, InodeKey(parent), late_parent_fn);
      inode_change.wait(ws);
      return Status::Ok();
    });
  }

  Status DoRmdir(kj::WaitScope& ws, uint64_t parent, const std::string& name) {
    if (name == ".") return InvalidArgument("rmdir of '.'");
    if (name == "..") return Status(StatusCode::kNotEmpty, "rmdir of '..'");
    QFS_RETURN_IF_ERROR(ValidateName(name));
    return RetryConflicts(ws, [&](kj::WaitScope& ws) -> Status {
      QFS_ASSIGN_OR_RETURN(MetaRecord e, ReadVisible(ws, DirEntryKey(parent, name)));
      if (!e.entry()) return NotFound(name + ": no such entry");
      DirEntry entry = *e.entry();
      if (entry.type != FileType::kDirectory)
        return Status(StatusCode::kNotDirectory, "not a directory");
      const uint64_t dir = entry.ino;
      if (dir == kRootIno) return Status(StatusCode::kBusy, "rmdir of the root");
      int64_t now = Now();
      std::map<std::string, RecordFn> fns;
      fns[DirEntryKey(parent, name)] =
          [entry](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (!rec.entry() || !(*rec.entry() == entry)) return Conflict("entry changed");
        return std::optional<MetaRecord>(MetaRecord{});
      };
      fns[InodeKey(parent)] = DirChange([now](Inode& d) -> Status {
        if (d.entry_count > 0) d.entry_count -= 1;
        if (d.nlink > 2) d.nlink -= 1;
        d.mtime_ns = d.ctime_ns = now;
        return Status::Ok();
      });
      auto marked = std::make_shared<bool>(false);
      fns[InodeKey(dir)] = DyingMark(now, parent, name, marked);
      std::vector<std::string> keys = {DirEntryKey(parent, name), InodeKey(parent)};
      if (!o_.unsafe_rmdir_without_dying_mark) keys.push_back(InodeKey(dir));
      QFS_ASSIGN_OR_RETURN(TxnCtx ctx, BeginTxn(ws, keys));
      for (const auto& key : ctx.txn.participants) {
        Status s = Attach(ws, ctx, key, fns[key]);
        if (!s.ok()) {
          Abort(ws, ctx);
          if (*marked) QFS_RETURN_IF_ERROR(ResolveRenameMarks(ws, dir).status());
          return s;
        }
      }
      if (o_.unsafe_rmdir_without_dying_mark) {
        // Negative control: only look at the count, with no mark stopping concurrent creates.
        auto d = ReadInode(ws, dir);
        if (!d.ok() || d->entry_count != 0) {
          Abort(ws, ctx);
          return d.ok() ? Status(StatusCode::kNotEmpty, "directory not empty") : d.status();
        }
      }
      // The scan: no live entry and no entry with an intent (counts may run high after a
      // crash, never low, but check the entries themselves).
      Status empty = CheckEmpty(ws, dir);
      if (!empty.ok()) {
        Abort(ws, ctx);
        return empty;
      }
      return Commit(ws, ctx);
    });
  }

  Status CheckEmpty(kj::WaitScope& ws, uint64_t dir) {
    std::string prefix = DirEntryPrefix(dir);
    std::string after;
    for (;;) {
      auto keys = lister_.ListKeys(InoPlacementKey(dir), prefix, after, 256).wait(ws);
      if (!keys.ok()) return keys.status();
      // One batched read per page (a directory with many tombstones took one round trip per
      // key, holding the rmdir's intents for seconds).
      auto values = ReadMany(ws, *keys);
      for (size_t i = 0; i < keys->size(); ++i) {
        const std::string& key = (*keys)[i];
        if (i >= values.size()) return Internal("batched read answered too few keys");
        if (!values[i].ok()) return values[i].status();
        QFS_ASSIGN_OR_RETURN(MetaRecord raw, MetaRecord::DecodeOptional(values[i]->payload));
        if (raw.intent) {
          // An intent left by a decided transaction (e.g. a rename whose client crashed, aborted
          // once past its deadline) is not a pending change: resolve it and judge the entry by
          // its outcome, or the directory stays "not empty" until fsck. A pending one is.
          uint64_t txn = raw.intent->txn;
          QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, txn, true));
          if (fate == TxnState::kPending) {
            return Status(StatusCode::kNotEmpty, "directory not empty");
          }
          QFS_RETURN_IF_ERROR(ApplyIntent(ws, key, txn, fate == TxnState::kCommitted));
          if (fate == TxnState::kCommitted) raw.body = std::move(raw.intent->value);
          raw.intent.reset();
        }
        if (raw.entry()) return Status(StatusCode::kNotEmpty, "directory not empty");
      }
      if (keys->size() < 256) return Status::Ok();
      after = keys->back();
    }
  }

  Result<Inode> DoLink(kj::WaitScope& ws, uint64_t ino, uint64_t new_parent,
                       const std::string& new_name) {
    QFS_RETURN_IF_ERROR(ValidateName(new_name));
    Inode result;
    Status s = RetryConflicts(ws, [&](kj::WaitScope& ws) -> Status {
      QFS_ASSIGN_OR_RETURN(Inode target, ReadInode(ws, ino));
      if (target.is_dir()) return Status(StatusCode::kNotPermitted, "hard link to a directory");
      if (target.state != InodeState::kLive || target.nlink == 0)
        return NotFound("inode is unlinked");
      if (target.nlink >= kMaxLinks) return Status(StatusCode::kTooManyLinks, "too many links");
      // The new parent must be a directory (types never change). Checked here because a
      // non-directory parent that is the target itself would share its I/ key with it.
      QFS_ASSIGN_OR_RETURN(Inode np, ReadInode(ws, new_parent));
      if (!np.is_dir()) return Status(StatusCode::kNotDirectory, "not a directory");
      QFS_ASSIGN_OR_RETURN(MetaRecord e, ReadVisible(ws, DirEntryKey(new_parent, new_name)));
      if (e.entry()) return Status(StatusCode::kAlreadyExists, new_name + " exists");
      int64_t now = Now();
      std::map<std::string, RecordFn> fns;
      FileType type = target.type;
      fns[DirEntryKey(new_parent, new_name)] =
          [ino, type](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (rec.entry()) return Status(StatusCode::kAlreadyExists, "entry exists");
        return std::optional<MetaRecord>(WithBody(DirEntry{ino, type}));
      };
      fns[InodeKey(new_parent)] = DirChange([now](Inode& d) -> Status {
        d.entry_count += 1;
        d.mtime_ns = d.ctime_ns = now;
        return Status::Ok();
      });
      const size_t max_bytes =
          o_.max_linked_inode_bytes > 0 ? o_.max_linked_inode_bytes : kMaxRecordValue / 2 - 8192;
      fns[InodeKey(ino)] = [new_parent, new_name, now,
                            max_bytes](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        const Inode* in = rec.inode();
        if (!in || in->state != InodeState::kLive || in->nlink == 0)
          return NotFound("inode is unlinked");
        if (in->nlink >= kMaxLinks) return Status(StatusCode::kTooManyLinks, "too many links");
        MetaRecord out = rec;
        out.inode()->nlink += 1;
        out.inode()->parents.push_back(BackPointer{new_parent, new_name});
        out.inode()->ctime_ns = now;
        // Each link adds a back-pointer: the record must stay small enough to carry as an
        // intent beside itself.
        MetaRecord body_only = out;
        body_only.intent.reset();
        if (body_only.Encode().size() > max_bytes) {
          return Status(StatusCode::kTooManyLinks, "too many links for one inode record");
        }
        return std::optional<MetaRecord>(std::move(out));
      };
      QFS_ASSIGN_OR_RETURN(TxnCtx ctx, BeginTxn(ws, {DirEntryKey(new_parent, new_name),
                                                     InodeKey(new_parent), InodeKey(ino)}));
      for (const auto& key : ctx.txn.participants) {
        Status st = Attach(ws, ctx, key, fns[key]);
        if (!st.ok()) {
          Abort(ws, ctx);
          return st;
        }
      }
      return Commit(ws, ctx);
    });
    if (!s.ok()) return s;
    return ReadInode(ws, ino);
  }

  // True if `dir` is `ancestor` or inside it (reads follow intents).
  Result<bool> IsInside(kj::WaitScope& ws, uint64_t dir, uint64_t ancestor) {
    std::set<uint64_t> seen;
    for (uint64_t cur = dir;;) {
      if (cur == ancestor) return true;
      if (cur == kRootIno) return false;
      if (!seen.insert(cur).second) return Status(StatusCode::kLoop, "directory cycle");
      QFS_ASSIGN_OR_RETURN(Inode in, ReadInode(ws, cur));
      if (in.parents.empty()) return false;
      cur = in.parents.front().parent;
    }
  }

  Status DoRename(kj::WaitScope& ws, uint64_t p1, const std::string& n1, uint64_t p2,
                  const std::string& n2, uint32_t flags, Namespace::OpenFiles* open_here) {
    QFS_RETURN_IF_ERROR(ValidateName(n1));
    QFS_RETURN_IF_ERROR(ValidateName(n2));
    if ((flags & kRenameNoReplace) && (flags & kRenameExchange)) return InvalidArgument("flags");
    return RetryConflicts(ws, [&](kj::WaitScope& ws) -> Status {
      QFS_ASSIGN_OR_RETURN(MetaRecord se, ReadVisible(ws, DirEntryKey(p1, n1)));
      if (!se.entry()) return NotFound(n1 + ": no such entry");
      const DirEntry src = *se.entry();
      QFS_ASSIGN_OR_RETURN(MetaRecord de, ReadVisible(ws, DirEntryKey(p2, n2)));
      std::optional<DirEntry> dst;
      if (de.entry()) dst = *de.entry();
      if (p1 == p2 && n1 == n2) return dst ? Status::Ok() : NotFound("no such entry");
      if ((flags & kRenameNoReplace) && dst)
        return Status(StatusCode::kAlreadyExists, n2 + " exists");
      if ((flags & kRenameExchange) && !dst) return NotFound(n2 + ": no such entry");
      const bool exchange = flags & kRenameExchange;
      const bool src_dir = src.type == FileType::kDirectory;
      const bool dst_dir = dst && dst->type == FileType::kDirectory;
      if (dst && dst->ino == src.ino) return Status::Ok();  // two links to one inode: no-op
      if (dst && !exchange) {
        if (src_dir && !dst_dir)
          return Status(StatusCode::kNotDirectory, "target is not a directory");
        if (!src_dir && dst_dir) return Status(StatusCode::kIsDirectory, "target is a directory");
      }
      QFS_ASSIGN_OR_RETURN(Inode np, ReadInode(ws, p2));
      if (!np.is_dir())
        return Status(StatusCode::kNotDirectory, "target parent is not a directory");
      const bool moves_dir = (src_dir || (exchange && dst_dir)) && p1 != p2;
      // Parent counts: entries and subdirectory links moving between p1 and p2.
      int64_t d1_count = 0, d2_count = 0, d1_links = 0, d2_links = 0;
      if (!exchange) {
        d1_count -= 1;
        if (!dst) d2_count += 1;
        if (src_dir) d1_links -= 1, d2_links += 1;
        if (dst_dir) d2_links -= 1;
      } else {
        if (src_dir) d1_links -= 1, d2_links += 1;
        if (dst_dir) d2_links -= 1, d1_links += 1;
      }
      if (p1 == p2) d1_count += d2_count, d2_count = 0;

      // A rename that involves no directory, or only renames one within its directory to a
      // new name, leaves its directories' inodes out of its transaction (README, "Renames keep
      // the directories out of their transactions"), so renames contend only on the names and
      // inodes they touch. A directory whose count it changes gets a rename mark instead,
      // added beside the intents (a directory gaining a name has its count raised with it) and
      // settled once the transaction is decided, by this client or by whoever meets the mark
      // after a crash; the times of the others are set after the commit.
      const bool parents_outside = (!src_dir && !dst_dir) || (p1 == p2 && !dst && !exchange);
      std::vector<std::pair<uint64_t, int32_t>> marks;  // directory, its count's change
      if (parents_outside) {
        if (d1_count != 0) marks.emplace_back(p1, static_cast<int32_t>(d1_count));
        if (d2_count != 0) marks.emplace_back(p2, static_cast<int32_t>(d2_count));
      }
      std::vector<std::string> keys = {DirEntryKey(p1, n1), DirEntryKey(p2, n2), InodeKey(src.ino)};
      if (!parents_outside) {
        keys.push_back(InodeKey(p1));
        keys.push_back(InodeKey(p2));
      }
      if (dst) keys.push_back(InodeKey(dst->ino));
      int64_t now = Now();
      const bool use_marks = !o_.unsafe_rename_counts_without_marks;
      std::vector<uint64_t> marked_dirs;
      if (use_marks) {
        for (const auto& m : marks) marked_dirs.push_back(m.first);
      }
      QFS_ASSIGN_OR_RETURN(TxnCtx ctx, BeginTxn(ws, keys, marked_dirs));
      const uint64_t txn = ctx.txn.id;
      // The marks are added beside the intents; the transaction commits only once all are in.
      std::vector<kj::Promise<Status>> marking;
      for (const auto& [dir, delta] : use_marks ? marks : decltype(marks)()) {
        marking.push_back(
            fibers_.startFiber([this, dir = dir, mark = RenameMark{txn, delta, now}](
                                   kj::WaitScope& ws) { return AddRenameMark(ws, dir, mark); }));
      }
      auto marked = [&]() {
        Status first;
        for (auto& p : marking) {
          Status s = p.wait(ws);
          if (!s.ok() && first.ok()) first = s;
        }
        marking.clear();
        return first;
      };
      // Settles this transaction's marks, decided as `committed`, all at once. A failure leaves
      // a mark for rmdir or fsck to settle.
      auto settle = [this, txn, marks, use_marks, now](kj::WaitScope& ws, bool committed) {
        std::vector<kj::Promise<void>> settling;
        for (const auto& [dir, delta] : marks) {
          settling.push_back(fibers_.startFiber([this, dir = dir, delta = delta, txn, committed,
                                                 use_marks, now](kj::WaitScope& ws) {
            if (use_marks) {
              (void)SettleRenameMark(ws, dir, txn, committed);
            } else if (committed) {  // negative control: the count changed with no mark
              (void)ChangeCombined(ws, InodeKey(dir), DirChange([delta, now](Inode& d) -> Status {
                                     d.entry_count = static_cast<uint64_t>(
                                         static_cast<int64_t>(d.entry_count) + delta);
                                     d.mtime_ns = d.ctime_ns = now;
                                     return Status::Ok();
                                   }));
            }
          }));
        }
        for (auto& p : settling) p.wait(ws);
      };
      // Only this client commits its transaction, so one it gives up on never commits.
      auto fail = [&](Status s) {
        (void)marked();
        Abort(ws, ctx);
        settle(ws, false);
        return s;
      };
      if (moves_dir) {
        if (!o_.unsafe_move_without_rename_lock) {
          Status l = AcquireRenameLock(ws, ctx);
          if (!l.ok()) return fail(l);
        }
        // Under the lock no other directory move runs, so these reads stay true until commit.
        if (src_dir) {
          auto inside = IsInside(ws, p2, src.ino);
          if (!inside.ok()) return fail(inside.status());
          if (*inside) return fail(InvalidArgument("cannot move a directory into itself"));
        }
        if (exchange && dst_dir) {
          auto inside = IsInside(ws, p1, dst->ino);
          if (!inside.ok()) return fail(inside.status());
          if (*inside) return fail(InvalidArgument("cannot move a directory into itself"));
        }
      }
      std::map<std::string, RecordFn> fns;
      fns[DirEntryKey(p1, n1)] =
          [src, dst, exchange](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (!rec.entry() || !(*rec.entry() == src)) return Conflict("source changed");
        if (exchange) return std::optional<MetaRecord>(WithBody(*dst));
        return std::optional<MetaRecord>(MetaRecord{});
      };
      fns[DirEntryKey(p2, n2)] = [src,
                                  dst](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        std::optional<DirEntry> now_dst;
        if (rec.entry()) now_dst = *rec.entry();
        if (now_dst.has_value() != dst.has_value() || (now_dst && !(*now_dst == *dst)))
          return Conflict("target changed");
        return std::optional<MetaRecord>(WithBody(src));
      };
      if (p1 == p2) {
        fns[InodeKey(p1)] = DirChange([=](Inode& d) -> Status {
          d.entry_count = static_cast<uint64_t>(static_cast<int64_t>(d.entry_count) + d1_count);
          d.nlink = static_cast<uint32_t>(static_cast<int64_t>(d.nlink) + d1_links + d2_links);
          d.mtime_ns = d.ctime_ns = now;
          return Status::Ok();
        });
      } else {
        fns[InodeKey(p1)] = DirChange([=](Inode& d) -> Status {
          d.entry_count = static_cast<uint64_t>(static_cast<int64_t>(d.entry_count) + d1_count);
          d.nlink = static_cast<uint32_t>(static_cast<int64_t>(d.nlink) + d1_links);
          d.mtime_ns = d.ctime_ns = now;
          return Status::Ok();
        });
        fns[InodeKey(p2)] = DirChange([=](Inode& d) -> Status {
          if (d2_links > 0 && d.nlink >= kMaxLinks)
            return Status(StatusCode::kTooManyLinks, "EMLINK");
          d.entry_count = static_cast<uint64_t>(static_cast<int64_t>(d.entry_count) + d2_count);
          d.nlink = static_cast<uint32_t>(static_cast<int64_t>(d.nlink) + d2_links);
          d.mtime_ns = d.ctime_ns = now;
          return Status::Ok();
        });
      }
      auto move_inode = [now](uint64_t from_p, std::string from_n, uint64_t to_p,
                              std::string to_n) {
        return [=](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          if (!rec.inode()) return NotFound("the entry's inode is missing");
          MetaRecord out = rec;
          RemoveBackPointer(*out.inode(), from_p, from_n);
          out.inode()->parents.push_back(BackPointer{to_p, to_n});
          out.inode()->ctime_ns = now;
          return std::optional<MetaRecord>(std::move(out));
        };
      };
      fns[InodeKey(src.ino)] = move_inode(p1, n1, p2, n2);
      // A directory replaced by the rename gets rmdir's dying mark.
      auto dst_marked = std::make_shared<bool>(false);
      auto dst_left_open = std::make_shared<bool>(false);
      if (dst && exchange) {
        fns[InodeKey(dst->ino)] = move_inode(p2, n2, p1, n1);
      } else if (dst_dir) {
        fns[InodeKey(dst->ino)] = DyingMark(now, p2, n2, dst_marked);
      } else if (dst) {
        // A file this mount holds open lives on through its descriptors (unlinked-open).
        bool held = open_here && open_here->is_open && open_here->is_open(dst->ino);
        fns[InodeKey(dst->ino)] =
            DropLink(p2, n2, now, held, held ? open_here->lease_holder : 0, false, dst_left_open);
      }
      for (const auto& key : ctx.txn.participants) {
        Status st = Attach(ws, ctx, key, fns[key]);
        if (!st.ok()) {
          Status failed = fail(st);
          if (*dst_marked) QFS_RETURN_IF_ERROR(ResolveRenameMarks(ws, dst->ino).status());
          return failed;
        }
      }
      Status mark_status = marked();
      if (!mark_status.ok()) return fail(mark_status);
      if (dst_dir && !exchange) {
        Status empty = CheckEmpty(ws, dst->ino);
        if (!empty.ok()) return fail(empty);
      }
      // After the commit, beside the intents' resolution: the marks are settled, and the
      // other directories' times set. The rename has happened whatever these return.
      std::function<void(kj::WaitScope&)> after;
      if (parents_outside) {
        std::vector<uint64_t> timed;  // directories with no mark
        for (uint64_t dir : {p1, p2}) {
          bool has_mark = std::any_of(marks.begin(), marks.end(),
                                      [dir](const auto& m) { return m.first == dir; });
          if (!has_mark && std::find(timed.begin(), timed.end(), dir) == timed.end()) {
            timed.push_back(dir);
          }
        }
        after = [this, settle, timed, now](kj::WaitScope& ws) {
          std::vector<kj::Promise<void>> changing;
          for (uint64_t dir : timed) {
            changing.push_back(fibers_.startFiber([this, dir, now](kj::WaitScope& ws) {
              (void)ChangeCombined(ws, InodeKey(dir), DirChange([now](Inode& d) -> Status {
                                     d.mtime_ns = d.ctime_ns = now;
                                     return Status::Ok();
                                   }));
            }));
          }
          settle(ws, true);
          for (auto& p : changing) p.wait(ws);
        };
      }
      Status committed = Commit(ws, ctx, std::move(after));
      // Aborted by another client: the marks go. Any other failure (a crash injected by a
      // test, an unknown outcome) leaves them for whoever meets them.
      if (IsConflict(committed)) settle(ws, false);
      if (committed.ok()) {
        entry_hints_.erase(DirEntryKey(p1, n1));
        NoteEntry(DirEntryKey(p2, n2), src.ino);
        if (*dst_left_open && open_here) open_here->left_open.push_back(dst->ino);
      }
      return committed;
    });
  }

  // Offsets are (name hash >> 1) + 3: positive as an off_t, and 0..2 stay free for the
  // caller's start, "." and "..". Entries after `offset` have hash >= (offset - 2) << 1: sets
  // `after` to the key to list from (empty: the start); false if no entry can follow.
  static bool EntriesAfter(const std::string& prefix, uint64_t offset, std::string* after) {
    if (offset < 3) return true;
    uint64_t next = offset - 3 + 1;
    if (next >= (uint64_t{1} << 63)) return false;
    *after = prefix + EncodeU64(next << 1);
    return true;
  }

  Result<DirListing> DoReadDir(kj::WaitScope& ws, uint64_t dir, uint64_t offset, uint32_t limit) {
    QFS_ASSIGN_OR_RETURN(Inode d, ReadInode(ws, dir));
    if (!d.is_dir()) return Status(StatusCode::kNotDirectory, "not a directory");
    DirListing out;
    std::string prefix = DirEntryPrefix(dir);
    std::string after;
    if (!EntriesAfter(prefix, offset, &after)) {
      out.end = true;
      return out;
    }
    while (out.entries.size() < limit) {
      auto keys = lister_.ListKeys(InoPlacementKey(dir), prefix, after, limit).wait(ws);
      if (!keys.ok()) return keys.status();
      // Read every key of the page at once, one message per node.
      auto reads = ReadMany(ws, *keys);
      for (size_t i = 0; i < keys->size(); ++i) {
        auto& r = reads[i];
        if (!r.ok()) return r.status();
        QFS_ASSIGN_OR_RETURN(MetaRecord rec, MetaRecord::DecodeOptional(r->payload));
        const std::string& key = (*keys)[i];
        if (rec.intent && !o_.unsafe_read_ignores_intents) {
          QFS_ASSIGN_OR_RETURN(rec, ReadVisible(ws, key));
        }
        if (const DirEntry* e = rec.entry()) {
          DirListing::Entry entry;
          entry.name = key.substr(prefix.size() + 9);
          entry.ino = e->ino;
          entry.type = e->type;
          entry.offset = (DecodeU64(std::string_view(key).substr(prefix.size(), 8)) >> 1) + 3;
          out.entries.push_back(std::move(entry));
          if (out.entries.size() >= limit) {
            // Do not split one hash across pages (the offset is the hash).
            return out;
          }
        }
      }
      if (keys->size() < limit) {
        out.end = true;
        return out;
      }
      after = keys->back();
    }
    return out;
  }

  Result<DirListing> DoReadDirNames(kj::WaitScope& ws, uint64_t dir, uint64_t offset,
                                    uint32_t limit) {
    DirListing out;
    std::string prefix = DirEntryPrefix(dir);
    std::string after;
    if (!EntriesAfter(prefix, offset, &after)) {
      out.end = true;
      return out;
    }
    auto keys = lister_.ListKeys(InoPlacementKey(dir), prefix, after, limit).wait(ws);
    if (!keys.ok()) return keys.status();
    for (const auto& key : *keys) {
      if (key.size() < prefix.size() + 9) continue;
      DirListing::Entry entry;
      entry.name = key.substr(prefix.size() + 9);
      entry.offset = (DecodeU64(std::string_view(key).substr(prefix.size(), 8)) >> 1) + 3;
      out.entries.push_back(std::move(entry));
    }
    out.end = keys->size() < limit;
    return out;
  }

  static Status ValidateXattrName(const std::string& name) {
    if (name.empty() || name.size() > kMaxXattrNameSize) {
      return Status(StatusCode::kRange, "xattr name must be 1..255 bytes");
    }
    for (const char* ns : {"user.", "trusted.", "security.", "system."}) {
      if (name.rfind(ns, 0) == 0 && name.size() > std::strlen(ns)) return Status::Ok();
      if (name == ns) return InvalidArgument("xattr name has no suffix");  // as ext4: EINVAL
    }
    return Status(StatusCode::kNotSupported, "xattr namespace not supported");
  }

  Result<std::string> DoGetXattr(kj::WaitScope& ws, uint64_t ino, const std::string& name) {
    QFS_RETURN_IF_ERROR(ValidateXattrName(name));
    QFS_ASSIGN_OR_RETURN(Inode in, ReadInode(ws, ino));
    for (const auto& x : in.xattrs) {
      if (x.name == name) return x.value;
    }
    return Status(StatusCode::kNoData, "no such attribute");
  }

  Status DoSetXattr(kj::WaitScope& ws, uint64_t ino, const std::string& name,
                    const std::string& value, uint32_t flags, bool remove) {
    QFS_RETURN_IF_ERROR(ValidateXattrName(name));
    if (value.size() > kMaxXattrValueSize)
      return Status(StatusCode::kTooLarge, "xattr value over 64 KiB");
    int64_t now = Now();
    auto r =
        Change(ws, InodeKey(ino), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          if (!rec.inode()) return NotFound("no inode");
          MetaRecord out = rec;
          auto& xs = out.inode()->xattrs;
          auto it =
              std::find_if(xs.begin(), xs.end(), [&](const Xattr& x) { return x.name == name; });
          if (remove) {
            if (it == xs.end()) return Status(StatusCode::kNoData, "no such attribute");
            xs.erase(it);
          } else {
            if (it != xs.end() && (flags & kXattrCreate))
              return Status(StatusCode::kAlreadyExists, "attribute exists");
            if (it == xs.end() && (flags & kXattrReplace))
              return Status(StatusCode::kNoData, "no such attribute");
            size_t total = name.size() + value.size();
            for (const auto& x : xs) {
              if (x.name != name) total += x.name.size() + x.value.size();
            }
            if (total > kMaxXattrTotalSize)
              return Status(StatusCode::kNoSpace, "xattrs over 256 KiB");
            if (it != xs.end()) {
              it->value = value;
            } else {
              xs.push_back(Xattr{name, value});
            }
          }
          out.inode()->ctime_ns = now;
          return std::optional<MetaRecord>(std::move(out));
        });
    return r.ok() ? Status::Ok() : r.status();
  }

  Result<Inode> DoPublish(kj::WaitScope& ws, uint64_t ino, const LayoutUpdate& u,
                          std::shared_ptr<LayoutConflict> conflict) {
    int64_t now = Now();
    auto r =
        Change(ws, InodeKey(ino), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          conflict->current.clear();
          conflict->pages.clear();
          const Inode* cur = rec.inode();
          if (!cur) return NotFound("no inode");
          if (cur->type != FileType::kRegular) return InvalidArgument("not a regular file");
          if (!u.pages.empty() && cur->slots.size() > kSlotsPerPage) {
            return InvalidArgument("layout pages for a layout held inline whole");
          }
          for (const auto& c : u.pages) {
            const PageRef* now_page = cur->FindPage(c.index);
            PageRef seen = now_page ? *now_page : PageRef{c.index, ChunkId(), 0, 0};
            if (!(seen.id == c.base) || (now_page && seen.live != c.base_live)) {
              conflict->pages.emplace_back(c.index, seen);
            }
          }
          if (!conflict->pages.empty())
            return Conflict("layout pages changed underneath the writer");
          if (u.written_end > MaxFileSize(cur->chunk_size) ||
              (u.truncated_to && *u.truncated_to > MaxFileSize(cur->chunk_size))) {
            return TooLarge();
          }
          MetaRecord out = rec;
          Inode& in = *out.inode();
          if (u.truncated_to) {
            TruncateLayout(in, *u.truncated_to);
            in.size = *u.truncated_to;
          }
          for (const auto& c : u.slots) {
            Slot now_slot = c.index < in.slots.size() ? in.slots[c.index] : Slot{};
            if (!(now_slot == c.base) && !u.truncated_to) {
              conflict->current.emplace_back(c.index, now_slot);
            }
          }
          if (!conflict->current.empty()) return Conflict("slots changed underneath the writer");
          for (const auto& c : u.slots) {
            if (!in.pages.empty() && c.index >= kSlotsPerPage) {
              return InvalidArgument("inline slot beyond the inline part of a paged layout");
            }
            if (in.slots.size() <= c.index) in.slots.resize(c.index + 1);
            in.slots[c.index] = c.updated;
          }
          for (const auto& c : u.pages) {
            if (c.index == 0 || c.index > kMaxLayoutPages) return TooLarge();
            in.SetPage(PageRef{c.index, c.updated, kSlotsPerPage * in.chunk_size, c.used});
          }
          if (!in.pages.empty() && in.slots.size() > kSlotsPerPage) {
            return InvalidArgument("layout both paged and held inline whole");
          }
          in.size = std::max(in.size, u.written_end);
          if (u.truncated_to && u.written_end < *u.truncated_to) in.size = *u.truncated_to;
          if (u.touch_mtime) in.mtime_ns = in.ctime_ns = now;
          if (u.attrs) {
            if (u.attrs->size) return InvalidArgument("a size carried by a layout publish");
            QFS_RETURN_IF_ERROR(ApplyAttrs(in, *u.attrs, now));
          }
          return std::optional<MetaRecord>(std::move(out));
        });
    if (!r.ok()) return r.status();
    return *r->inode();
  }

  Status DoLease(kj::WaitScope& ws, uint64_t ino, uint64_t holder, bool release) {
    int64_t until = Now() + o_.lease_ns;
    auto r =
        Change(ws, InodeKey(ino), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          const Inode* in = rec.inode();
          if (!in || in->state != InodeState::kUnlinkedOpen || in->lease_holder != holder) {
            return std::optional<MetaRecord>();
          }
          MetaRecord out = rec;
          if (release) {
            out.inode()->state = InodeState::kDying;
            out.inode()->ctime_ns = until - o_.lease_ns;
          } else {
            out.inode()->lease_until_ns = until;
          }
          return std::optional<MetaRecord>(std::move(out));
        });
    return r.ok() ? Status::Ok() : r.status();
  }

  // ---- file locks ----------------------------------------------------------------------------

  // One change of the file's lock table: `apply` edits the table and says whether it changed.
  // Returns whether `holder` has locks in the table afterwards.
  Result<bool> ChangeLocks(kj::WaitScope& ws, uint64_t ino, uint64_t holder,
                           const std::function<Result<bool>(FileLocks*, int64_t)>& apply) {
    bool holds = false;
    std::string key = FileLocksKey(ino);
    auto r = Change(ws, key, [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
      QFS_ASSIGN_OR_RETURN(FileLocks table, LockTable(key, rec));
      int64_t now = Now();
      QFS_ASSIGN_OR_RETURN(bool changed, apply(&table, now));
      holds = HolderHasLocks(table, holder);
      if (!changed) return std::optional<MetaRecord>();
      table.changed_ns = now;
      return std::optional<MetaRecord>(WithBody(std::move(table)));
    });
    if (!r.ok()) return r.status();
    return holds;
  }

  static Result<FileLocks> LockTable(const std::string& key, const MetaRecord& rec) {
    if (const FileLocks* f = rec.file_locks()) return *f;
    if (rec.absent()) return FileLocks{};
    return Status(StatusCode::kCorruption, DescribeKey(key) + " holds something other than locks");
  }

  Result<std::optional<FileLock>> DoGetLock(kj::WaitScope& ws, uint64_t ino,
                                            const LockRequest& request) {
    std::string key = FileLocksKey(ino);
    QFS_ASSIGN_OR_RETURN(MetaRecord rec, ReadRaw(ws, key));
    QFS_ASSIGN_OR_RETURN(FileLocks table, LockTable(key, rec));
    return FindLockConflict(table, request, Now(), o_.clock_skew_ns);
  }

  // ---- repair core ---------------------------------------------------------------------------

  Result<int> DoResolveTransactions(kj::WaitScope& ws) {
    int touched = 0;
    std::string after;
    for (;;) {
      auto keys = lister_.ListKeys("", "X/", after, 256).wait(ws);
      if (!keys.ok()) return keys.status();
      for (const auto& key : *keys) {
        QFS_ASSIGN_OR_RETURN(MetaRecord x, ReadRaw(ws, key));
        const Txn* t = x.txn();
        if (!t) continue;
        TxnState fate = t->state;
        if (fate == TxnState::kPending) {
          if (Now() <= t->deadline_ns) continue;
          QFS_ASSIGN_OR_RETURN(fate, SetTxnState(ws, t->id, TxnState::kAborted));
        }
        for (const auto& p : t->participants) {
          QFS_RETURN_IF_ERROR(ApplyIntent(ws, p, t->id, fate == TxnState::kCommitted));
        }
        for (uint64_t dir : t->marked_dirs) {
          QFS_RETURN_IF_ERROR(SettleRenameMark(ws, dir, t->id, fate == TxnState::kCommitted));
        }
        ++touched;
      }
      if (keys->size() < 256) return touched;
      after = keys->back();
    }
  }

  // `write` false (fsck's check): the same count, reading only (no marks settled, no keys
  // settled); returns whether the counts are wrong.
  Result<bool> DoFixDirectoryCounts(kj::WaitScope& ws, uint64_t dir, bool write = true) {
    size_t settled = 0;
    for (int attempt = 0;; ++attempt) {
      // Marks of decided renames first: their count changes are the renames', not errors.
      if (write) QFS_RETURN_IF_ERROR(ResolveRenameMarks(ws, dir, &settled).status());
      QFS_ASSIGN_OR_RETURN(Inode d, ReadInode(ws, dir));
      if (!d.is_dir()) return false;
      // Only a directory quiet for longer than any create or unlink may take between its two
      // rounds (LateSecondRound) is recounted: its ctime (set by every count change) and, below,
      // every tombstone in it older than that, and its record unchanged through the scan.
      // Otherwise a create whose count rose before the scan and whose entry lands after it, or
      // an unlink whose tombstone the scan saw and whose count drop lands after the write, would
      // leave the count one low: an rmdir could then remove the directory with that entry in it.
      const bool careful = !o_.unsafe_recount_ignores_changes;
      const int64_t quiet_before = Now() - RecountQuietNs();
      auto busy = [&](const std::string& why) {
        return Status(StatusCode::kBusy, "not recounted: " + why + " in the last " +
                                             std::to_string(RecountQuietNs() / 1'000'000) +
                                             " ms (a create or unlink may be half done); run "
                                             "again later");
      };
      if (careful && d.ctime_ns > quiet_before) return busy("the directory changed");
      // The marks still pending: the count holds their raises (+1) already, and their
      // settling lowers it once decided (committed -1, aborted +1), from the entries as the
      // scan sees them while the renames are pending. So the count written is the entries plus
      // the pending raises, valid only with exactly these marks in place and every one of their
      // renames still pending when the scan ended (checked after it).
      const std::vector<RenameMark> pending = d.rename_marks;
      uint64_t raises = 0;
      for (const auto& m : pending) raises += m.delta > 0;
      uint64_t entries = 0, subdirs = 0;
      std::string prefix = DirEntryPrefix(dir), after;
      for (;;) {
        // Settling (below) needs every key any replica holds, chosen or not: every replica of
        // the directory's set must answer the listing.
        const bool settle = careful && !o_.unsafe_recount_skips_settling && write;
        auto keys = lister_.ListKeys(InoPlacementKey(dir), prefix, after, 256, settle).wait(ws);
        if (!keys.ok()) return keys.status();
        for (const auto& key : *keys) {
          MetaRecord e;
          if (settle) {
            // A crashed (or stalled) create's entry may sit accepted on one replica, unchosen,
            // where a read quorum does not see it; a later prepare that hears that replica
            // would adopt it after this count left it out. So every key is settled: an identity
            // write at a fresh ballot on a write quorum, which no older accepted value can win
            // against, of whatever its prepare finds (an entry, a tombstone, or nothing).
            // A key with no value anywhere becomes an absence stamped as removed long ago (1 ns
            // after the epoch): no unlink made it, so it must not read as a recent removal to
            // this or a later recount, and `fsck --gc` may delete it.
            QFS_ASSIGN_OR_RETURN(
                e, Change(ws, key, [](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                  MetaRecord out = rec;
                  if (out.absent() && out.removed_ns == 0) out.removed_ns = 1;
                  return std::optional<MetaRecord>(std::move(out));
                }));
          } else {
            QFS_ASSIGN_OR_RETURN(e, ReadVisible(ws, key));
          }
          if (const DirEntry* en = e.entry()) {
            ++entries;
            if (en->type == FileType::kDirectory) ++subdirs;
          } else if (careful && e.absent() && e.removed_ns > quiet_before) {
            return busy("a name was removed");
          }
        }
        if (keys->size() < 256) break;
        after = keys->back();
      }
      bool marks_moved = false;
      for (const auto& m : pending) {
        QFS_ASSIGN_OR_RETURN(TxnState fate, TxnFate(ws, m.txn, false));
        if (fate != TxnState::kPending) marks_moved = true;
      }
      if (!write) {
        // A renamer settles its marks right after its commit: one still there after several
        // looks outlived its renamer, and counts as wrong (only --repair settles it).
        if (marks_moved && attempt < 8) {
          Backoff(ws, attempt);
          continue;
        }
        if (marks_moved) return true;
        QFS_ASSIGN_OR_RETURN(Inode now, ReadInode(ws, dir));
        if (now.rename_marks != pending || now.ctime_ns != d.ctime_ns ||
            now.entry_count != d.entry_count || now.nlink != d.nlink || now.state != d.state) {
          return busy("the directory changed during the count");
        }
        uint32_t want_links =
            now.state == InodeState::kLive ? static_cast<uint32_t>(2 + subdirs) : 0;
        return now.entry_count != entries + raises || now.nlink != want_links;
      }
      bool changed = false;
      auto r = Change(
          ws, InodeKey(dir), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
            changed = false;
            if (marks_moved || !rec.inode()) return std::optional<MetaRecord>();
            MetaRecord out = rec;
            Inode& in = *out.inode();
            if (in.rename_marks != pending) {
              marks_moved = true;
              return std::optional<MetaRecord>();
            }
            if (careful && (in.ctime_ns != d.ctime_ns || in.entry_count != d.entry_count ||
                            in.nlink != d.nlink || in.state != d.state)) {
              return busy("the directory changed during the count");
            }
            uint32_t want_links =
                in.state == InodeState::kLive ? static_cast<uint32_t>(2 + subdirs) : 0;
            if (in.entry_count == entries + raises && in.nlink == want_links)
              return std::optional<MetaRecord>();
            in.entry_count = entries + raises;
            in.nlink = want_links;
            changed = true;
            return std::optional<MetaRecord>(std::move(out));
          });
      if (!r.ok()) return r.status();
      if (!marks_moved) return changed || settled > 0;
      if (attempt >= 20) {
        return Status(StatusCode::kBusy, "renames kept changing the directory while counting it");
      }
      Backoff(ws, attempt);
    }
  }

  Result<bool> DoFixInode(kj::WaitScope& ws, uint64_t ino) {
    QFS_ASSIGN_OR_RETURN(Inode in, ReadInode(ws, ino));
    if (ino == kRootIno) return false;
    // The entries that really name it, among its back-pointers.
    std::vector<BackPointer> named;
    // Whether a name it had was removed or reused since it was born: an unlink (or a rename
    // over it) that stopped after the entry's change and before the inode's. Not adopted,
    // then, but finished: a deleted file must not come back in lost+found. A name never
    // written, or changed only before the inode's birth, is a create that never named it.
    bool name_gone = false;
    for (const auto& bp : in.parents) {
      // A back-pointer can be doubled: a link under the name whose unlink did not finish
      // (its back-pointer stayed) adds it again. One entry is one link.
      if (std::find(named.begin(), named.end(), bp) != named.end()) continue;
      QFS_ASSIGN_OR_RETURN(MetaRecord e, ReadVisible(ws, DirEntryKey(bp.parent, bp.name)));
      if (e.entry() && e.entry()->ino == ino) {
        named.push_back(bp);
      } else if (e.absent()) {
        if (e.removed_ns > 1 && e.removed_ns + o_.clock_skew_ns >= in.btime_ns) name_gone = true;
      } else if (e.entry() && !name_gone) {
        auto other = ReadInode(ws, e.entry()->ino);
        if (other.ok() && other->btime_ns + o_.clock_skew_ns >= in.btime_ns) name_gone = true;
      }
    }
    bool changed = false;
    int64_t now = Now();
    // No entry names it yet, but a create may still be about to: leave it alone until its
    // birth deadline (plus the skew bound) has passed.
    if (named.empty() && in.state == InodeState::kLive &&
        now <= in.birth_deadline_ns + o_.clock_skew_ns) {
      return false;
    }
    bool adopt = named.empty() && in.state == InodeState::kLive &&
                 now > in.birth_deadline_ns + o_.clock_skew_ns && !in.is_dir() && !name_gone;
    // A directory no entry names is dropped only when empty: one that still holds entries (its
    // own entry lost to damage) is adopted, or the whole tree under it would be lost.
    bool adopt_dir = false;
    if (in.is_dir() && named.empty() && in.state == InodeState::kLive &&
        now > in.birth_deadline_ns + o_.clock_skew_ns) {
      Status empty = CheckEmpty(ws, ino);
      if (empty.code() == StatusCode::kNotEmpty) {
        adopt_dir = true;
      } else if (!empty.ok()) {
        return empty;
      }
    }
    auto r =
        Change(ws, InodeKey(ino), [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
          changed = false;
          if (!rec.inode()) return std::optional<MetaRecord>();
          MetaRecord out = rec;
          Inode& cur = *out.inode();
          // `named` was found from the back-pointers read above: a link or unlink since then
          // (its back-pointer added or dropped) would be overwritten by it.
          if (cur.parents != in.parents || cur.state != in.state) {
            return Status(StatusCode::kBusy,
                          "its links changed while fsck checked them; run fsck again");
          }
          if (cur.is_dir()) {
            if (named.empty() && cur.state == InodeState::kLive &&
                now > cur.birth_deadline_ns + o_.clock_skew_ns) {
              if (adopt_dir) {
                if (!cur.parents.empty()) cur.parents.clear(), changed = true;  // adopted below
              } else {
                cur.state = InodeState::kDying;
                cur.ctime_ns = now;
                cur.nlink = 0;
                changed = true;
              }
            }
            if (!changed) return std::optional<MetaRecord>();
            return std::optional<MetaRecord>(std::move(out));
          }
          uint32_t want = static_cast<uint32_t>(named.size());
          if (cur.parents != named) cur.parents = named, changed = true;
          if (cur.nlink != want && !(adopt && want == 0)) cur.nlink = want, changed = true;
          if (want == 0 && cur.state == InodeState::kLive && !adopt &&
              now > cur.birth_deadline_ns + o_.clock_skew_ns) {
            cur.state = InodeState::kDying;
            cur.ctime_ns = now;
            changed = true;
          }
          if (cur.state == InodeState::kUnlinkedOpen && cur.lease_until_ns < now) {
            cur.state = InodeState::kDying;
            cur.ctime_ns = now;
            changed = true;
          }
          if (!changed) return std::optional<MetaRecord>();
          return std::optional<MetaRecord>(std::move(out));
        });
    if (!r.ok()) return r.status();
    if (adopt || adopt_dir) {
      QFS_ASSIGN_OR_RETURN(uint64_t lf, EnsureLostFound(ws));
      std::string name = "#" + std::to_string(ino);
      auto linked = DoAdopt(ws, ino, lf, name, in.type);
      if (!linked.ok()) return linked;
      changed = true;
    }
    return changed;
  }

  Result<uint64_t> EnsureLostFound(kj::WaitScope& ws) {
    auto found = DoLookup(ws, kRootIno, "lost+found");
    if (found.ok()) return found->ino;
    CreateRequest req;
    req.type = FileType::kDirectory;
    req.mode = 0700;
    auto made = DoCreate(ws, kRootIno, "lost+found", req);
    if (made.ok()) return made->ino;
    if (made.status().code() == StatusCode::kAlreadyExists) {
      QFS_ASSIGN_OR_RETURN(Inode again, DoLookup(ws, kRootIno, "lost+found"));
      return again.ino;
    }
    return made.status();
  }

  // Names an unnamed inode in lost+found (a transaction like link, from nlink 0).
  Result<bool> DoAdopt(kj::WaitScope& ws, uint64_t ino, uint64_t dir, const std::string& name,
                       FileType type) {
    Status s = RetryConflicts(ws, [&](kj::WaitScope& ws) -> Status {
      int64_t now = Now();
      QFS_ASSIGN_OR_RETURN(TxnCtx ctx,
                           BeginTxn(ws, {DirEntryKey(dir, name), InodeKey(dir), InodeKey(ino)}));
      std::map<std::string, RecordFn> fns;
      fns[DirEntryKey(dir, name)] =
          [ino, type](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (rec.entry()) {
          if (rec.entry()->ino == ino) return std::optional<MetaRecord>();
          return Status(StatusCode::kAlreadyExists, "entry exists");
        }
        return std::optional<MetaRecord>(WithBody(DirEntry{ino, type}));
      };
      const bool is_dir = type == FileType::kDirectory;
      fns[InodeKey(dir)] = DirChange([now, is_dir](Inode& d) -> Status {
        d.entry_count += 1;
        if (is_dir) d.nlink += 1;  // the adopted directory's ".."
        d.mtime_ns = d.ctime_ns = now;
        return Status::Ok();
      });
      fns[InodeKey(ino)] = [dir, name, now,
                            is_dir](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
        if (!rec.inode()) return NotFound("inode vanished");
        if (!rec.inode()->parents.empty())
          return Status(StatusCode::kAlreadyExists, "named meanwhile");
        MetaRecord out = rec;
        if (!is_dir) out.inode()->nlink = 1;  // a directory's stays 2 + its subdirectories'
        if (is_dir && out.inode()->nlink < 2) out.inode()->nlink = 2;
        out.inode()->parents = {BackPointer{dir, name}};
        out.inode()->ctime_ns = now;
        return std::optional<MetaRecord>(std::move(out));
      };
      for (const auto& key : ctx.txn.participants) {
        Status st = Attach(ws, ctx, key, fns[key]);
        if (!st.ok()) {
          Abort(ws, ctx);
          return st;
        }
      }
      return Commit(ws, ctx);
    });
    if (!s.ok()) return s;
    return true;
  }

 private:
  Proposer& proposer_;
  InodeAllocator& allocator_;
  RecordLister& lister_;
  kj::Timer& timer_;
  WallClock& clock_;
  NamespaceOptions o_;
  kj::FiberPool fibers_;
  std::mt19937_64 rng_;
  std::map<std::string, CombineQueue> combine_;
};

Namespace::Namespace(Proposer& proposer, InodeAllocator& allocator, RecordLister& lister,
                     kj::Timer& timer, WallClock& clock, NamespaceOptions options)
    : options_(options) {
  if (options_.client_id == 0) {
    std::random_device rd;
    options_.client_id = ((static_cast<uint64_t>(rd()) << 32) ^ rd()) | 1;
  }
  impl_ = std::make_unique<Impl>(proposer, allocator, lister, timer, clock, options_);
}

Namespace::~Namespace() = default;

#define QFS_FIBER(T, body) impl_->Run<T>([ =, impl = impl_.get() ](kj::WaitScope & ws) -> T body)

uint64_t Namespace::unlinks_without_reads() const { return impl_->unlinks_without_reads_; }
uint64_t Namespace::lookups_with_hint() const { return impl_->lookups_with_hint_; }
uint64_t Namespace::conflict_retries() const { return impl_->conflict_retries_; }
uint64_t Namespace::batches_found_applied() const { return impl_->batches_found_applied_; }
uint64_t Namespace::batches_lost_track() const { return impl_->batches_lost_track_; }
std::optional<Inode> Namespace::RecentOwnDirectory(uint64_t ino, kj::Duration max_age,
                                                   kj::Duration* age) const {
  return impl_->RecentOwnDirectory(ino, max_age, age);
}

kj::Promise<Result<Inode>> Namespace::EnsureRoot(uint32_t mode, uint32_t uid, uint32_t gid) {
  return QFS_FIBER(Result<Inode>, { return impl->DoEnsureRoot(ws, mode, uid, gid); });
}
kj::Promise<Result<Inode>> Namespace::Lookup(uint64_t parent, std::string name,
                                             bool parent_is_dir) {
  return QFS_FIBER(Result<Inode>, { return impl->DoLookup(ws, parent, name, parent_is_dir); });
}
kj::Promise<Result<std::optional<uint64_t>>> Namespace::EntryTarget(uint64_t parent,
                                                                    std::string name) {
  return QFS_FIBER(Result<std::optional<uint64_t>>, {
    QFS_ASSIGN_OR_RETURN(MetaRecord e, impl->ReadVisible(ws, DirEntryKey(parent, name)));
    if (!e.entry()) return std::optional<uint64_t>();
    return std::optional<uint64_t>(e.entry()->ino);
  });
}
kj::Promise<Result<Inode>> Namespace::GetAttr(uint64_t ino) {
  return QFS_FIBER(Result<Inode>, { return impl->DoGetAttr(ws, ino); });
}
kj::Promise<Result<Inode>> Namespace::SetAttr(uint64_t ino, SetAttrRequest request) {
  return QFS_FIBER(Result<Inode>, { return impl->DoSetAttr(ws, ino, request); });
}
kj::Promise<Result<Inode>> Namespace::Create(uint64_t parent, std::string name,
                                             CreateRequest request) {
  return QFS_FIBER(Result<Inode>, {
    for (int attempt = 0;; ++attempt) {
      auto r = impl->DoCreate(ws, parent, name, request);
      if (r.ok() || r.status().code() != StatusCode::kConflict || attempt > 3) return r;
    }
  });
}
kj::Promise<Result<std::string>> Namespace::ReadLink(uint64_t ino) {
  return QFS_FIBER(Result<std::string>, { return impl->DoReadLink(ws, ino); });
}
kj::Promise<Status> Namespace::Unlink(uint64_t parent, std::string name, bool held_open,
                                      uint64_t lease_holder) {
  return QFS_FIBER(Status, { return impl->DoUnlink(ws, parent, name, held_open, lease_holder); });
}
kj::Promise<Status> Namespace::Rmdir(uint64_t parent, std::string name) {
  return QFS_FIBER(Status, { return impl->DoRmdir(ws, parent, name); });
}
kj::Promise<Result<Inode>> Namespace::Link(uint64_t ino, uint64_t new_parent,
                                           std::string new_name) {
  return QFS_FIBER(Result<Inode>, { return impl->DoLink(ws, ino, new_parent, new_name); });
}
kj::Promise<Status> Namespace::Rename(uint64_t parent, std::string name, uint64_t new_parent,
                                      std::string new_name, uint32_t flags,
                                      std::shared_ptr<OpenFiles> open_here) {
  return QFS_FIBER(Status, {
    return impl->DoRename(ws, parent, name, new_parent, new_name, flags, open_here.get());
  });
}
kj::Promise<std::vector<Result<Inode>>> Namespace::GetAttrMany(std::vector<uint64_t> inos) {
  return QFS_FIBER(std::vector<Result<Inode>>, { return impl->ReadInodes(ws, inos); });
}
kj::Promise<Result<DirListing>> Namespace::ReadDir(uint64_t dir, uint64_t offset, uint32_t limit) {
  return QFS_FIBER(Result<DirListing>, { return impl->DoReadDir(ws, dir, offset, limit); });
}
kj::Promise<Result<DirListing>> Namespace::ReadDirNames(uint64_t dir, uint64_t offset,
                                                        uint32_t limit) {
  return QFS_FIBER(Result<DirListing>, { return impl->DoReadDirNames(ws, dir, offset, limit); });
}
kj::Promise<Result<std::string>> Namespace::GetXattr(uint64_t ino, std::string name) {
  return QFS_FIBER(Result<std::string>, { return impl->DoGetXattr(ws, ino, name); });
}
kj::Promise<Status> Namespace::SetXattr(uint64_t ino, std::string name, std::string value,
                                        uint32_t flags) {
  return QFS_FIBER(Status, { return impl->DoSetXattr(ws, ino, name, value, flags, false); });
}
kj::Promise<Result<std::vector<std::string>>> Namespace::ListXattr(uint64_t ino) {
  return QFS_FIBER(Result<std::vector<std::string>>, {
    QFS_ASSIGN_OR_RETURN(Inode in, impl->ReadInode(ws, ino));
    std::vector<std::string> names;
    for (const auto& x : in.xattrs) names.push_back(x.name);
    return names;
  });
}
kj::Promise<Status> Namespace::RemoveXattr(uint64_t ino, std::string name) {
  return QFS_FIBER(Status, { return impl->DoSetXattr(ws, ino, name, "", 0, true); });
}
kj::Promise<Result<Inode>> Namespace::PublishLayout(uint64_t ino, LayoutUpdate update,
                                                    std::shared_ptr<LayoutConflict> conflict) {
  return QFS_FIBER(Result<Inode>, { return impl->DoPublish(ws, ino, update, conflict); });
}
kj::Promise<Status> Namespace::RenewLease(uint64_t ino, uint64_t holder) {
  return QFS_FIBER(Status, { return impl->DoLease(ws, ino, holder, false); });
}
kj::Promise<Status> Namespace::ReleaseLease(uint64_t ino, uint64_t holder) {
  return QFS_FIBER(Status, { return impl->DoLease(ws, ino, holder, true); });
}
kj::Promise<Result<bool>> Namespace::SetLock(uint64_t ino, LockRequest request,
                                             std::shared_ptr<FileLock> conflict) {
  int64_t lease = options_.lock_lease_ns, skew = options_.clock_skew_ns;
  return QFS_FIBER(Result<bool>, {
    return impl->ChangeLocks(ws, ino, request.holder, [&](FileLocks* t, int64_t now) {
      return ApplyLockRequest(t, request, now, lease, skew, conflict.get());
    });
  });
}
kj::Promise<Result<std::optional<FileLock>>> Namespace::GetLock(uint64_t ino, LockRequest request) {
  return QFS_FIBER(Result<std::optional<FileLock>>, { return impl->DoGetLock(ws, ino, request); });
}
kj::Promise<Result<bool>> Namespace::ReleaseLocks(uint64_t ino, uint64_t holder,
                                                  std::optional<LockOwnerRef> only) {
  return QFS_FIBER(Result<bool>, {
    return impl->ChangeLocks(ws, ino, holder, [&](FileLocks* t, int64_t) -> Result<bool> {
      return ReleaseHolderLocks(t, holder, only);
    });
  });
}
kj::Promise<Result<bool>> Namespace::RenewLocks(uint64_t ino, uint64_t holder) {
  int64_t lease = options_.lock_lease_ns;
  return QFS_FIBER(Result<bool>, {
    return impl->ChangeLocks(ws, ino, holder, [&](FileLocks* t, int64_t now) -> Result<bool> {
      return RenewHolderLocks(t, holder, now + lease);
    });
  });
}
kj::Promise<Result<int>> Namespace::ResolveTransactions() {
  return QFS_FIBER(Result<int>, { return impl->DoResolveTransactions(ws); });
}
kj::Promise<Result<bool>> Namespace::FixDirectoryCounts(uint64_t dir) {
  return QFS_FIBER(Result<bool>, { return impl->DoFixDirectoryCounts(ws, dir); });
}
kj::Promise<Result<bool>> Namespace::CheckDirectoryCounts(uint64_t dir) {
  return QFS_FIBER(Result<bool>, { return impl->DoFixDirectoryCounts(ws, dir, false); });
}
kj::Promise<Result<bool>> Namespace::RemoveEntry(uint64_t parent, std::string name, uint64_t ino) {
  return QFS_FIBER(Result<bool>, {
    bool removed = false;
    auto r = impl->Change(ws, DirEntryKey(parent, name),
                          [&](const MetaRecord& rec) -> Result<std::optional<MetaRecord>> {
                            removed = false;
                            if (!rec.entry() || rec.entry()->ino != ino) {
                              return std::optional<MetaRecord>();
                            }
                            removed = true;
                            return std::optional<MetaRecord>(MetaRecord{});
                          });
    if (!r.ok()) return r.status();
    // The parent's count is now one high; fsck's walk finds that and recounts the directory
    // once it has been quiet long enough (the tombstone just written counts as a change).
    return removed;
  });
}
kj::Promise<Result<bool>> Namespace::FixInode(uint64_t ino) {
  return QFS_FIBER(Result<bool>, { return impl->DoFixInode(ws, ino); });
}

}  // namespace quorumfs
