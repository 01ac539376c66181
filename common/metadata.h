// The namespace's record payloads (DESIGN.md, "Record keys"): inodes, directory entries,
// transactions and locks, each optionally carrying a transaction's pending intent.
// Encoded with a small versioned binary format; Decode() refuses malformed bytes with
// Corruption instead of trusting them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/chunk_id.h"
#include "common/status.h"

namespace quorumfs {

constexpr uint64_t kRootIno = 1;
constexpr uint32_t kMaxLinks = 65000;  // EMLINK beyond this
constexpr size_t kMaxSymlinkSize = 4095;
constexpr size_t kMaxXattrNameSize = 255;
constexpr size_t kMaxXattrValueSize = 65536;
constexpr size_t kMaxXattrTotalSize = 256 * 1024;
constexpr size_t kAppliedClients = 64;  // clients an inode's `applied` list remembers

enum class FileType : uint8_t {
  kNone = 0,
  kRegular = 1,
  kDirectory = 2,
  kSymlink = 3,
  kFifo = 4,
  kCharDevice = 5,
  kBlockDevice = 6,
  kSocket = 7,
};

// S_IF* bits of a type (0 for kNone).
uint32_t ModeTypeBits(FileType type);
FileType FileTypeFromMode(uint32_t mode);

// One slot of a file layout: bytes [i*chunk_size, (i+1)*chunk_size) of the file are the first
// `length` bytes of chunk `id`; an all-zero id is a hole (reads as zeros).
struct Slot {
  ChunkId id;
  uint32_t length = 0;
  bool hole() const { return id.IsZero(); }
  bool operator==(const Slot& o) const { return id == o.id && length == o.length; }
};

// Layouts of large files (DESIGN.md's `C/<ino>/<page>`, README "Layout pages are chunks"):
// slots [0, kSlotsPerPage) live in the inode record itself; each further run of kSlotsPerPage
// slots, page k >= 1, is an immutable layout page stored as a chunk (EncodeLayoutPage), named
// by its hash from the inode's `pages`. A publish writes the changed pages as new chunks first,
// then swaps their ids in the one inode record: the inode stays the layout's single commit
// point, as it is for small files.
constexpr uint64_t kSlotsPerPage = 1024;
constexpr size_t kMaxLayoutPages = 8192;

// Page k's entry in its inode. Bytes of the page at or beyond `live` (counted from the page's
// first byte) read as zeros whatever its slots say: a truncation clips a page without
// rewriting it. `used`: the bytes its slots hold within `live` (for st_blocks).
struct PageRef {
  uint64_t index = 0;
  ChunkId id;
  uint64_t live = 0;
  uint64_t used = 0;
  bool operator==(const PageRef& o) const {
    return index == o.index && id == o.id && live == o.live && used == o.used;
  }
};

// The largest size a file of this chunk size may have (EFBIG beyond, as ext4 past 16 TiB):
// its inline slots and kMaxLayoutPages pages.
uint64_t MaxFileSize(uint32_t chunk_size);

// A layout page's bytes: a header naming its inode, page and chunk size, then its slots.
std::string EncodeLayoutPage(uint64_t ino, uint64_t index, uint32_t chunk_size,
                             const std::vector<Slot>& slots);
// Refuses (Corruption) bytes that are not a page of exactly this inode, page and chunk size.
Result<std::vector<Slot>> DecodeLayoutPage(std::string_view bytes, uint64_t ino, uint64_t index,
                                           uint32_t chunk_size);
// Slot j of a page whose bytes from `live` on read as zeros (a hole if none of it is left).
Slot ClippedPageSlot(const std::vector<Slot>& page, uint64_t j, uint64_t live, uint32_t chunk_size);

struct BackPointer {
  uint64_t parent = 0;
  std::string name;
  bool operator==(const BackPointer& o) const { return parent == o.parent && name == o.name; }
};

// A client's latest batch of combined changes applied to an inode (Namespace's ChangeCombined):
// the tag its change function wrote. A client changes one inode by at most one batch at a time.
struct AppliedBatch {
  uint64_t client = 0;
  uint64_t tag = 0;
  bool operator==(const AppliedBatch& o) const { return client == o.client && tag == o.tag; }
};

// A rename's pending change of a directory it keeps out of its transaction (Namespace::Rename):
// added before the transaction can commit, settled once it is decided (removed; the count
// changed by `delta` and the times set to `time_ns` if it committed) by the renamer, or by
// whoever meets it later (rmdir, fsck). The mark's presence makes the settling happen once.
struct RenameMark {
  uint64_t txn = 0;
  int32_t delta = 0;  // the entry count's change on commit: -1 or +1
  int64_t time_ns = 0;
  bool operator==(const RenameMark& o) const {
    return txn == o.txn && delta == o.delta && time_ns == o.time_ns;
  }
};

struct Xattr {
  std::string name;
  std::string value;
};

enum class InodeState : uint8_t { kLive = 0, kUnlinkedOpen = 1, kDying = 2 };

struct Inode {
  uint64_t ino = 0;
  FileType type = FileType::kNone;
  uint32_t mode = 0;  // permission bits, setuid/setgid/sticky; no type bits
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;
  uint32_t nlink = 0;
  uint64_t rdev = 0;
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0, btime_ns = 0;
  std::string symlink_target;
  uint32_t chunk_size = 0;  // files: fixed at creation
  std::vector<Slot> slots;  // files: slot i covers [i*chunk_size, (i+1)*chunk_size)
  std::vector<Xattr> xattrs;
  std::vector<BackPointer> parents;  // the entries naming this inode
  int64_t birth_deadline_ns = 0;     // fsck may adopt an unnamed inode only after this
  InodeState state = InodeState::kLive;
  int64_t lease_until_ns = 0;  // kUnlinkedOpen: a mount holds it open until then
  uint64_t lease_holder = 0;
  uint64_t entry_count = 0;  // directories: live entries
  // Per client, the tag of its last applied batch of combined changes, least recently
  // applied first; at most a bound's worth of clients (the least recent is dropped first).
  std::vector<AppliedBatch> applied;
  uint64_t applied_evictions = 0;  // clients dropped from `applied`, ever
  // Directories: renames in flight (or left by a crashed client) that change entry_count
  // once decided; see RenameMark. entry_count does not include them yet.
  std::vector<RenameMark> rename_marks;
  // Files: the layout pages beyond the inline slots, by ascending index (>= 1); a page with no
  // entry is all holes. Only while `slots` has at most kSlotsPerPage entries (see SlotIsInline).
  std::vector<PageRef> pages;

  bool is_dir() const { return type == FileType::kDirectory; }
  // Whether slot idx lives in `slots` (else in page idx / kSlotsPerPage). A layout written
  // before pages existed may hold more than kSlotsPerPage inline slots; it stays inline whole.
  bool SlotIsInline(uint64_t idx) const {
    return idx < kSlotsPerPage || slots.size() > kSlotsPerPage;
  }
  const PageRef* FindPage(uint64_t index) const;
  // Sets page `ref.index` to `ref`, or removes it if ref.id is zero (all holes).
  void SetPage(const PageRef& ref);
  // The tag of `client`'s last applied batch, 0 if none is remembered.
  uint64_t AppliedTag(uint64_t client) const;
  // Records that `client`'s batch `tag` was applied, dropping the least recent clients beyond
  // `max_clients` (each drop counts in applied_evictions).
  void NoteApplied(uint64_t client, uint64_t tag, size_t max_clients);
};

struct DirEntry {
  uint64_t ino = 0;
  FileType type = FileType::kNone;
  bool operator==(const DirEntry& o) const { return ino == o.ino && type == o.type; }
};

enum class TxnState : uint8_t { kPending = 0, kCommitted = 1, kAborted = 2 };

struct Txn {
  uint64_t id = 0;
  TxnState state = TxnState::kPending;
  int64_t created_ns = 0;                 // "younger" = created later (ties: larger id)
  int64_t deadline_ns = 0;                // pending past this may be aborted by anyone
  std::vector<std::string> participants;  // record keys, in key order
  // Directories the transaction put a rename mark on (kept out of its participants): the
  // record stays until each mark is settled (fsck's --gc checks).
  std::vector<uint64_t> marked_dirs;
};

struct Lock {
  uint64_t holder_txn = 0;  // 0: free
  int64_t deadline_ns = 0;
};

// File locks (fcntl POSIX record locks and flock) of one file: the body of its `F/<ino>`
// record (README, "File locks"). Each lock is held under its mount's lease: past `expires_ns`
// plus the clock-skew bound it no longer counts, and the next change drops it.
enum class LockKind : uint8_t { kPosix = 0, kFlock = 1 };
enum class LockType : uint8_t { kRead = 0, kWrite = 1, kUnlock = 2 };
struct FileLock {
  uint64_t holder = 0;  // the mount (its lease-holder id)
  uint64_t owner = 0;   // the owner within the mount: the kernel's lock owner
  uint32_t pid = 0;     // the locking process, as that mount's kernel saw it
  LockKind kind = LockKind::kPosix;
  LockType type = LockType::kRead;  // kRead or kWrite
  uint64_t start = 0, end = 0;      // bytes [start, end], inclusive; end UINT64_MAX: to EOF
  int64_t expires_ns = 0;           // the holder's wall clock
  bool operator==(const FileLock& o) const {
    return holder == o.holder && owner == o.owner && pid == o.pid && kind == o.kind &&
           type == o.type && start == o.start && end == o.end && expires_ns == o.expires_ns;
  }
};
constexpr size_t kMaxFileLocks = 4096;  // per file; more answers ENOLCK
struct FileLocks {
  std::vector<FileLock> locks;  // sorted by (kind, holder, owner, start)
  int64_t changed_ns = 0;       // last change (fsck --gc measures its grace from it)
};

// A record's current value. monostate: absent (a never-written key or a tombstone).
using RecordBody = std::variant<std::monostate, Inode, DirEntry, Txn, Lock, FileLocks>;

struct Intent {
  uint64_t txn = 0;
  RecordBody value;  // the record's value if the transaction commits
};

struct MetaRecord {
  RecordBody body;
  std::optional<Intent> intent;
  // Absent body only: when it became a tombstone (the writer's wall clock, ns), which
  // `fsck --gc` measures its grace period against; 0 for a key never written.
  int64_t removed_ns = 0;

  bool absent() const { return std::holds_alternative<std::monostate>(body); }
  const Inode* inode() const { return std::get_if<Inode>(&body); }
  Inode* inode() { return std::get_if<Inode>(&body); }
  const DirEntry* entry() const { return std::get_if<DirEntry>(&body); }
  const Txn* txn() const { return std::get_if<Txn>(&body); }
  Txn* txn() { return std::get_if<Txn>(&body); }
  const Lock* lock() const { return std::get_if<Lock>(&body); }
  const FileLocks* file_locks() const { return std::get_if<FileLocks>(&body); }

  std::string Encode() const;
  static Result<MetaRecord> Decode(std::string_view bytes);
  // Decodes a payload that may be absent (never written) into an absent record.
  static Result<MetaRecord> DecodeOptional(const std::optional<std::string>& payload);
};

}  // namespace quorumfs
