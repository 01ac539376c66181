// RecordStore: the acceptor's rows in LevelDB under <data>/meta, with group commit.
//
// Rows: "R" + key -> AcceptorState; "F" + range -> ballot floor (16 bytes).
// The RPC loop thread decides every request against the latest state (durable rows plus the
// writes still waiting for their sync, kept in an in-memory overlay) and hands the resulting
// batch to Commit(). Batches are handed on when the loop has nothing else to run
// (kj::evalLast): requests that arrived together (a create's inode and parent accepts, sent
// side by side) share a sync instead of the first one syncing alone. kj polls for I/O only when
// its queue is empty (no busy-poll interval is set), and evalLast runs before that, so a batch
// waits at most for the rest of its turn. A dedicated sync thread merges every batch queued
// since its last sync into one LevelDB write with sync=true, then resolves their promises, so
// concurrent requests share one fsync. When that thread is idle and syncs are fast (the last
// took less than `inline_sync_below`), the loop thread writes and syncs the turn's batches
// itself: two thread wake-ups fewer per batch, which on this 2-core VM is most of what a sync
// round costs beyond the disk; requests that arrive meanwhile wait in their sockets and form
// the next batch. A slow sync (a busy or rotating disk) sends the batches after it back to the
// sync thread, so the loop blocks at most one sync before reads go on without waiting for the
// disk. Replies are sent only after Commit's promise resolves, and batches become durable in
// the order they were committed (a batch is written inline only when no earlier one is queued
// or being written), so a reply never depends on a state that could be lost in a crash.
// A write that fails (a full disk) fails its whole batch, and the sync thread then closes and
// reopens LevelDB before the next one: LevelDB's log writer counts a record it could write only
// part of as written, so the next record would follow the torn one mid-file and the log would
// fail its checksum at the next open (a chunkserver whose disk once filled would not start
// again). Reopening recovers the log up to the torn tail, which recovery drops. While a reopen
// fails (the disk is still full), every read and write answers its error, and each new batch
// tries again, as does the sync thread every kReopenInterval.
// Destroy the store on the loop thread while its event loop is alive.
#pragma once

#include <kj/async.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/acceptor.h"
#include "common/status.h"

namespace leveldb {
class DB;
}

namespace quorumfs {

struct RecordStoreOptions {
  // The loop thread writes a batch itself, instead of waking the sync thread, while that thread
  // is idle and the last sync took less than this; zero: always the sync thread.
  std::chrono::microseconds inline_sync_below{1000};
};

// RecordStore::Scan's bounds (see there).
struct RecordScanOptions {
  size_t max_bytes = SIZE_MAX;
  bool keys_only = false;
};

class RecordStore : public AcceptorStorage {
 public:
  static Result<std::unique_ptr<RecordStore>> Open(const std::string& dir,
                                                   RecordStoreOptions options = {});
  ~RecordStore() noexcept override;  // waits for queued batches to be durable, then closes LevelDB

  // AcceptorStorage; loop thread only.
  Result<std::optional<AcceptorState>> LoadRecord(const std::string& key) override;
  Result<Ballot> LoadFloor(const std::string& range) override;

  // Makes `write` durable; loop thread only. The promise resolves on the calling thread.
  kj::Promise<Status> Commit(AcceptorWrite write);

  // True while `key` has a write that is not yet durable (loop thread only).
  bool HasPendingWrite(const std::string& key) const;
  // Resolves once every batch committed before this call is durable (loop thread only).
  kj::Promise<Status> Barrier();

  // Durable rows with key starting with prefix and > after, in order, at most limit, and
  // after the first row no more than `max_bytes` of keys and values (`*cut` true when that
  // bound ended the scan). `keys_only`: each value present is returned empty (its bytes are
  // neither copied nor counted).
  Result<std::vector<std::pair<std::string, AcceptorState>>> Scan(const std::string& prefix,
                                                                  const std::string& after,
                                                                  size_t limit,
                                                                  RecordScanOptions options = {},
                                                                  bool* cut = nullptr);
  uint64_t record_count() const { return record_count_; }

  // Number of LevelDB syncs so far (for tests of group commit), and of those the loop thread
  // did itself.
  uint64_t sync_count() const;
  uint64_t inline_sync_count() const;

 private:
  static constexpr std::chrono::milliseconds kReopenInterval{200};
  RecordStore() = default;
  static Result<leveldb::DB*> OpenDb(const std::string& dir);
  void SyncLoop();
  // Sync thread: closes LevelDB and opens it again (after a failed write, or while closed).
  void Reopen(const Status& why);
  // Why the store is closed (Ok while open); callers hold db_mu_.
  Status ClosedStatus() const;
  bool LoadRecordDurableExists(const std::string& key);
  void Stage(kj::Own<kj::CrossThreadPromiseFulfiller<Status>> done, AcceptorWrite write);
  void HandOff();

  struct Pending {
    AcceptorWrite write;
    kj::Own<kj::CrossThreadPromiseFulfiller<Status>> done;
  };
  // Loop thread: writes staged_ itself if the sync thread is idle and syncs are fast; false if
  // the batches must go to the sync thread.
  bool TryWriteInline();
  // One LevelDB write with sync=true of every batch in [begin, end); db_ is open, and the caller
  // is the sync thread (the only one that replaces db_) or holds db_mu_ shared.
  template <typename It>
  Status WriteBatches(It begin, It end);

  std::string dir_;
  RecordStoreOptions options_;
  // db_ is null while a reopen has failed. The sync thread is the only one that replaces it,
  // holding db_mu_ exclusively; the loop thread reads through it holding db_mu_ shared.
  mutable std::shared_mutex db_mu_;
  std::unique_ptr<leveldb::DB> db_;
  Status closed_why_;  // guarded by db_mu_: the failure that closed db_
  // Overlay of not-yet-durable writes (loop thread only): key -> row (nullopt = deleted),
  // with a count of queued writes touching it so it is dropped once the last one is durable.
  struct OverlayEntry {
    std::optional<AcceptorState> row;
    int pending = 0;
  };
  std::map<std::string, OverlayEntry> overlay_rows_;
  std::map<std::string, std::pair<Ballot, int>> overlay_floors_;
  uint64_t record_count_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;  // guarded by mu_
  // Batches committed in this loop turn, handed to queue_ when the loop is about to wait.
  std::vector<Pending> staged_;
  bool handoff_scheduled_ = false;
  kj::Promise<void> handoff_ = nullptr;
  bool stop_ = false;          // guarded by mu_
  uint64_t syncs_ = 0;         // guarded by mu_
  uint64_t inline_syncs_ = 0;  // guarded by mu_
  // Guarded by mu_: a batch is being written (by either thread, until its promises are
  // fulfilled) or LevelDB reopened after a failed inline write; the loop then queues its
  // batches instead of writing them itself. (The periodic reopen of a closed store does not set
  // it: db_ is null then, which sends batches to the queue too.)
  bool busy_ = false;
  std::chrono::steady_clock::duration last_sync_{};  // guarded by mu_: how long it took
  // Guarded by mu_: an inline write failed; the sync thread reopens LevelDB before any other
  // write (why: the failure).
  std::optional<Status> reopen_;
  std::thread sync_thread_;
};

}  // namespace quorumfs
