// ChunkStore: content-addressed chunk files under <data>/chunks/ab/cd/<sha256-hex>.
// Thread-safe; every method blocks on the disk and runs on a worker thread, never the RPC loop.
//
// Durability: a put writes <data>/tmp/<unique> (its whole 4 KiB blocks with O_DIRECT from a
// page-aligned ChunkBuffer where the file system allows it), fdatasyncs it, renames it into place
// and fsyncs the directory before returning, so an acknowledged chunk survives a crash. A put of an
// id already stored does not rewrite it; it sets the file's mtime (the last-put time that GC
// compares, DESIGN.md "Chunks") and fsyncs the file. A failed put (disk full, I/O error)
// leaves no partial file under chunks/.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/chunk_id.h"
#include "common/status.h"

namespace quorumfs {

// A page-aligned buffer for a chunk's bytes, taken from a process-wide pool and given back
// when the last reference goes. Fresh memory costs a page fault per page (on a VM that hands
// free memory back to its host, a trip to the host), and O_DIRECT writes straight from an
// aligned buffer. Thread-safe. At most kPoolBytes of free buffers are kept.
class ChunkBuffer {
 public:
  static constexpr size_t kAlign = 4096;
  static constexpr size_t kPoolBytes = 64 << 20;
  static std::shared_ptr<ChunkBuffer> Take(size_t size);
  ~ChunkBuffer();
  ChunkBuffer(const ChunkBuffer&) = delete;
  ChunkBuffer& operator=(const ChunkBuffer&) = delete;
  char* data() { return p_; }
  const char* data() const { return p_; }
  size_t size() const { return size_; }
  // What data() can hold: size() rounded up to whole 64 KiB (so to whole 4 KiB blocks).
  size_t capacity() const { return cap_; }
  // Free buffers the pool holds (for tests).
  static size_t pooled_bytes();

 private:
  ChunkBuffer(char* p, size_t cap, size_t size) : p_(p), cap_(cap), size_(size) {}
  char* p_;
  size_t cap_;
  size_t size_;
};

struct StoredChunk {
  ChunkId id;
  uint64_t size = 0;
  int64_t last_put_ns = 0;
  std::string hint;  // home node id for a sloppy replica; empty if this node is home
};

// fsyncs directory `dir`, making the names created in it durable.
Status SyncDirectory(const std::string& dir);

class ChunkStore {
 public:
  static constexpr uint64_t kMaxChunkBytes = 16 * 1024 * 1024;

  // Creates the directory layout under `data_dir` if missing and counts stored chunks.
  // `direct_io`: write chunk files with O_DIRECT while the file system takes it (false: through
  // the page cache, which keeps freshly written chunks cached for reads at the price of a
  // kernel copy of every byte).
  static Result<std::unique_ptr<ChunkStore>> Open(const std::string& data_dir,
                                                  bool direct_io = true);

  // Verifies SHA-256(data) == id (InvalidArgument "hash mismatch" otherwise), then stores it
  // durably. `hint` is recorded for sloppy replicas. NoSpace on a full disk.
  Status Put(const ChunkId& id, const void* data, size_t size, const std::string& hint);
  // Stores without hashing: REQUIRES the caller verified the hash.
  Status PutVerified(const ChunkId& id, const void* data, size_t size, const std::string& hint);

  // The stored bytes, unverified. NotFound if absent; kCorruption if the disk cannot read them
  // (EIO).
  Result<std::string> Get(const ChunkId& id);
  // The same into a pooled buffer that is not zero-filled first (the serving path: a get need
  // not clear 1-16 MiB, or fault in fresh pages, before overwriting it). While chunks are
  // written with O_DIRECT, the first read of a chunk that is not wholly in the page cache is
  // made with O_DIRECT too: the disk fills the buffer, without the kernel's copy out of freshly
  // filled page-cache pages (most of a chunkserver's CPU time in a cold sequential read), and
  // a chunk read once (a stream, a scrub) takes no cache memory. A chunk read again goes
  // through the page cache, which keeps it for the reads after (two touches, as 2Q admits); a
  // chunk wholly cached (cachestat(2) says so) is always read through the cache.
  Result<std::shared_ptr<ChunkBuffer>> Read(const ChunkId& id);
  bool Has(const ChunkId& id);
  Result<StoredChunk> Stat(const ChunkId& id);

  // Up to `limit` chunks with id > after (all if after is null), in id order.
  Result<std::vector<StoredChunk>> List(const ChunkId* after, size_t limit);

  // Deletes the chunk if its last put is older than `cutoff_ns`. Returns whether it did.
  Result<bool> DeleteIfOlder(const ChunkId& id, int64_t cutoff_ns);

  // Re-reads and re-hashes; if the bytes are bad, or the disk cannot read them (EIO), moves
  // the file to quarantine/ and returns true. NotFound if absent.
  Result<bool> VerifyOrQuarantine(const ChunkId& id);

  uint64_t chunk_count() const { return count_.load(); }
  uint64_t chunk_bytes() const { return bytes_.load(); }
  // Directory syncs made for prefix directories so far (for tests).
  uint64_t prefix_dir_syncs() const { return prefix_dir_syncs_.load(); }
  // Whether chunk files are still written with O_DIRECT (false once the file system refused).
  bool direct_io() const { return direct_io_.load(); }
  // A put of a new chunk is refused with NoSpace (nothing written) when it would leave less than
  // `bytes` free on the data dir's file system, so that the metadata store, which shares the
  // disk and may use the reserve, can still take the writes that free space (unlinks) and
  // everything else. 0: no reserve (a put fails only when the disk is full). Refreshing a
  // chunk already stored takes no space and is never refused.
  void set_reserve(uint64_t bytes) { reserve_.store(bytes); }
  uint64_t reserve() const { return reserve_.load(); }
  // Bytes free on the data dir's file system for an ordinary writer (statvfs's f_bavail);
  // nullopt if statvfs fails.
  std::optional<uint64_t> FreeBytes() const;
  // Reads served with O_DIRECT so far (for tests).
  uint64_t direct_reads() const { return direct_reads_.load(); }
  std::string PathOf(const ChunkId& id) const;
  // Tests: every read of a chunk's bytes fails with `err` (0: reads work), as a disk with a bad
  // sector does.
  void FailReadsForTesting(int err) { fail_reads_.store(err); }

 private:
  explicit ChunkStore(std::string data_dir) : dir_(std::move(data_dir)) {}
  Status Scan();
  Status WriteHint(const ChunkId& id, const std::string& hint);
  std::string HintPathOf(const ChunkId& id) const;
  // The directory holding id's chunk file: <dir>/chunks/<hex 0-1>/<hex 2-3>.
  std::string DirOf(const ChunkId& id) const;
  // Creates chunks/<hex 0-1>/<hex 2-3> if missing and makes its name durable, once per
  // directory in this process's life.
  Status EnsurePrefixDir(const std::string& hex);
  // Writes and fdatasyncs a new file `tmp` holding `data`: its whole 4 KiB blocks with O_DIRECT
  // while the file system takes it (the bytes go from a ChunkBuffer to the disk without the
  // page-cache copy that was most of a chunkserver's CPU time in a sequential write), else
  // buffered; a partial last block is always written buffered.
  Status WriteChunkFile(const std::string& tmp, const void* data, size_t size);
  // *unsupported: the file system refused O_DIRECT (EINVAL); the caller writes buffered.
  static Status WriteDirect(int fd, const void* data, size_t size, const std::string& path,
                            bool* unsupported);
  // Whether all `size` bytes of the open file are in the page cache; true as well when the
  // kernel cannot tell (no cachestat(2): before Linux 6.5), so that reads stay buffered there.
  bool WhollyCached(int fd, size_t size);
  // Reads the open file with O_DIRECT into `out` (page-aligned, capacity rounded up to whole
  // blocks), from *done (0) until `out->size()` bytes or a short read off a block boundary;
  // *done says how far it got, and the caller reads the rest buffered. *unsupported: the file
  // system refused O_DIRECT. Leaves O_DIRECT set on `fd`.
  static Status ReadDirect(int fd, ChunkBuffer* out, const std::string& path, size_t* done,
                           bool* unsupported);
  // Whether this is the first read of `id` that this store remembers (and remembers it).
  bool FirstTouch(const ChunkId& id);

  std::string dir_;
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> tmp_seq_{0};
  std::atomic<uint64_t> prefix_dir_syncs_{0};
  std::atomic<bool> direct_io_{true};
  std::atomic<uint64_t> reserve_{0};
  std::atomic<uint64_t> putting_bytes_{0};  // new chunks being written (for the reserve check)
  std::atomic<bool> cachestat_works_{true};
  std::atomic<int> fail_reads_{0};
  std::atomic<uint64_t> direct_reads_{0};
  // Chunks read once with O_DIRECT: a fingerprint of the id (never 0) per slot, the slot chosen
  // by other bytes of the id. A collision forgets a chunk, whose next read is then direct
  // again: a copy saved or a cache fill missed, never a wrong byte.
  std::array<std::atomic<uint64_t>, 16384> direct_seen_{};
  // Puts, deletes and quarantines of one chunk exclude each other (striped by id): a GC delete
  // that found the chunk old must not unlink it after a concurrent put refreshed it and was
  // acknowledged.
  std::mutex& LockOf(const ChunkId& id) {
    return locks_[static_cast<unsigned char>(id.view()[0]) % locks_.size()];
  }
  std::array<std::mutex, 64> locks_;
  // Prefix directories (by their 16-bit prefix) whose names this process made durable.
  std::mutex dirs_mu_;
  std::vector<bool> durable_dirs_ = std::vector<bool>(65536, false);
};

}  // namespace quorumfs
