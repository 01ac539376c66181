// Namespace: the POSIX file-system namespace as leaderless transactions over CASPaxos records
// (DESIGN.md, "Namespace operations"). No FUSE types: the mount, the admin CLI and the
// simulator all call this code.
//
// Every public method runs on the event loop that owns the Proposer, inside a kj fiber, so the
// protocol reads as straight-line code while staying single-threaded and deterministic under the
// simulator. Results are Status codes that map to the errno ext4 would give.
//
// Protocol summary (see DESIGN.md for why each rule exists):
//  - Reads follow intents: a record carrying a transaction's intent reads as the intent's value
//    if the transaction committed, as its old value if it aborted or is pending (a pending one
//    past its deadline is aborted first).
//  - Plain changes (create, unlink of a last link, setattr, xattrs, layout) first resolve an
//    intent they meet: apply or drop it once the transaction is decided, wait while it is
//    pending, abort it once past its deadline.
//  - create: inode written once at ballot (0, creator) with a birth deadline, beside the
//    parent's change (entry count +1, only while the parent is live); then the entry
//    (absent -> present: the O_EXCL point). EEXIST undoes the parent change.
//  - unlink (last link): entry -> tombstone (the linearization point); then the parent's count
//    and the inode's link count drop (nlink 0: dying, or unlinked-open under the caller's lease).
//  - rename, link, rmdir, unlink of a file with other links: a transaction X/<txn> (pending ->
//    committed is the commit point) with intents attached to its participants in key order;
//    a conflicting younger transaction aborts. rmdir's intent marks the directory dying and
//    requires entry count 0, and its scan must find no live entry and no intent. Directory moves
//    across directories hold L/rename and check, with reads that follow intents, that the target
//    is not inside the source.
//  - A directory's (or file's) count change outside a transaction goes through one batch per
//    client and record at a time, and the record remembers each recent client's last applied
//    batch, so a batch retried after an unknown outcome is applied once (or answers
//    UnknownOutcome when that memory was lost).
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/file_locks.h"
#include "common/inode_allocator.h"
#include "common/metadata.h"
#include "common/proposer.h"
#include "common/status.h"

namespace quorumfs {

// Wall-clock time for deadlines and timestamps (the simulator supplies simulated time).
class WallClock {
 public:
  virtual ~WallClock() = default;
  virtual int64_t NowNs() = 0;
};
WallClock& SystemWallClock();

// Lists record keys with a prefix, for readdir and repair scans.
class RecordLister {
 public:
  virtual ~RecordLister() = default;
  // Keys starting with `prefix` greater than `after`, in order, at most `limit`, stored on any
  // replica that has them. `placement_key` names the replica set to ask (empty: every node).
  // Must see every key chosen before the call began (ask at least R replicas of each set).
  // `every_replica`: every replica of the set must answer (NoQuorum otherwise), so that a key
  // only some replica holds, accepted there and not (yet) chosen, is listed too.
  virtual kj::Promise<Result<std::vector<std::string>>> ListKeys(const std::string& placement_key,
                                                                 const std::string& prefix,
                                                                 const std::string& after,
                                                                 uint32_t limit,
                                                                 bool every_replica = false) = 0;
};

struct NamespaceOptions {
  uint64_t client_id = 0;                   // 0: random
  int64_t txn_timeout_ns = 10'000'000'000;  // pending past this may be aborted by anyone
  int64_t birth_grace_ns = 60'000'000'000;  // an unnamed inode is adoptable after this
  int64_t clock_skew_ns = 1'000'000'000;    // bound on clock differences between clients
  // How long a directory must have been quiet before fsck recounts it. 0: the birth grace plus
  // twice the skew bound, which is what the rule needs when creators use this birth grace
  // (LateSecondRound). Tests that recount right after their own operations set less.
  int64_t recount_quiet_ns = 0;
  int64_t RecountQuietNs() const {
    return recount_quiet_ns > 0 ? recount_quiet_ns : birth_grace_ns + 2 * clock_skew_ns;
  }
  int64_t lease_ns = 60'000'000'000;              // unlinked-open lease
  int64_t lock_lease_ns = 20'000'000'000;         // file locks: held this long unless renewed
  kj::Duration busy_wait = 2 * kj::MILLISECONDS;  // first wait on a pending intent
  kj::Duration busy_timeout = 30 * kj::SECONDS;   // give up waiting (EBUSY -> EIO)
  uint32_t default_chunk_size = 1024 * 1024;
  size_t fiber_stack = 256 * 1024;
  // Reads write nothing: records are read with Proposer::ReadWithoutWrite (no write-back to
  // lagging replicas), and a transaction pending past its deadline is taken as pending (the
  // old value) instead of being aborted. For fsck's check mode, which must change nothing.
  bool observe_only = false;
  // A create writes its new entry in one round when every replica accepts it at once
  // (Proposer::CreateShared), otherwise with the full protocol.
  bool fast_create = true;
  // A create in a directory this client created in before skips the read of the parent and
  // of the entry (the parent's change checks what that read was for).
  bool create_skips_prereads = true;

  // Negative controls for the simulator: each breaks one rule; never set in production.
  bool unsafe_read_ignores_intents = false;
  bool unsafe_rmdir_without_dying_mark = false;
  bool unsafe_create_skips_parent_change = false;
  bool unsafe_move_without_rename_lock = false;
  bool unsafe_parent_change_without_op_id = false;  // RunBatch ignores the `applied` tags
  // RunBatch trusts the absence of its tag even after clients were dropped from `applied`.
  bool unsafe_retry_ignores_evictions = false;
  // A rename that keeps its directories out of its transaction changes their counts after
  // its commit, with no rename mark before it.
  bool unsafe_rename_counts_without_marks = false;
  // A rename mark for a name a directory gains raises its count when settled after the
  // commit, not when added: the count is low meanwhile.
  bool unsafe_rename_raise_on_settle = false;
  // fsck's recount of a directory writes the count its scan found even if the directory
  // changed lately or during the scan (a create or unlink between its two rounds).
  bool unsafe_recount_ignores_changes = false;
  // ... and counts a listed key no read quorum holds a value of as absent without settling it
  // (a crashed create's entry accepted on one replica can be adopted later).
  bool unsafe_recount_skips_settling = false;

  // A link that would make the file's inode record larger than this answers EMLINK: a
  // transaction's intent carries a second copy of the record, and an acceptor takes values of
  // kMaxRecordValue at most (0: kMaxRecordValue / 2 less 8 KiB of headroom).
  size_t max_linked_inode_bytes = 0;

  // Clients an inode's `applied` list remembers (0: kAppliedClients). The simulator makes it
  // small so that a client's entry is dropped while its change's outcome is unknown.
  size_t applied_clients = 0;

  // Fault injection for tests (a client that dies midway): the operation stops right after
  // the named step and returns Unavailable, leaving what a crash would leave.
  bool test_crash_create_after_inode = false;      // inode written, no entry, no parent change
  bool test_crash_txn_after_intents = false;       // intents attached, X still pending
  bool test_crash_txn_after_commit = false;        // X committed, intents not yet resolved
  bool test_crash_unlink_after_tombstone = false;  // last link's entry gone, counts not changed
};

struct Credentials {
  uint32_t uid = 0, gid = 0;
};

struct CreateRequest {
  FileType type = FileType::kRegular;
  uint32_t mode = 0644;  // permission bits (type bits ignored)
  uint32_t uid = 0, gid = 0;
  uint64_t rdev = 0;
  std::string symlink_target;
};

struct SetAttrRequest {
  std::optional<uint32_t> mode;  // permission bits
  std::optional<uint32_t> uid, gid;
  std::optional<uint64_t> size;
  // `size` only extends: a file already that long (another mount may have just appended) is
  // left as it is (fallocate), decided in the same record change.
  bool size_grow_only = false;
  // Times: nullopt leaves it, kNow sets the current time.
  static constexpr int64_t kNow = INT64_MIN;
  std::optional<int64_t> atime_ns, mtime_ns;
  std::optional<int64_t> ctime_ns;  // only for repair/restore tools
};

struct DirListing {
  struct Entry {
    std::string name;
    uint64_t ino = 0;
    FileType type = FileType::kNone;
    uint64_t offset = 0;  // resume after this entry by passing it as `offset`
  };
  std::vector<Entry> entries;
  bool end = false;  // no more entries after these
};

enum RenameFlags : uint32_t { kRenameNoReplace = 1, kRenameExchange = 2 };
enum XattrFlags : uint32_t { kXattrCreate = 1, kXattrReplace = 2 };

// A layout change from one writer (DESIGN.md, "Metadata", file layouts).
struct LayoutUpdate {
  // Slots this writer changed: index -> (slot it started from, new slot).
  struct SlotChange {
    uint64_t index = 0;
    Slot base;
    Slot updated;
  };
  std::vector<SlotChange> slots;  // inline slots (Inode::SlotIsInline)
  // Layout pages this writer rewrote (put as chunks before the publish): the page it started
  // from (zero id: none) with that page's `live`, and the new one (zero id: all holes). Bases
  // are compared before this update's own truncation is applied.
  struct PageChange {
    uint64_t index = 0;
    ChunkId base;
    uint64_t base_live = 0;
    ChunkId updated;
    uint64_t used = 0;
  };
  std::vector<PageChange> pages;
  uint64_t written_end = 0;              // one past the highest byte this writer wrote
  std::optional<uint64_t> truncated_to;  // the writer truncated the file to this size
  bool touch_mtime = true;
  // A setattr applied in the same record change, after the layout (so its times win over the
  // write time): a program that writes, then sets the times of the open file (tar, cp -p) pays
  // one change for both. No size (InvalidArgument).
  std::optional<SetAttrRequest> attrs;
};

// Returned by PublishLayout when some slots changed underneath the writer: the caller rebuilds
// them from `current` plus its own dirty bytes and publishes again with `current` as base.
struct LayoutConflict {
  std::vector<std::pair<uint64_t, Slot>> current;  // index -> slot now in the layout
  // Pages that changed underneath the writer: index -> page now in the layout (zero id: none).
  // The caller compares its pages' dirty slots with that page's, rebuilds those that differ,
  // and publishes again with that page as base.
  std::vector<std::pair<uint64_t, PageRef>> pages;
};

class Namespace {
 public:
  Namespace(Proposer& proposer, InodeAllocator& allocator, RecordLister& lister, kj::Timer& timer,
            WallClock& clock, NamespaceOptions options);
  ~Namespace();

  // Creates the root directory (inode 1) if it does not exist. Idempotent.
  kj::Promise<Result<Inode>> EnsureRoot(uint32_t mode = 0755, uint32_t uid = 0, uint32_t gid = 0);

  // `parent_is_dir`: the caller knows `parent` is a directory (the kernel looks names up only
  // in directories), so a missing name is ENOENT without reading the parent to tell ENOTDIR.
  kj::Promise<Result<Inode>> Lookup(uint64_t parent, std::string name, bool parent_is_dir = false);
  kj::Promise<Result<Inode>> GetAttr(uint64_t ino);
  // The inode entry (parent, name) names now, read through a quorum; nullopt if none. Unlike
  // Lookup, it does not read the inode (fsck tells a dangling entry from a removed one).
  kj::Promise<Result<std::optional<uint64_t>>> EntryTarget(uint64_t parent, std::string name);
  kj::Promise<Result<Inode>> SetAttr(uint64_t ino, SetAttrRequest request);
  // O_EXCL semantics: EEXIST if the name exists.
  kj::Promise<Result<Inode>> Create(uint64_t parent, std::string name, CreateRequest request);
  kj::Promise<Result<std::string>> ReadLink(uint64_t ino);
  // `held_open`: the caller's mount has the file open; a last unlink then leaves it
  // unlinked-open under `lease_holder`'s lease instead of dying.
  kj::Promise<Status> Unlink(uint64_t parent, std::string name, bool held_open = false,
                             uint64_t lease_holder = 0);
  kj::Promise<Status> Rmdir(uint64_t parent, std::string name);
  kj::Promise<Result<Inode>> Link(uint64_t ino, uint64_t new_parent, std::string new_name);
  // `open_here`, if set, says whether the caller's mount has a file open: a file the rename
  // replaces and drops the last link of is then left unlinked-open under the holder's lease (as
  // Unlink's `held_open`), and its inode is added to `left_open`.
  struct OpenFiles {
    std::function<bool(uint64_t ino)> is_open;
    uint64_t lease_holder = 0;
    std::vector<uint64_t> left_open;  // filled in by the call
  };
  kj::Promise<Status> Rename(uint64_t parent, std::string name, uint64_t new_parent,
                             std::string new_name, uint32_t flags = 0,
                             std::shared_ptr<OpenFiles> open_here = nullptr);
  // Entries with offset > `offset` (0, 1 or 2: from the start), at most `limit`, ordered by
  // offset. An entry's offset is (64-bit name hash >> 1) + 3: stable across calls and
  // processes, positive as an off_t, never 0..2 (left for the caller's ".", ".."). Two names
  // whose hashes differ only in the last bit would share an offset (odds 2^-63 per pair).
  // "." and ".." are the caller's business.
  kj::Promise<Result<DirListing>> ReadDir(uint64_t dir, uint64_t offset, uint32_t limit);
  // The names `dir` may hold, paged as ReadDir (ino and type left empty): the keys of its entry
  // records on R or more replicas, with no quorum read of any record. A superset of its entries:
  // every name a completed change made is there (R + W > N), and so are names being created or
  // removed and removed names whose records GC has not yet deleted. One scan round per page; a
  // directory that does not exist has no names.
  kj::Promise<Result<DirListing>> ReadDirNames(uint64_t dir, uint64_t offset, uint32_t limit);
  // GetAttr of many inodes at once (readdirplus): one result per inode, in order; the reads
  // are batched, one message per node.
  kj::Promise<std::vector<Result<Inode>>> GetAttrMany(std::vector<uint64_t> inos);

  kj::Promise<Result<std::string>> GetXattr(uint64_t ino, std::string name);
  kj::Promise<Status> SetXattr(uint64_t ino, std::string name, std::string value, uint32_t flags);
  kj::Promise<Result<std::vector<std::string>>> ListXattr(uint64_t ino);
  kj::Promise<Status> RemoveXattr(uint64_t ino, std::string name);

  // Applies a writer's layout change. Returns the new inode, or Conflict with the slots that
  // changed underneath the writer in `*conflict`.
  kj::Promise<Result<Inode>> PublishLayout(uint64_t ino, LayoutUpdate update,
                                           std::shared_ptr<LayoutConflict> conflict);

  // Unlinked-open leases.
  kj::Promise<Status> RenewLease(uint64_t ino, uint64_t holder);
  kj::Promise<Status> ReleaseLease(uint64_t ino, uint64_t holder);  // last close: now dying

  // File locks (README, "File locks"; the rules are in common/file_locks.h), one CASPaxos
  // change of the file's F/ record each. A lock is held under the lease of `request.holder`,
  // options().lock_lease_ns from the change, which the holder renews with RenewLocks.
  // SetLock sets or removes the caller's lock (request.type kUnlock): WouldBlock, with the
  // conflicting lock in `*conflict` (if given), when another owner holds one. Each returns
  // whether the holder still has locks on the file afterwards.
  kj::Promise<Result<bool>> SetLock(uint64_t ino, LockRequest request,
                                    std::shared_ptr<FileLock> conflict = nullptr);
  // F_GETLK: the first live lock of another owner that would block `request`, if any.
  kj::Promise<Result<std::optional<FileLock>>> GetLock(uint64_t ino, LockRequest request);
  // Removes the holder's locks on the file: all of them, or one owner's of one kind (close).
  kj::Promise<Result<bool>> ReleaseLocks(uint64_t ino, uint64_t holder,
                                         std::optional<LockOwnerRef> only = std::nullopt);
  // Extends the expiry of the holder's locks still on the file; false: it has none there (they
  // lapsed and were taken over, or were released).
  kj::Promise<Result<bool>> RenewLocks(uint64_t ino, uint64_t holder);

  // Repair core (fsck and the simulator): aborts transactions pending past their deadline and
  // resolves the intents of every decided transaction it finds; removes resolved ones' locks.
  // Returns how many transactions it touched.
  kj::Promise<Result<int>> ResolveTransactions();
  // Settles the directory's rename marks whose transactions are decided (aborting those
  // pending past their deadline), then recounts its entries and subdirectories and rewrites
  // entry_count and nlink if wrong; returns whether it changed anything. Only a directory
  // quiet for recount_quiet_ns (its ctime and tombstones older, its record unchanged through
  // the scan; Busy otherwise), with every replica of its set answering the listing (NoQuorum
  // otherwise); every entry key is settled by an identity write (README, "fsck recounts only
  // a quiet directory").
  kj::Promise<Result<bool>> FixDirectoryCounts(uint64_t dir);
  // The same count, reading only (fsck's check): whether entry_count or nlink is wrong (or a
  // decided rename's mark stays unsettled). Busy under the same rules.
  kj::Promise<Result<bool>> CheckDirectoryCounts(uint64_t dir);
  // Brings an inode's nlink and back-pointers in line with the entries that name it, finishes
  // an interrupted unlink (nlink 0 -> dying), and adopts an inode no entry names once past its
  // birth deadline (into /lost+found). Returns whether it changed anything.
  kj::Promise<Result<bool>> FixInode(uint64_t ino);
  // Removes entry (parent, name) if it still names `ino` (a dangling entry whose inode is gone);
  // the directory's count, one high now, is left to FixDirectoryCounts once the directory is
  // quiet. Returns whether it removed anything.
  kj::Promise<Result<bool>> RemoveEntry(uint64_t parent, std::string name, uint64_t ino);

  uint64_t client_id() const { return options_.client_id; }
  const NamespaceOptions& options() const { return options_; }
  // Unlinks that read nothing first (this client wrote the entry and inode last; for tests).
  // Loop thread only.
  uint64_t unlinks_without_reads() const;
  // Lookups whose inode was read beside the entry and was the one it names (for tests).
  uint64_t lookups_with_hint() const;
  // Batches of combined changes retried after an unknown outcome that found an earlier attempt
  // applied, and that could not tell (their client's entry dropped: UnknownOutcome). For tests.
  uint64_t batches_found_applied() const;
  uint64_t batches_lost_track() const;
  // Attempts of transactional operations (rename, link, rmdir, unlink of a file with other
  // links) that lost a conflict to another transaction and ran again (for tests).
  uint64_t conflict_retries() const;

  // A directory's inode as this client's own latest change of it left it, if that change was
  // chosen less than `max_age` ago and no newer version of the record has been seen since
  // (read, or written through a transaction's intent). `*age` (optional): how long ago. The
  // mount answers the kernel's GETATTR of a parent right after its own create or unlink from
  // it, for the rest of attr_timeout (README, design notes). Loop thread only.
  std::optional<Inode> RecentOwnDirectory(uint64_t ino, kj::Duration max_age,
                                          kj::Duration* age = nullptr) const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
  NamespaceOptions options_;
};

// Checks a name for an entry: 1..255 bytes, no '/' or NUL, not "." or "..".
Status ValidateName(const std::string& name);

}  // namespace quorumfs
