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

  bool is_dir() const { return type == FileType::kDirectory; }
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

// A record's current value. monostate: absent (a never-written key or a tombstone).
using RecordBody = std::variant<std::monostate, Inode, DirEntry, Txn, Lock>;

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

  std::string Encode() const;
  static Result<MetaRecord> Decode(std::string_view bytes);
  // Decodes a payload that may be absent (never written) into an absent record.
  static Result<MetaRecord> DecodeOptional(const std::optional<std::string>& payload);
};

}  // namespace quorumfs
