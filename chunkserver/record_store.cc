#include "chunkserver/record_store.h"

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include <cstdio>

#include "common/record_key.h"

namespace quorumfs {
namespace {

std::string RowKey(const std::string& key) { return "R" + key; }
std::string FloorKey(const std::string& range) { return "F" + range; }

std::string EncodeBallot(const Ballot& b) { return EncodeU64(b.counter) + EncodeU64(b.proposer); }

// LevelDB reports a full disk as an IOError whose text carries strerror(ENOSPC).
Status FromLevelDb(const leveldb::Status& s, const std::string& what) {
  bool full = s.IsIOError() && (s.ToString().find("No space") != std::string::npos ||
                                s.ToString().find("quota") != std::string::npos);
  return Status(full ? StatusCode::kNoSpace : StatusCode::kIoError, what + ": " + s.ToString());
}

}  // namespace

Result<leveldb::DB*> RecordStore::OpenDb(const std::string& dir) {
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &db);
  if (!s.ok()) return FromLevelDb(s, "open LevelDB at " + dir);
  return db;
}

Result<std::unique_ptr<RecordStore>> RecordStore::Open(const std::string& dir,
                                                       RecordStoreOptions options) {
  QFS_ASSIGN_OR_RETURN(leveldb::DB * db, OpenDb(dir));
  std::unique_ptr<RecordStore> store(new RecordStore());
  store->dir_ = dir;
  store->options_ = options;
  store->db_.reset(db);
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  for (it->Seek("R"); it->Valid() && it->key().starts_with("R"); it->Next()) {
    ++store->record_count_;
  }
  store->sync_thread_ = std::thread([s = store.get()] { s->SyncLoop(); });
  return store;
}

RecordStore::~RecordStore() noexcept {
  if (!staged_.empty()) HandOff();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
}

uint64_t RecordStore::sync_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return syncs_;
}

uint64_t RecordStore::inline_sync_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inline_syncs_;
}

Status RecordStore::ClosedStatus() const {
  return closed_why_.WithContext("metadata store closed after a failed write, not yet reopened");
}

Result<std::optional<AcceptorState>> RecordStore::LoadRecord(const std::string& key) {
  auto it = overlay_rows_.find(key);
  if (it != overlay_rows_.end()) return it->second.row;
  std::string raw;
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  if (!db_) return ClosedStatus();
  leveldb::Status s = db_->Get(leveldb::ReadOptions(), RowKey(key), &raw);
  if (s.IsNotFound()) return std::optional<AcceptorState>();
  if (!s.ok()) return IoError("LevelDB get: " + s.ToString());
  QFS_ASSIGN_OR_RETURN(AcceptorState state, AcceptorState::Decode(raw));
  return std::optional<AcceptorState>(std::move(state));
}

Result<Ballot> RecordStore::LoadFloor(const std::string& range) {
  auto it = overlay_floors_.find(range);
  if (it != overlay_floors_.end()) return it->second.first;
  std::string raw;
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  if (!db_) return ClosedStatus();
  leveldb::Status s = db_->Get(leveldb::ReadOptions(), FloorKey(range), &raw);
  if (s.IsNotFound()) return Ballot{};
  if (!s.ok()) return IoError("LevelDB get: " + s.ToString());
  if (raw.size() != 16) return Status(StatusCode::kCorruption, "malformed ballot floor row");
  return Ballot{DecodeU64(raw), DecodeU64(std::string_view(raw).substr(8))};
}

bool RecordStore::HasPendingWrite(const std::string& key) const {
  return overlay_rows_.count(key) > 0;
}

kj::Promise<Status> RecordStore::Barrier() {
  // An empty batch queued behind every earlier one: syncs complete in queue order.
  auto paf = kj::newPromiseAndCrossThreadFulfiller<Status>();
  Stage(kj::mv(paf.fulfiller), AcceptorWrite{});
  return kj::mv(paf.promise);
}

void RecordStore::Stage(kj::Own<kj::CrossThreadPromiseFulfiller<Status>> done,
                        AcceptorWrite write) {
  staged_.push_back(Pending{std::move(write), kj::mv(done)});
  if (handoff_scheduled_) return;
  handoff_scheduled_ = true;
  handoff_ = kj::evalLast([this] { HandOff(); }).eagerlyEvaluate(nullptr);
}

void RecordStore::HandOff() {
  handoff_scheduled_ = false;
  if (TryWriteInline()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : staged_) queue_.push_back(std::move(p));
  }
  staged_.clear();
  cv_.notify_one();
}

kj::Promise<Status> RecordStore::Commit(AcceptorWrite write) {
  if (write.empty()) return Status::Ok();
  // Keys touched by this batch stay in the overlay until it is durable.
  std::vector<std::string> rows, floors;
  int64_t counted = 0;  // this batch's change to record_count_, undone if it fails
  for (const auto& [key, row] : write.rows) {
    auto& e = overlay_rows_[key];
    bool existed_before = e.pending > 0 ? e.row.has_value() : LoadRecordDurableExists(key);
    if (row && !existed_before) ++counted;
    if (!row && existed_before) --counted;
    e.row = row;
    ++e.pending;
    rows.push_back(key);
  }
  for (const auto& [range, ballot] : write.floors) {
    auto& e = overlay_floors_[range];
    e.first = ballot;
    ++e.second;
    floors.push_back(range);
  }
  record_count_ += counted;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<Status>();
  Stage(kj::mv(paf.fulfiller), std::move(write));
  return paf.promise.then(
      [this, rows = std::move(rows), floors = std::move(floors), counted](Status s) {
        if (!s.ok()) record_count_ -= counted;
        for (const auto& key : rows) {
          auto it = overlay_rows_.find(key);
          if (it != overlay_rows_.end() && --it->second.pending == 0) overlay_rows_.erase(it);
        }
        for (const auto& range : floors) {
          auto it = overlay_floors_.find(range);
          if (it != overlay_floors_.end() && --it->second.second == 0) overlay_floors_.erase(it);
        }
        return s;
      });
}

bool RecordStore::LoadRecordDurableExists(const std::string& key) {
  std::string raw;
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  if (!db_) return false;
  return db_->Get(leveldb::ReadOptions(), RowKey(key), &raw).ok();
}

template <typename It>
Status RecordStore::WriteBatches(It begin, It end) {
  leveldb::WriteBatch wb;
  for (It p = begin; p != end; ++p) {
    for (const auto& [key, row] : p->write.rows) {
      if (row) {
        wb.Put(RowKey(key), row->Encode());
      } else {
        wb.Delete(RowKey(key));
      }
    }
    for (const auto& [range, ballot] : p->write.floors)
      wb.Put(FloorKey(range), EncodeBallot(ballot));
  }
  leveldb::WriteOptions wo;
  wo.sync = true;
  leveldb::Status s = db_->Write(wo, &wb);
  return s.ok() ? Status::Ok() : FromLevelDb(s, "LevelDB write");
}

bool RecordStore::TryWriteInline() {
  if (options_.inline_sync_below.count() <= 0 || staged_.empty()) return false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Every earlier batch is durable when none is queued or being written, so these become
    // durable after them, as on the sync thread. Only this thread queues batches: none can be
    // queued while it writes.
    if (busy_ || reopen_ || !queue_.empty() || last_sync_ >= options_.inline_sync_below) {
      return false;
    }
    busy_ = true;
  }
  std::optional<Status> status;  // nullopt: LevelDB is closed (the sync thread reopens it)
  auto start = std::chrono::steady_clock::now();
  {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    if (db_) status = WriteBatches(staged_.begin(), staged_.end());
  }
  auto took = std::chrono::steady_clock::now() - start;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    if (!status) return false;
    ++syncs_;
    ++inline_syncs_;
    last_sync_ = took;
    if (!status->ok()) reopen_ = *status;  // before any other write: the log may be torn
  }
  if (!status->ok()) cv_.notify_one();
  for (auto& p : staged_) p.done->fulfill(Status(*status));
  staged_.clear();
  return true;
}

void RecordStore::SyncLoop() {
  for (;;) {
    std::deque<Pending> batch;
    std::optional<Status> reopen;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [this] { return stop_ || !queue_.empty() || reopen_; };
      if (db_) {
        cv_.wait(lock, ready);
      } else if (!cv_.wait_for(lock, kReopenInterval, ready)) {
        // Closed, and no write to retry the reopen: reads fail meanwhile (an acceptor that
        // cannot read its row answers without writing), so the store retries on its own.
        lock.unlock();
        Reopen(Status::Ok());
        continue;
      }
      if (reopen_) {
        reopen.swap(reopen_);
      } else if (queue_.empty()) {
        return;
      } else {
        batch.swap(queue_);
      }
      busy_ = true;
    }
    if (reopen) {
      // An inline write failed: its log may end in a torn record.
      Reopen(*reopen);
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
      continue;
    }
    if (!db_) Reopen(Status::Ok());
    Status status;
    auto start = std::chrono::steady_clock::now();
    if (!db_) {
      std::shared_lock<std::shared_mutex> lock(db_mu_);
      status = ClosedStatus();
    } else {
      status = WriteBatches(batch.begin(), batch.end());
      if (!status.ok()) Reopen(status);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++syncs_;
      last_sync_ = std::chrono::steady_clock::now() - start;
    }
    for (auto& p : batch) p.done->fulfill(Status(status));
    // Only now may the loop write a batch itself: its promises then resolve after these (a
    // loop's cross-thread fulfilments run in order), as ChunkserverService::ReadDurable's
    // barrier expects.
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
  }
}

void RecordStore::Reopen(const Status& why) {
  std::unique_ptr<leveldb::DB> old;
  bool was_open;
  {
    std::unique_lock<std::shared_mutex> lock(db_mu_);
    was_open = db_ != nullptr;
    old = std::move(db_);
    if (!why.ok()) closed_why_ = why;
  }
  // Closing waits for LevelDB's background work and opening replays the log and writes a
  // table: both outside the lock, so the loop thread's reads answer "closed" meanwhile instead
  // of waiting on the disk.
  old.reset();
  auto db = OpenDb(dir_);
  std::unique_lock<std::shared_mutex> lock(db_mu_);
  if (db.ok()) {
    db_.reset(*db);
    std::fprintf(stderr, "quorumfs-chunkserver: metadata store reopened after: %s\n",
                 closed_why_.ToString().c_str());
    closed_why_ = Status::Ok();
    return;
  }
  if (was_open) {
    std::fprintf(stderr,
                 "quorumfs-chunkserver: metadata store closed after: %s; reopen failed: %s "
                 "(retried every 200 ms and at every write)\n",
                 closed_why_.ToString().c_str(), db.status().ToString().c_str());
  }
  closed_why_ = db.status();
}

Result<std::vector<std::pair<std::string, AcceptorState>>> RecordStore::Scan(
    const std::string& prefix, const std::string& after, size_t limit, RecordScanOptions options,
    bool* cut) {
  std::vector<std::pair<std::string, AcceptorState>> out;
  if (cut) *cut = false;
  size_t bytes = 0;
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  if (!db_) return ClosedStatus();
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(leveldb::ReadOptions()));
  std::string start = RowKey(after.empty() || after < prefix ? prefix : after);
  for (it->Seek(start); it->Valid() && out.size() < limit; it->Next()) {
    std::string key = it->key().ToString().substr(1);
    if (it->key().size() < 1 || it->key()[0] != 'R' || key.compare(0, prefix.size(), prefix) != 0) {
      break;
    }
    if (!after.empty() && key <= after) continue;
    auto state = AcceptorState::Decode(std::string_view(it->value().data(), it->value().size()));
    if (!state.ok()) return state.status().WithContext("row " + DescribeKey(key));
    if (options.keys_only && state->value) state->value->clear();
    // A row's ballots and list overhead: well under 64 bytes in a reply.
    size_t row_bytes = 64 + key.size() + (state->value ? state->value->size() : 0);
    if (!out.empty() && bytes + row_bytes > options.max_bytes) {
      if (cut) *cut = true;
      break;
    }
    bytes += row_bytes;
    out.emplace_back(std::move(key), std::move(state).value());
  }
  if (!it->status().ok()) return IoError("LevelDB scan: " + it->status().ToString());
  return out;
}

}  // namespace quorumfs
