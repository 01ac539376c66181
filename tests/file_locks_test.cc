// File-lock rules (common/file_locks.h) on one file's lock table, and the table's record
// encoding: conflicts, splitting and merging of an owner's POSIX ranges, flock conversion, the
// lease and clock-skew rules, the size bound, and malformed tables refused.
#include "common/file_locks.h"

#include <gtest/gtest.h>

#include <string>

#include "common/record_key.h"

namespace quorumfs {
namespace {

constexpr int64_t kNow = 1'000'000'000'000;
constexpr int64_t kLease = 20'000'000'000;
constexpr int64_t kSkew = 1'000'000'000;

LockRequest Posix(uint64_t holder, uint64_t owner, LockType type, uint64_t start, uint64_t end) {
  LockRequest r;
  r.holder = holder;
  r.owner = owner;
  r.pid = static_cast<uint32_t>(owner);
  r.kind = LockKind::kPosix;
  r.type = type;
  r.start = start;
  r.end = end;
  return r;
}

LockRequest Flock(uint64_t holder, uint64_t owner, LockType type) {
  LockRequest r = Posix(holder, owner, type, 0, UINT64_MAX);
  r.kind = LockKind::kFlock;
  return r;
}

Status Apply(FileLocks& t, const LockRequest& r, int64_t now = kNow, FileLock* conflict = nullptr) {
  auto res = ApplyLockRequest(&t, r, now, kLease, kSkew, conflict);
  return res.ok() ? Status::Ok() : res.status();
}

// The owner's ranges as "type:start-end" strings, in order.
std::vector<std::string> Ranges(const FileLocks& t, uint64_t holder, uint64_t owner) {
  std::vector<std::string> out;
  for (const auto& l : t.locks) {
    if (l.holder != holder || l.owner != owner) continue;
    out.push_back(std::string(l.type == LockType::kWrite ? "W" : "R") + ":" +
                  std::to_string(l.start) + "-" +
                  (l.end == UINT64_MAX ? std::string("EOF") : std::to_string(l.end)));
  }
  return out;
}

TEST(FileLocks, ReadLocksShareWriteLocksExclude) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 0, 99)).ok());
  EXPECT_TRUE(Apply(t, Posix(2, 20, LockType::kRead, 50, 149)).ok());
  FileLock c;
  Status s = Apply(t, Posix(2, 21, LockType::kWrite, 90, 95), kNow, &c);
  EXPECT_EQ(s.code(), StatusCode::kWouldBlock) << s.ToString();
  EXPECT_EQ(s.ToErrno(), EAGAIN);
  EXPECT_EQ(c.holder, 1u);
  EXPECT_EQ(c.owner, 10u);
  EXPECT_EQ(c.start, 0u);
  EXPECT_EQ(c.end, 99u);
  // Past both read locks: free.
  EXPECT_TRUE(Apply(t, Posix(2, 21, LockType::kWrite, 150, UINT64_MAX)).ok());
  // A read lock where that write lock is: blocked; just before it: free.
  EXPECT_EQ(Apply(t, Posix(1, 10, LockType::kRead, 200, 200)).code(), StatusCode::kWouldBlock);
  EXPECT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 149, 149)).ok());
  // The same owner on another mount is another owner.
  EXPECT_EQ(Apply(t, Posix(3, 21, LockType::kRead, 150, 150)).code(), StatusCode::kWouldBlock);
}

TEST(FileLocks, AnOwnersRangesSplitAndMerge) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 0, 99)).ok());
  // A read lock in the middle of one's own write lock splits it.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 40, 59)).ok());
  EXPECT_EQ(Ranges(t, 1, 10), (std::vector<std::string>{"W:0-39", "R:40-59", "W:60-99"}));
  // Unlocking across two pieces trims both.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kUnlock, 30, 69)).ok());
  EXPECT_EQ(Ranges(t, 1, 10), (std::vector<std::string>{"W:0-29", "W:70-99"}));
  // A write lock touching both merges the three into one.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 30, 69)).ok());
  EXPECT_EQ(Ranges(t, 1, 10), (std::vector<std::string>{"W:0-99"}));
  // Adjacent ranges of one type merge; of different types they do not.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 100, 199)).ok());
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 200, UINT64_MAX)).ok());
  EXPECT_EQ(Ranges(t, 1, 10), (std::vector<std::string>{"W:0-199", "R:200-EOF"}));
  // Unlocking everything empties the owner's list; unlocking again changes nothing.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kUnlock, 0, UINT64_MAX)).ok());
  EXPECT_TRUE(t.locks.empty());
  auto again =
      ApplyLockRequest(&t, Posix(1, 10, LockType::kUnlock, 0, UINT64_MAX), kNow, kLease, kSkew);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST(FileLocks, OneOwnersLocksNeverBlockItself) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 0, 9)).ok());
  // Upgrading one's own read lock to a write lock: allowed while nobody else reads there.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 0, 9)).ok());
  EXPECT_EQ(Ranges(t, 1, 10), (std::vector<std::string>{"W:0-9"}));
  ASSERT_TRUE(Apply(t, Posix(1, 11, LockType::kRead, 20, 29)).ok());
  // Another owner of the same mount reading there blocks the upgrade.
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 20, 29)).ok());
  EXPECT_EQ(Apply(t, Posix(1, 10, LockType::kWrite, 20, 29)).code(), StatusCode::kWouldBlock);
}

TEST(FileLocks, FlockIsWholeFileConvertsInPlaceAndIgnoresPosixLocks) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 0, UINT64_MAX)).ok());
  // flock and POSIX locks do not interact (as on Linux).
  ASSERT_TRUE(Apply(t, Flock(2, 20, LockType::kWrite)).ok());
  EXPECT_EQ(Apply(t, Flock(1, 30, LockType::kRead)).code(), StatusCode::kWouldBlock);
  // Converting one's own exclusive flock to shared lets other readers in.
  ASSERT_TRUE(Apply(t, Flock(2, 20, LockType::kRead)).ok());
  EXPECT_EQ(Ranges(t, 2, 20), (std::vector<std::string>{"R:0-EOF"}));
  ASSERT_TRUE(Apply(t, Flock(1, 30, LockType::kRead)).ok());
  EXPECT_EQ(Apply(t, Flock(2, 20, LockType::kWrite)).code(), StatusCode::kWouldBlock);
  // A flock over part of a file, or a range that ends before it starts, is refused.
  LockRequest part = Flock(1, 30, LockType::kRead);
  part.end = 10;
  EXPECT_EQ(Apply(t, part).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Apply(t, Posix(1, 10, LockType::kRead, 10, 9)).code(), StatusCode::kInvalidArgument);
}

TEST(FileLocks, LapsedLocksStopCountingOnlyPastTheSkewBound) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kWrite, 0, 0)).ok());
  int64_t expires = t.locks[0].expires_ns;
  EXPECT_EQ(expires, kNow + kLease);
  // At the expiry and up to the skew bound past it, the lock still counts.
  EXPECT_EQ(Apply(t, Posix(2, 20, LockType::kWrite, 0, 0), expires).code(),
            StatusCode::kWouldBlock);
  EXPECT_EQ(Apply(t, Posix(2, 20, LockType::kWrite, 0, 0), expires + kSkew).code(),
            StatusCode::kWouldBlock);
  EXPECT_FALSE(LocksAllExpired(t, expires + kSkew, kSkew));
  // Past it, the lock is dropped and the new one granted in the same change.
  ASSERT_TRUE(Apply(t, Posix(2, 20, LockType::kWrite, 0, 0), expires + kSkew + 1).ok());
  EXPECT_TRUE(Ranges(t, 1, 10).empty());
  EXPECT_EQ(Ranges(t, 2, 20), (std::vector<std::string>{"W:0-0"}));
  // The old holder's renewal does not bring it back; it learns it has none.
  EXPECT_FALSE(RenewHolderLocks(&t, 1, expires + kLease));
  EXPECT_FALSE(HolderHasLocks(t, 1));
  // Renewal extends the live holder's locks, never shortens them.
  int64_t now2 = expires + kSkew + 1;
  EXPECT_TRUE(RenewHolderLocks(&t, 2, now2 + 2 * kLease));
  EXPECT_EQ(t.locks[0].expires_ns, now2 + 2 * kLease);
  EXPECT_FALSE(RenewHolderLocks(&t, 2, now2));
  // F_GETLK sees no lapsed lock.
  EXPECT_FALSE(FindLockConflict(t, Posix(3, 30, LockType::kRead, 0, 0), now2 + 3 * kLease, kSkew));
  EXPECT_TRUE(LocksAllExpired(t, now2 + 3 * kLease, kSkew));
  EXPECT_TRUE(LocksAllExpired(FileLocks{}, 0, kSkew));
}

TEST(FileLocks, ReleaseTakesOneOwnersKindOrAllOfAHolder) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 0, 9)).ok());
  ASSERT_TRUE(Apply(t, Flock(1, 10, LockType::kRead)).ok());
  ASSERT_TRUE(Apply(t, Posix(1, 11, LockType::kRead, 0, 9)).ok());
  ASSERT_TRUE(Apply(t, Posix(2, 10, LockType::kRead, 0, 9)).ok());
  EXPECT_TRUE(ReleaseHolderLocks(&t, 1, LockOwnerRef{10, LockKind::kPosix}));
  EXPECT_EQ(t.locks.size(), 3u);
  EXPECT_FALSE(ReleaseHolderLocks(&t, 1, LockOwnerRef{10, LockKind::kPosix}));
  EXPECT_TRUE(ReleaseHolderLocks(&t, 1, std::nullopt));
  EXPECT_EQ(t.locks.size(), 1u);
  EXPECT_TRUE(HolderHasLocks(t, 2));
  EXPECT_FALSE(HolderHasLocks(t, 1));
}

TEST(FileLocks, ATableHoldsAtMostItsBoundThenAnswersNoLocks) {
  FileLocks t;
  // Every other byte: ranges that never merge.
  for (uint64_t i = 0; i < kMaxFileLocks; ++i) {
    ASSERT_TRUE(Apply(t, Posix(1, 10, LockType::kRead, 2 * i, 2 * i)).ok()) << i;
  }
  Status s = Apply(t, Posix(1, 10, LockType::kRead, 2 * kMaxFileLocks, 2 * kMaxFileLocks));
  EXPECT_EQ(s.code(), StatusCode::kNoLocks) << s.ToString();
  EXPECT_EQ(s.ToErrno(), ENOLCK);
  EXPECT_EQ(t.locks.size(), kMaxFileLocks);
  // At the bound, a lock changing type in place and one merging with its neighbour still fit.
  EXPECT_EQ(Apply(t, Posix(1, 10, LockType::kWrite, 2, 2)).code(), StatusCode::kOk);
  EXPECT_EQ(Apply(t, Posix(1, 10, LockType::kRead, 1, 1)).code(), StatusCode::kOk);
  // The full table still encodes under the record limit (1 MiB) and decodes.
  MetaRecord rec;
  rec.body = t;
  std::string bytes = rec.Encode();
  EXPECT_LT(bytes.size(), 1u << 20);
  auto back = MetaRecord::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->file_locks(), nullptr);
  EXPECT_EQ(back->file_locks()->locks, t.locks);
}

TEST(FileLocks, TableRoundTripsAndMalformedTablesAreRefused) {
  FileLocks t;
  ASSERT_TRUE(Apply(t, Posix(7, 70, LockType::kWrite, 5, UINT64_MAX)).ok());
  ASSERT_TRUE(Apply(t, Flock(8, 80, LockType::kRead)).ok());
  MetaRecord rec;
  rec.body = t;
  std::string bytes = rec.Encode();
  auto back = MetaRecord::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->file_locks(), nullptr);
  EXPECT_EQ(back->file_locks()->locks, t.locks);
  EXPECT_EQ(back->file_locks()->changed_ns, kNow);
  // Every truncation is refused, never read as a shorter table.
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(MetaRecord::Decode(bytes.substr(0, n)).ok()) << n;
  }
  // A lock type or kind out of range, and a range ending before its start, are refused.
  FileLocks bad;
  bad.locks.push_back(t.locks[0]);
  MetaRecord b;
  b.body = bad;
  std::string good = b.Encode();
  ASSERT_TRUE(MetaRecord::Decode(good).ok());
  // holder 7, owner 70, pid 70, kind 0 (POSIX), type 1 (write), each one byte.
  const std::string head("\x07\x46\x46\x00\x01", 5);
  size_t at = good.find(head);
  ASSERT_NE(at, std::string::npos);
  std::string bad_type = good;
  bad_type[at + 4] = 2;  // kUnlock is never stored
  EXPECT_FALSE(MetaRecord::Decode(bad_type).ok());
  std::string bad_kind = good;
  bad_kind[at + 3] = 2;
  EXPECT_FALSE(MetaRecord::Decode(bad_kind).ok());
  bad.locks[0].start = 9;
  bad.locks[0].end = 8;
  b.body = bad;
  EXPECT_FALSE(MetaRecord::Decode(b.Encode()).ok());
}

TEST(FileLocks, RecordKeyIsPlacedWithItsInode) {
  std::string key = FileLocksKey(1234567);
  EXPECT_TRUE(ValidateRecordKey(key).ok());
  EXPECT_EQ(RecordPlacementKey(key), RecordPlacementKey(InodeKey(1234567)));
  EXPECT_EQ(FloorRangeOf(key), key);
  EXPECT_EQ(DescribeKey(key), "F/1234567");
  EXPECT_FALSE(ValidateRecordKey("F/short").ok());
  EXPECT_FALSE(ValidateRecordKey(key + "x").ok());
}

}  // namespace
}  // namespace quorumfs
