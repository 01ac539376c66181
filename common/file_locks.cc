#include "common/file_locks.h"

#include <algorithm>
#include <tuple>

namespace quorumfs {
namespace {

bool Overlaps(uint64_t a_start, uint64_t a_end, uint64_t b_start, uint64_t b_end) {
  return a_start <= b_end && b_start <= a_end;
}

bool SameOwner(const FileLock& l, uint64_t holder, uint64_t owner, LockKind kind) {
  return l.holder == holder && l.owner == owner && l.kind == kind;
}

// expires + skew without overflow.
int64_t CountsUntil(const FileLock& l, int64_t skew_ns) {
  if (skew_ns > 0 && l.expires_ns > INT64_MAX - skew_ns) return INT64_MAX;
  return l.expires_ns + skew_ns;
}

bool LockOrder(const FileLock& a, const FileLock& b) {
  return std::make_tuple(a.kind, a.holder, a.owner, a.start) <
         std::make_tuple(b.kind, b.holder, b.owner, b.start);
}

}  // namespace

bool LockLive(const FileLock& lock, int64_t now_ns, int64_t skew_ns) {
  return now_ns <= CountsUntil(lock, skew_ns);
}

std::optional<FileLock> FindLockConflict(const FileLocks& table, const LockRequest& request,
                                         int64_t now_ns, int64_t skew_ns) {
  if (request.type == LockType::kUnlock) return std::nullopt;
  for (const auto& l : table.locks) {
    if (l.kind != request.kind || SameOwner(l, request.holder, request.owner, request.kind))
      continue;
    if (!LockLive(l, now_ns, skew_ns)) continue;
    if (!Overlaps(l.start, l.end, request.start, request.end)) continue;
    if (l.type == LockType::kWrite || request.type == LockType::kWrite) return l;
  }
  return std::nullopt;
}

Result<bool> ApplyLockRequest(FileLocks* table, const LockRequest& r, int64_t now_ns,
                              int64_t lease_ns, int64_t skew_ns, FileLock* conflict) {
  if (r.start > r.end) {
    return InvalidArgument("lock range starts at " + std::to_string(r.start) + " after its end " +
                           std::to_string(r.end));
  }
  if (r.kind == LockKind::kFlock && (r.start != 0 || r.end != UINT64_MAX)) {
    return InvalidArgument("flock covers the whole file");
  }
  if (auto c = FindLockConflict(*table, r, now_ns, skew_ns)) {
    if (conflict) *conflict = *c;
    return Status(
        StatusCode::kWouldBlock,
        std::string(r.kind == LockKind::kFlock ? "flock" : "lock") + " held by another owner");
  }
  std::vector<FileLock> out;
  out.reserve(table->locks.size() + 2);
  for (const auto& l : table->locks) {
    if (!LockLive(l, now_ns, skew_ns)) continue;  // lapsed: dropped
    if (!SameOwner(l, r.holder, r.owner, r.kind) || !Overlaps(l.start, l.end, r.start, r.end)) {
      out.push_back(l);
      continue;
    }
    // The owner's lock over part of the range: keep what lies outside it.
    if (l.start < r.start) {
      FileLock head = l;
      head.end = r.start - 1;
      out.push_back(head);
    }
    if (l.end > r.end) {
      FileLock tail = l;
      tail.start = r.end + 1;
      out.push_back(tail);
    }
  }
  if (r.type != LockType::kUnlock) {
    FileLock n;
    n.holder = r.holder;
    n.owner = r.owner;
    n.pid = r.pid;
    n.kind = r.kind;
    n.type = r.type;
    n.start = r.start;
    n.end = r.end;
    n.expires_ns = now_ns + lease_ns;
    // Merge the owner's locks of the same type that overlap or touch the new one.
    for (size_t i = 0; i < out.size();) {
      const FileLock& l = out[i];
      bool touches = SameOwner(l, r.holder, r.owner, r.kind) && l.type == n.type &&
                     Overlaps(l.start, l.end, n.start == 0 ? 0 : n.start - 1,
                              n.end == UINT64_MAX ? UINT64_MAX : n.end + 1);
      if (!touches) {
        ++i;
        continue;
      }
      n.start = std::min(n.start, l.start);
      n.end = std::max(n.end, l.end);
      n.expires_ns = std::max(n.expires_ns, l.expires_ns);
      out.erase(out.begin() + static_cast<ptrdiff_t>(i));
    }
    out.push_back(n);
  }
  if (out.size() > kMaxFileLocks) {
    return Status(StatusCode::kNoLocks, "file has " + std::to_string(kMaxFileLocks) +
                                            " locks already (the most one file keeps)");
  }
  std::sort(out.begin(), out.end(), LockOrder);
  if (out == table->locks) return false;
  table->locks = std::move(out);
  table->changed_ns = now_ns;
  return true;
}

bool ReleaseHolderLocks(FileLocks* table, uint64_t holder, std::optional<LockOwnerRef> only) {
  size_t before = table->locks.size();
  table->locks.erase(
      std::remove_if(table->locks.begin(), table->locks.end(),
                     [&](const FileLock& l) {
                       return l.holder == holder &&
                              (!only || SameOwner(l, holder, only->owner, only->kind));
                     }),
      table->locks.end());
  return table->locks.size() != before;
}

bool RenewHolderLocks(FileLocks* table, uint64_t holder, int64_t until_ns) {
  bool changed = false;
  for (auto& l : table->locks) {
    if (l.holder == holder && l.expires_ns < until_ns) {
      l.expires_ns = until_ns;
      changed = true;
    }
  }
  return changed;
}

bool HolderHasLocks(const FileLocks& table, uint64_t holder) {
  return std::any_of(table.locks.begin(), table.locks.end(),
                     [holder](const FileLock& l) { return l.holder == holder; });
}

bool LocksAllExpired(const FileLocks& table, int64_t before_ns, int64_t skew_ns) {
  return std::all_of(table.locks.begin(), table.locks.end(),
                     [&](const FileLock& l) { return CountsUntil(l, skew_ns) < before_ns; });
}

}  // namespace quorumfs
