// RecordStore: the acceptor's rows in LevelDB under <data>/meta, with group commit.
//
// Rows: "R" + key -> AcceptorState; "F" + range -> ballot floor (16 bytes).
// The RPC loop thread decides every request against the latest state (durable rows plus the
// writes still waiting for their sync, kept in an in-memory overlay) and hands the resulting
// batch to Commit(). A dedicated sync thread merges every batch queued since its last sync
// into one LevelDB write with sync=true, then resolves their promises, so concurrent requests
// share one fsync and the loop never blocks on the disk. Batches reach the sync thread when the
// loop has nothing else to run (kj::evalLast): requests that arrived together (a create's
// inode and parent accepts, sent side by side) share a sync instead of the first waking the
// sync thread alone. kj polls for I/O only when its queue is empty (no busy-poll interval is
// set), and evalLast runs before that, so a batch waits at most for the rest of its turn.
// Replies are sent only after Commit's promise resolves, and batches become durable in the
// order they were committed, so a reply never depends on a state that could be lost in a crash.
// Destroy the store on the loop thread while its event loop is alive.
#pragma once

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/acceptor.h"
#include "common/status.h"

namespace leveldb {
class DB;
}

namespace quorumfs {

class RecordStore : public AcceptorStorage {
 public:
  static Result<std::unique_ptr<RecordStore>> Open(const std::string& dir);
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

  // Durable rows with key starting with prefix and > after, in order, at most limit.
  Result<std::vector<std::pair<std::string, AcceptorState>>> Scan(const std::string& prefix,
                                                                  const std::string& after,
                                                                  size_t limit);
  uint64_t record_count() const { return record_count_; }

  // Number of LevelDB syncs so far (for tests of group commit).
  uint64_t sync_count() const;

 private:
  RecordStore() = default;
  void SyncLoop();
  bool LoadRecordDurableExists(const std::string& key);
  void Stage(kj::Own<kj::CrossThreadPromiseFulfiller<Status>> done, AcceptorWrite write);
  void HandOff();

  struct Pending {
    AcceptorWrite write;
    kj::Own<kj::CrossThreadPromiseFulfiller<Status>> done;
  };

  std::unique_ptr<leveldb::DB> db_;
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
  bool stop_ = false;   // guarded by mu_
  uint64_t syncs_ = 0;  // guarded by mu_
  std::thread sync_thread_;
};

}  // namespace quorumfs
