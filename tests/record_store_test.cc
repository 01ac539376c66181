#include "chunkserver/record_store.h"

#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/vector.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "common/record_key.h"
#include "tests/test_cluster.h"

namespace quorumfs {
namespace {

// Every test runs twice: batches synced by the sync thread alone, and by the loop thread
// whenever the sync thread is idle (inline_sync_below so high that every sync qualifies).
class RecordStoreTest : public ::testing::TestWithParam<int64_t> {
 protected:
  RecordStoreOptions Options() const {
    RecordStoreOptions o;
    o.inline_sync_below = std::chrono::microseconds(GetParam());
    return o;
  }
  bool Inline() const { return GetParam() > 0; }
  void SetUp() override {
    char tmpl[] = "/tmp/quorumfs-recordstore-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  std::string dir_;
  bool mounted_ = false;  // a tmpfs over dir_ (in this process's private mount namespace)
  // Held by pointer: kj's destructors are noexcept(false), gtest's fixture destructor is not.
  std::unique_ptr<kj::EventLoop> loop_ = std::make_unique<kj::EventLoop>();
  std::unique_ptr<kj::WaitScope> scope_ = std::make_unique<kj::WaitScope>(*loop_);
  kj::WaitScope& ws_ = *scope_;
};

AcceptorWrite Put(const std::string& key, Ballot b, std::string value) {
  AcceptorWrite w;
  AcceptorState s;
  s.promised = b;
  s.accepted = b;
  s.value = std::move(value);
  w.rows.emplace_back(key, s);
  return w;
}

TEST_P(RecordStoreTest, CommitIsDurableAcrossReopen) {
  {
    auto store = RecordStore::Open(dir_ + "/meta", Options());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Status s = (*store)->Commit(Put(InodeKey(1), Ballot{3, 9}, "v")).wait(ws_);
    ASSERT_TRUE(s.ok());
    AcceptorWrite floor;
    floor.floors.emplace_back(FloorRangeOf(InodeKey(5000)), Ballot{7, 1});
    ASSERT_TRUE((*store)->Commit(floor).wait(ws_).ok());
  }
  auto store = RecordStore::Open(dir_ + "/meta", Options());
  ASSERT_TRUE(store.ok());
  auto row = (*store)->LoadRecord(InodeKey(1));
  ASSERT_TRUE(row.ok());
  ASSERT_TRUE(row->has_value());
  EXPECT_EQ((*row)->accepted, (Ballot{3, 9}));
  EXPECT_EQ((*row)->value, "v");
  EXPECT_EQ(*(*store)->LoadFloor(FloorRangeOf(InodeKey(5000))), (Ballot{7, 1}));
  EXPECT_EQ((*store)->record_count(), 1u);
}

TEST_P(RecordStoreTest, PendingWritesAreVisibleBeforeTheirSync) {
  auto store = RecordStore::Open(dir_ + "/meta", Options());
  ASSERT_TRUE(store.ok());
  auto p = (*store)->Commit(Put(InodeKey(2), Ballot{1, 1}, "pending"));
  // Decided against the overlay, before the sync finished.
  auto row = (*store)->LoadRecord(InodeKey(2));
  ASSERT_TRUE(row.ok() && row->has_value());
  EXPECT_EQ((*row)->value, "pending");
  ASSERT_TRUE(p.wait(ws_).ok());
  AcceptorWrite del;
  del.rows.emplace_back(InodeKey(2), std::nullopt);
  auto p2 = (*store)->Commit(del);
  EXPECT_FALSE((*store)->LoadRecord(InodeKey(2))->has_value());
  ASSERT_TRUE(p2.wait(ws_).ok());
  EXPECT_FALSE((*store)->LoadRecord(InodeKey(2))->has_value());
  EXPECT_EQ((*store)->record_count(), 0u);
}

TEST_P(RecordStoreTest, ConcurrentCommitsShareSyncs) {
  auto store = RecordStore::Open(dir_ + "/meta", Options());
  ASSERT_TRUE(store.ok());
  uint64_t before = (*store)->sync_count();
  kj::Vector<kj::Promise<Status>> all;
  for (int i = 0; i < 500; ++i) {
    all.add((*store)->Commit(Put(InodeKey(100 + i), Ballot{1, 1}, "x")));
  }
  for (auto& p : all) ASSERT_TRUE(p.wait(ws_).ok());
  uint64_t syncs = (*store)->sync_count() - before;
  EXPECT_LT(syncs, 500u) << "no group commit";
  if (Inline()) {
    EXPECT_EQ((*store)->inline_sync_count(), (*store)->sync_count()) << "the sync thread was idle";
  } else {
    EXPECT_EQ((*store)->inline_sync_count(), 0u);
  }
  EXPECT_EQ((*store)->record_count(), 500u);
  auto rows = (*store)->Scan("I/", "", 1000);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 500u);
  auto page = (*store)->Scan("I/", InodeKey(100 + 249), 1000);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->size(), 250u);
}

// Batches committed in one loop turn reach the sync thread together when the loop is about to
// wait, however long the turn takes: one sync for all of them (a create's inode and parent
// accepts arrive side by side). Before, the first woke the sync thread alone.
TEST_P(RecordStoreTest, CommitsOfOneLoopTurnShareOneSync) {
  auto store = RecordStore::Open(dir_ + "/meta", Options());
  ASSERT_TRUE(store.ok());
  for (int round = 0; round < 3; ++round) {
    uint64_t before = (*store)->sync_count();
    auto first = (*store)->Commit(Put(InodeKey(10 + round), Ballot{1, 1}, "inode"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the rest of a long turn
    auto second = (*store)->Commit(Put(InodeKey(20 + round), Ballot{1, 1}, "parent"));
    auto barrier = (*store)->Barrier();
    ASSERT_TRUE(first.wait(ws_).ok());
    ASSERT_TRUE(second.wait(ws_).ok());
    ASSERT_TRUE(barrier.wait(ws_).ok());
    EXPECT_EQ((*store)->sync_count() - before, 1u) << "round " << round;
  }
  // And the next turn's batch is synced on its own, after them.
  uint64_t before = (*store)->sync_count();
  ASSERT_TRUE((*store)->Commit(Put(InodeKey(30), Ballot{1, 1}, "later")).wait(ws_).ok());
  EXPECT_EQ((*store)->sync_count() - before, 1u);
  EXPECT_EQ((*store)->record_count(), 7u);
}

// A full disk fails the writes it catches with kNoSpace and leaves a store that opens again
// with every acknowledged row. LevelDB's log writer counts a record it wrote only part of as
// written, so before the store reopened LevelDB after a failed write, the next record followed
// the torn one mid-file and the next open failed "Corruption: checksum mismatch": a chunkserver
// whose disk once filled did not start again. Uses a small tmpfs in a private mount namespace
// (needs root, which CI has).
TEST_P(RecordStoreTest, AFullDiskFailsWritesAndTheStoreStillOpens) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts a tmpfs and needs root";
  ASSERT_EQ(testing::MountTmpfs(dir_, "4m"), "");
  mounted_ = true;
  std::map<uint64_t, std::string> acked;  // ino -> value of every acknowledged row
  {
    auto store = RecordStore::Open(dir_ + "/meta", Options());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    // Ballast that is freed later, as a user frees space: enough for the reopen, which writes
    // the log's rows (incompressible here) into a table before it deletes the log.
    {
      std::ofstream ballast(dir_ + "/ballast");
      ballast << std::string(2 << 20, 'b');
    }
    std::mt19937_64 rng(7);
    Status failed;
    uint64_t ino = 1;
    for (; ino < 400; ++ino) {
      std::string value(20000 + ino, '\0');
      for (auto& c : value) c = static_cast<char>(rng());
      Status s = (*store)->Commit(Put(InodeKey(ino), Ballot{1, 1}, value)).wait(ws_);
      if (!s.ok()) {
        failed = s;
        break;
      }
      acked[ino] = value;
    }
    ASSERT_FALSE(failed.ok()) << "the disk never filled";
    EXPECT_EQ(failed.code(), StatusCode::kNoSpace) << failed.ToString();
    EXPECT_GT(acked.size(), 5u);
    // The failed row is not visible, and the store still answers for the others.
    auto gone = (*store)->LoadRecord(InodeKey(ino));
    if (gone.ok()) {
      EXPECT_FALSE(gone->has_value());
    }
    // Space comes back; writes succeed again, after the failed one.
    ASSERT_EQ(::unlink((dir_ + "/ballast").c_str()), 0);
    for (uint64_t more = 1000; more < 1005; ++more) {
      std::string value(3000, 'm');
      Status s = (*store)->Commit(Put(InodeKey(more), Ballot{2, 1}, value)).wait(ws_);
      ASSERT_TRUE(s.ok()) << s.ToString();
      acked[more] = value;
    }
    EXPECT_EQ((*store)->record_count(), acked.size());
  }
  auto store = RecordStore::Open(dir_ + "/meta", Options());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (const auto& [ino, value] : acked) {
    auto row = (*store)->LoadRecord(InodeKey(ino));
    ASSERT_TRUE(row.ok()) << row.status().ToString();
    ASSERT_TRUE(row->has_value()) << "row " << ino << " lost";
    EXPECT_EQ((*row)->value, value) << "row " << ino;
  }
  EXPECT_EQ((*store)->record_count(), acked.size());
}

// A slow sync sends the batches after it to the sync thread, so that the loop thread blocks on
// the disk for at most one sync; the batches stay durable and in order either way.
TEST_P(RecordStoreTest, ASlowSyncSendsTheNextBatchesToTheSyncThread) {
  RecordStoreOptions o;
  // Inline: every real sync is slower than 1 µs. SyncThread: 0, never inline.
  o.inline_sync_below = std::chrono::microseconds(Inline() ? 1 : 0);
  {
    auto store = RecordStore::Open(dir_ + "/meta", o);
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE((*store)
                      ->Commit(Put(InodeKey(1), Ballot{1, uint64_t(i)}, std::to_string(i)))
                      .wait(ws_)
                      .ok());
    }
    EXPECT_EQ((*store)->inline_sync_count(), Inline() ? 1u : 0u)
        << "inline: only the first, before any sync was timed";
    EXPECT_EQ((*store)->sync_count(), 20u);
  }
  auto store = RecordStore::Open(dir_ + "/meta", o);
  ASSERT_TRUE(store.ok());
  auto row = (*store)->LoadRecord(InodeKey(1));
  ASSERT_TRUE(row.ok() && row->has_value());
  EXPECT_EQ((*row)->value, "19") << "the last acknowledged write is the one that stays";
}

INSTANTIATE_TEST_SUITE_P(Syncs, RecordStoreTest, ::testing::Values(0, 1000000),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return info.param > 0 ? "Inline" : "SyncThread";
                         });

}  // namespace
}  // namespace quorumfs
