// File locks: the rules of fcntl(2) POSIX record locks and flock(2) over one file's lock table
// (the `F/<ino>` record, common/metadata.h). Pure functions of the table, the request and the
// caller's clock; Namespace applies them inside one CASPaxos change, so every mount sees one
// order of lock and unlock operations.
//
// Rules (as Linux applies them to local files):
//  - POSIX locks and flock locks do not interact.
//  - Locks of one owner never conflict with each other. An owner's POSIX lock over a range
//    replaces the owner's locks in that range (splitting them); adjacent or overlapping ranges
//    of one type merge. An owner's flock is one lock over the whole file, converted in place.
//  - A read lock conflicts with a write lock of another owner over an overlapping range; write
//    locks conflict with every other owner's lock there.
//  - Every lock is held under its mount's lease (`expires_ns`, the holder's clock). Another
//    client takes it as gone only once its own clock is past `expires_ns + skew_ns`, and the
//    next change drops it then. A mount renews its locks' expiry well before then; renewing
//    extends only the locks still in the table, so a lock taken over is never brought back.
#pragma once

#include <cstdint>
#include <optional>

#include "common/metadata.h"
#include "common/status.h"

namespace quorumfs {

struct LockRequest {
  uint64_t holder = 0;  // the mount
  uint64_t owner = 0;   // the kernel's lock owner
  uint32_t pid = 0;
  LockKind kind = LockKind::kPosix;
  LockType type = LockType::kRead;       // kUnlock: remove the owner's locks over the range
  uint64_t start = 0, end = UINT64_MAX;  // inclusive
};

// Whether `lock` still counts at `now_ns` on the caller's clock.
bool LockLive(const FileLock& lock, int64_t now_ns, int64_t skew_ns);

// The first live lock of another owner that conflicts with `request` (a lock request; for
// kUnlock none), if any: what F_GETLK reports.
std::optional<FileLock> FindLockConflict(const FileLocks& table, const LockRequest& request,
                                         int64_t now_ns, int64_t skew_ns);

// Applies `request` to `table`: drops locks that no longer count, then either answers
// WouldBlock (a conflicting lock, copied to `*conflict` if given; the table is left as it
// was) or sets or removes the owner's locks over the range with expiry `now_ns + lease_ns`.
// NoLocks when the table would exceed kMaxFileLocks; InvalidArgument for an empty range or a
// flock over part of a file. Returns whether the table changed.
Result<bool> ApplyLockRequest(FileLocks* table, const LockRequest& request, int64_t now_ns,
                              int64_t lease_ns, int64_t skew_ns, FileLock* conflict = nullptr);

// Removes `holder`'s locks: every one, or only those of `owner` and `kind` when given. Returns
// whether the table changed.
struct LockOwnerRef {
  uint64_t owner = 0;
  LockKind kind = LockKind::kPosix;
  bool operator==(const LockOwnerRef& o) const { return owner == o.owner && kind == o.kind; }
};
bool ReleaseHolderLocks(FileLocks* table, uint64_t holder, std::optional<LockOwnerRef> only);

// Sets the expiry of every lock of `holder` still in the table to `until_ns` (never earlier
// than it was). Returns whether the table changed.
bool RenewHolderLocks(FileLocks* table, uint64_t holder, int64_t until_ns);

// Whether `holder` has any lock in the table (live or not).
bool HolderHasLocks(const FileLocks& table, uint64_t holder);

// Whether every lock in the table stopped counting before `before_ns` on the caller's clock
// (an empty table: always). fsck --gc deletes such a record once it is also older than its
// grace period.
bool LocksAllExpired(const FileLocks& table, int64_t before_ns, int64_t skew_ns);

}  // namespace quorumfs
