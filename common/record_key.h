// Metadata record keys (DESIGN.md, "Record keys"). Keys are byte strings with a one-letter
// kind and big-endian numbers so that prefix scans come out ordered:
//   A/<shard:8>                         inode-number allocator      placement: the key
//   I/<ino:8>                           inode                       placement: ino
//   C/<ino:8>/<page:8>                  further layout pages        placement: ino
//   D/<parent:8>/<hash64(name):8>/<name> directory entry            placement: parent
//   X/<txn:8>                           transaction                 placement: txn
//   L/<name>                            a named lock ("L/rename")   placement: the key
//   F/<ino:8>                           a file's fcntl/flock locks  placement: ino
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace quorumfs {

// Inode numbers are handed out in blocks of 2^kInoBlockBits (one allocator CAS per block).
constexpr int kInoBlockBits = 10;
constexpr size_t kMaxRecordKeySize = 512;
constexpr size_t kMaxNameSize = 255;

std::string EncodeU64(uint64_t v);           // 8 bytes big-endian
uint64_t DecodeU64(std::string_view eight);  // REQUIRES: eight.size() >= 8

std::string AllocatorKey(uint64_t shard);
std::string InodeKey(uint64_t ino);
bool IsInodeKey(std::string_view key);  // an I/ key
// Reserved: DESIGN.md's `C/` layout-page records. quorumfs stores layout pages as chunks that the
// inode names instead (common/metadata.h, README "Layout pages are chunks"); no C/ key is written.
std::string LayoutPageKey(uint64_t ino, uint64_t page);
std::string DirEntryKey(uint64_t parent, std::string_view name);
std::string DirEntryPrefix(uint64_t parent);  // every entry of one directory
std::string TxnKey(uint64_t txn);
std::string LockKey(std::string_view name);
// Not in DESIGN.md's key list: file locks (README, "File locks").
std::string FileLocksKey(uint64_t ino);

// 64-bit hash of an entry name (first 8 bytes of SHA-256): the stable readdir offset.
uint64_t NameHash64(std::string_view name);

// OK if `key` is well formed (known kind, exact lengths, name 1..255 bytes without '/' or
// NUL); InvalidArgument naming the problem otherwise. Servers refuse anything else.
Status ValidateRecordKey(std::string_view key);

// The placement key the replica set of `key` is computed from. REQUIRES: valid key.
std::string RecordPlacementKey(std::string_view key);

// The ballot-floor range `key` belongs to (DESIGN.md, "Removing keys"): I/ keys by inode
// block, C/ keys by inode, D/ keys by parent, X/ keys one range, A/, L/ and F/ keys themselves.
std::string FloorRangeOf(std::string_view key);

// Printable form for logs: "I/42", "D/1/'name'".
std::string DescribeKey(std::string_view key);

}  // namespace quorumfs
