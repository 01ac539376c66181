#include "chunkserver/chunk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace quorumfs {
namespace {

Status ErrnoStatus(const std::string& what, int err) {
  StatusCode code = (err == ENOSPC || err == EDQUOT) ? StatusCode::kNoSpace : StatusCode::kIoError;
  return Status(code, what + ": " + std::strerror(err));
}

// A failed read of a chunk's bytes. EIO is the disk saying the replica cannot be read: as bad
// as wrong bytes (kCorruption), so that a reader reports it and the replica is quarantined
// and replaced, where any other error (no descriptors, ...) says nothing about the replica.
Status ReadFailure(const std::string& path, int err) {
  if (err == EIO) {
    return Status(StatusCode::kCorruption,
                  "read " + path + ": " + std::strerror(err) + " (the replica is unreadable)");
  }
  return ErrnoStatus("read " + path, err);
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    return ErrnoStatus("mkdir " + path, errno);
  return Status::Ok();
}

Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync " + path, err);
  return Status::Ok();
}

Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + path, errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

bool IsHexName(const char* name, size_t len) {
  if (std::strlen(name) != len) return false;
  for (size_t i = 0; i < len; ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(name[i])) || std::isupper(name[i])) return false;
  }
  return true;
}

std::vector<std::string> SortedHexEntries(const std::string& dir, size_t len) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    if (IsHexName(e->d_name, len)) out.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The same for a listing someone relies on: a directory that cannot be read is an error, not
// an empty listing (a listing that left chunks out would show them missing). A subdirectory
// that vanished meanwhile (its last chunk deleted) is empty.
Status ListHexEntries(const std::string& dir, size_t len, bool may_vanish,
                      std::vector<std::string>* out) {
  out->clear();
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT && may_vanish) return Status::Ok();
    return ErrnoStatus("opendir " + dir, errno);
  }
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (IsHexName(e->d_name, len)) out->emplace_back(e->d_name);
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus("readdir " + dir, err);
  std::sort(out->begin(), out->end());
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(const std::string& data_dir, bool direct_io) {
  std::unique_ptr<ChunkStore> store(new ChunkStore(data_dir));
  store->direct_io_ = direct_io;
  for (const char* sub : {"/chunks", "/tmp", "/quarantine", "/hints"}) {
    QFS_RETURN_IF_ERROR(MakeDir(data_dir + sub));
  }
  QFS_RETURN_IF_ERROR(FsyncPath(data_dir, O_RDONLY | O_DIRECTORY));  // their names, durable
  // Leftover temp files are puts that never completed (crash); they were never acknowledged.
  if (DIR* d = ::opendir((data_dir + "/tmp").c_str())) {
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ::unlink((data_dir + "/tmp/" + e->d_name).c_str());
    }
    ::closedir(d);
  }
  QFS_RETURN_IF_ERROR(store->Scan());
  return store;
}

Status ChunkStore::Scan() {
  uint64_t count = 0, bytes = 0;
  std::string root = dir_ + "/chunks";
  for (const auto& a : SortedHexEntries(root, 2)) {
    for (const auto& b : SortedHexEntries(root + "/" + a, 2)) {
      std::string d = root + "/" + a + "/" + b;
      for (const auto& name : SortedHexEntries(d, 64)) {
        struct stat st;
        if (::stat((d + "/" + name).c_str(), &st) == 0) {
          ++count;
          bytes += static_cast<uint64_t>(st.st_size);
        }
      }
    }
  }
  count_ = count;
  bytes_ = bytes;
  return Status::Ok();
}

std::string ChunkStore::DirOf(const ChunkId& id) const {
  std::string hex = id.ToHex();
  return dir_ + "/chunks/" + hex.substr(0, 2) + "/" + hex.substr(2, 2);
}

std::string ChunkStore::PathOf(const ChunkId& id) const { return DirOf(id) + "/" + id.ToHex(); }

Status SyncDirectory(const std::string& dir) { return FsyncPath(dir, O_RDONLY | O_DIRECTORY); }

std::string ChunkStore::HintPathOf(const ChunkId& id) const {
  return dir_ + "/hints/" + id.ToHex();
}

Status ChunkStore::Put(const ChunkId& id, const void* data, size_t size, const std::string& hint) {
  if (ChunkId::Of(data, size) != id) {
    return InvalidArgument("hash mismatch: bytes hash to " + ChunkId::Of(data, size).ToHex() +
                           ", not " + id.ToHex());
  }
  return PutVerified(id, data, size, hint);
}

std::optional<uint64_t> ChunkStore::FreeBytes() const {
  struct statvfs vfs;
  if (::statvfs(dir_.c_str(), &vfs) != 0) return std::nullopt;
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

Status ChunkStore::PutVerified(const ChunkId& id, const void* data, size_t size,
                               const std::string& hint) {
  if (size > kMaxChunkBytes) {
    return Status(StatusCode::kTooLarge,
                  "chunk of " + std::to_string(size) + " bytes (max 16 MiB)");
  }
  std::lock_guard<std::mutex> lock(LockOf(id));
  std::string path = PathOf(id);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    // Already stored: refresh the last-put time durably instead of rewriting.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open " + path, errno);
    int rc = ::futimens(fd, nullptr);
    int err = errno;
    if (rc == 0) rc = ::fsync(fd), err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus("refresh " + path, err);
    if (hint.empty()) ::unlink(HintPathOf(id).c_str());
    return Status::Ok();
  }
  // Puts on other disk threads may not show in the free space yet: they count as taken.
  uint64_t others = putting_bytes_.fetch_add(size);
  struct Putting {
    std::atomic<uint64_t>& bytes;
    size_t size;
    ~Putting() { bytes.fetch_sub(size); }
  } putting{putting_bytes_, size};
  if (uint64_t reserve = reserve_.load()) {
    std::optional<uint64_t> avail = FreeBytes();
    if (avail && *avail < reserve + size + others) {
      return Status(StatusCode::kNoSpace, "disk nearly full: " + std::to_string(*avail >> 20) +
                                              " MiB free, and chunks may not use the last " +
                                              std::to_string(reserve >> 20) +
                                              " MiB (--reserve), kept for metadata");
    }
  }
  std::string hex = id.ToHex();
  std::string d2 = DirOf(id);
  QFS_RETURN_IF_ERROR(EnsurePrefixDir(hex));
  std::string tmp = dir_ + "/tmp/" + hex + "." + std::to_string(::getpid()) + "." +
                    std::to_string(tmp_seq_.fetch_add(1));
  Status st_write = WriteChunkFile(tmp, data, size);
  if (!st_write.ok()) {
    ::unlink(tmp.c_str());
    return st_write;
  }
  if (!hint.empty()) {
    Status h = WriteHint(id, hint);
    if (!h.ok()) {
      ::unlink(tmp.c_str());
      return h;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ErrnoStatus("rename " + tmp, errno);
    ::unlink(tmp.c_str());
    return s;
  }
  Status synced = FsyncPath(d2, O_RDONLY | O_DIRECTORY);
  if (!synced.ok()) {
    // The name may not be durable: it must not stay for a retried put to find and refresh
    // (which syncs the file, not its name) and acknowledge.
    ::unlink(path.c_str());
    return synced;
  }
  ++count_;
  bytes_ += size;
  return Status::Ok();
}

Status ChunkStore::WriteChunkFile(const std::string& tmp, const void* data, size_t size) {
  if (direct_io_.load()) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0644);
    if (fd < 0 && errno != EINVAL) return ErrnoStatus("create " + tmp, errno);
    bool unsupported = fd < 0;
    if (fd >= 0) {
      Status s = WriteDirect(fd, data, size, tmp, &unsupported);
      if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoStatus("fdatasync " + tmp, errno);
      ::close(fd);
      if (!unsupported) return s;
    }
    // The file system refused O_DIRECT (an open refused that way may still have created the
    // file): buffered from now on, starting with this put.
    ::unlink(tmp.c_str());
    if (direct_io_.exchange(false)) {
      std::fprintf(stderr,
                   "quorumfs-chunkserver: %s/chunks refuses O_DIRECT; writing chunks "
                   "through the page cache\n",
                   dir_.c_str());
    }
  }
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create " + tmp, errno);
  Status s = WriteAll(fd, data, size, tmp);
  if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoStatus("fdatasync " + tmp, errno);
  ::close(fd);
  return s;
}

Status ChunkStore::WriteDirect(int fd, const void* data, size_t size, const std::string& path,
                               bool* unsupported) {
  // The whole 4 KiB blocks go from an aligned buffer with O_DIRECT; a partial last block is
  // then written through the page cache (padding it and truncating afterwards would make the
  // file system read that block back to zero its tail).
  const size_t head = size / ChunkBuffer::kAlign * ChunkBuffer::kAlign;
  size_t done = 0;
  if (head > 0) {
    // The server hands over pooled, page-aligned buffers; any other source is copied into one.
    const char* src = static_cast<const char*>(data);
    std::shared_ptr<ChunkBuffer> copy;
    if (reinterpret_cast<uintptr_t>(src) % ChunkBuffer::kAlign != 0) {
      copy = ChunkBuffer::Take(head);
      std::memcpy(copy->data(), src, head);
      src = copy->data();
    }
    while (done < head) {
      ssize_t n = ::pwrite(fd, src + done, head - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EINVAL) {
        *unsupported = true;  // the caller starts over without O_DIRECT
        return Status(StatusCode::kIoError, "O_DIRECT refused");
      }
      if (n < 0) return ErrnoStatus("write " + path, errno);
      if (n == 0) return Status(StatusCode::kIoError, "write " + path + ": wrote nothing");
      done += static_cast<size_t>(n);
      if (done % ChunkBuffer::kAlign != 0)
        break;  // a short write off a block boundary: rest buffered
    }
  }
  if (done < size) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_DIRECT) != 0) {
      return ErrnoStatus("fcntl " + path, errno);
    }
    const char* p = static_cast<const char*>(data) + done;
    while (done < size) {
      ssize_t n = ::pwrite(fd, p, size - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus("write " + path, errno);
      if (n == 0) return Status(StatusCode::kIoError, "write " + path + ": wrote nothing");
      done += static_cast<size_t>(n);
      p += n;
    }
  }
  return Status::Ok();
}

Status ChunkStore::EnsurePrefixDir(const std::string& hex) {
  size_t index = std::stoul(hex.substr(0, 4), nullptr, 16);
  {
    std::lock_guard<std::mutex> lock(dirs_mu_);
    if (durable_dirs_[index]) return Status::Ok();
  }
  // The chunk's own fsync covers its name in <hex 2-3>, not that directory's name in
  // <hex 0-1> nor that one's in chunks/: without these syncs, a crash (on a file system that
  // does not journal directory changes) could take an acknowledged chunk with the directory.
  // A directory found existing is synced too: another put may have made it a moment ago and
  // not synced it yet, or it may be left from before a crash in the same state.
  std::string chunks = dir_ + "/chunks";
  std::string d1 = chunks + "/" + hex.substr(0, 2);
  std::string d2 = d1 + "/" + hex.substr(2, 2);
  QFS_RETURN_IF_ERROR(MakeDir(d1));
  QFS_RETURN_IF_ERROR(MakeDir(d2));
  QFS_RETURN_IF_ERROR(FsyncPath(d1, O_RDONLY | O_DIRECTORY));
  QFS_RETURN_IF_ERROR(FsyncPath(chunks, O_RDONLY | O_DIRECTORY));
  prefix_dir_syncs_ += 2;
  std::lock_guard<std::mutex> lock(dirs_mu_);
  durable_dirs_[index] = true;
  return Status::Ok();
}

Status ChunkStore::WriteHint(const ChunkId& id, const std::string& hint) {
  std::string path = HintPathOf(id);
  std::string tmp = path + ".tmp" + std::to_string(tmp_seq_.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create " + tmp, errno);
  Status s = WriteAll(fd, hint.data(), hint.size(), tmp);
  if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoStatus("fdatasync " + tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus("rename " + tmp, errno);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

namespace {

struct BufferPool {
  std::mutex mu;
  std::vector<std::pair<char*, size_t>> free;  // (buffer, capacity)
  size_t bytes = 0;
};

BufferPool& Pool() {
  static BufferPool* pool = new BufferPool;  // never destroyed: buffers may outlive statics
  return *pool;
}

}  // namespace

std::shared_ptr<ChunkBuffer> ChunkBuffer::Take(size_t size) {
  constexpr size_t kGrain = 64 << 10;
  const size_t cap = std::max<size_t>(kGrain, (size + kGrain - 1) / kGrain * kGrain);
  {
    BufferPool& pool = Pool();
    std::lock_guard<std::mutex> lock(pool.mu);
    // The smallest free buffer that fits and is not more than twice as large.
    size_t best = pool.free.size();
    for (size_t i = 0; i < pool.free.size(); ++i) {
      size_t c = pool.free[i].second;
      if (c >= size && c <= 2 * cap && (best == pool.free.size() || c < pool.free[best].second))
        best = i;
    }
    if (best != pool.free.size()) {
      auto [p, c] = pool.free[best];
      pool.free[best] = pool.free.back();
      pool.free.pop_back();
      pool.bytes -= c;
      return std::shared_ptr<ChunkBuffer>(new ChunkBuffer(p, c, size));
    }
  }
  void* p = nullptr;
  if (::posix_memalign(&p, kAlign, cap) != 0) throw std::bad_alloc();
  return std::shared_ptr<ChunkBuffer>(new ChunkBuffer(static_cast<char*>(p), cap, size));
}

ChunkBuffer::~ChunkBuffer() {
  BufferPool& pool = Pool();
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    if (pool.bytes + cap_ <= kPoolBytes) {
      pool.free.emplace_back(p_, cap_);
      pool.bytes += cap_;
      return;
    }
  }
  std::free(p_);
}

size_t ChunkBuffer::pooled_bytes() {
  BufferPool& pool = Pool();
  std::lock_guard<std::mutex> lock(pool.mu);
  return pool.bytes;
}

Result<std::string> ChunkStore::Get(const ChunkId& id) {
  QFS_ASSIGN_OR_RETURN(std::shared_ptr<ChunkBuffer> b, Read(id));
  return std::string(b->data(), b->size());
}

Result<std::shared_ptr<ChunkBuffer>> ChunkStore::Read(const ChunkId& id) {
  std::string path = PathOf(id);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("chunk " + id.ToHex() + " not stored here");
    return ErrnoStatus("open " + path, errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus("stat " + path, err);
  }
  if (int err = fail_reads_.load()) {
    ::close(fd);
    return ReadFailure(path, err);
  }
  auto out = ChunkBuffer::Take(static_cast<size_t>(st.st_size));
  size_t done = 0;
  if (out->size() > 0 && direct_io_.load() && !WhollyCached(fd, out->size()) && FirstTouch(id)) {
    bool unsupported = false;
    Status s = ReadDirect(fd, out.get(), path, &done, &unsupported);
    if (!s.ok() && !unsupported) {
      ::close(fd);
      return s;
    }
    if (done == out->size()) {
      ::close(fd);
      ++direct_reads_;
      return out;
    }
    // Refused, or a short read off a block boundary: the rest through the page cache.
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_DIRECT) != 0) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus("fcntl " + path, err);
    }
  }
  while (done < out->size()) {
    ssize_t n = ::pread(fd, out->data() + done, out->size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      return ReadFailure(path, err);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

bool ChunkStore::FirstTouch(const ChunkId& id) {
  std::string_view v = id.view();
  uint64_t fingerprint = 0;
  uint32_t slot = 0;
  std::memcpy(&fingerprint, v.data(), sizeof(fingerprint));
  std::memcpy(&slot, v.data() + sizeof(fingerprint), sizeof(slot));
  fingerprint |= 1;
  std::atomic<uint64_t>& seen = direct_seen_[slot % direct_seen_.size()];
  if (seen.load(std::memory_order_relaxed) == fingerprint) return false;
  seen.store(fingerprint, std::memory_order_relaxed);
  return true;
}

bool ChunkStore::WhollyCached(int fd, size_t size) {
  if (!cachestat_works_.load()) return true;
  // cachestat(2), Linux 6.5+; glibc 2.36 has no wrapper. 451 on every architecture.
  struct {
    uint64_t off, len;
  } range{0, size};
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } cs{};
  if (::syscall(451, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) cachestat_works_ = false;
    return true;
  }
  const uint64_t pages = (size + ChunkBuffer::kAlign - 1) / ChunkBuffer::kAlign;
  return cs.nr_cache >= pages;
}

Status ChunkStore::ReadDirect(int fd, ChunkBuffer* out, const std::string& path, size_t* done,
                              bool* unsupported) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus("fcntl " + path, errno);
  if (::fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) {
    if (errno == EINVAL) {
      *unsupported = true;
      return Status(StatusCode::kIoError, "O_DIRECT refused");
    }
    return ErrnoStatus("fcntl " + path, errno);
  }
  const size_t size = out->size();
  // Whole blocks into the page-aligned buffer; the read stops short at the end of the file.
  const size_t want = (size + ChunkBuffer::kAlign - 1) / ChunkBuffer::kAlign * ChunkBuffer::kAlign;
  if (want > out->capacity()) return Status(StatusCode::kInternal, "chunk buffer too small");
  while (*done < size && *done % ChunkBuffer::kAlign == 0) {
    ssize_t n = ::pread(fd, out->data() + *done, want - *done, static_cast<off_t>(*done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && *done == 0) {
      *unsupported = true;
      return Status(StatusCode::kIoError, "O_DIRECT refused");
    }
    if (n < 0) return ReadFailure(path, errno);
    if (n == 0) return ReadFailure(path, EIO);  // shorter than it was at fstat
    *done += static_cast<size_t>(n);
    if (*done > size) {
      return Status(StatusCode::kIoError, "read " + path + ": longer than it was at fstat");
    }
  }
  return Status::Ok();
}

bool ChunkStore::Has(const ChunkId& id) {
  struct stat st;
  return ::stat(PathOf(id).c_str(), &st) == 0;
}

Result<StoredChunk> ChunkStore::Stat(const ChunkId& id) {
  struct stat st;
  if (::stat(PathOf(id).c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("chunk " + id.ToHex() + " not stored here");
    return ErrnoStatus("stat " + PathOf(id), errno);
  }
  StoredChunk c;
  c.id = id;
  c.size = static_cast<uint64_t>(st.st_size);
  c.last_put_ns = MtimeNs(st);
  char buf[128];
  int fd = ::open(HintPathOf(id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) c.hint.assign(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  return c;
}

Result<std::vector<StoredChunk>> ChunkStore::List(const ChunkId* after, size_t limit) {
  std::vector<StoredChunk> out;
  std::string after_hex = after ? after->ToHex() : "";
  std::string root = dir_ + "/chunks";
  std::vector<std::string> as, bs, names;
  QFS_RETURN_IF_ERROR(ListHexEntries(root, 2, false, &as));
  for (const auto& a : as) {
    if (!after_hex.empty() && a < after_hex.substr(0, 2)) continue;
    QFS_RETURN_IF_ERROR(ListHexEntries(root + "/" + a, 2, true, &bs));
    for (const auto& b : bs) {
      if (!after_hex.empty() && a + b < after_hex.substr(0, 4)) continue;
      QFS_RETURN_IF_ERROR(ListHexEntries(root + "/" + a + "/" + b, 64, true, &names));
      for (const auto& name : names) {
        if (!after_hex.empty() && name <= after_hex) continue;
        auto id = ChunkId::FromHex(name);
        if (!id.ok()) continue;
        auto st = Stat(*id);
        if (!st.ok() && st.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
        if (!st.ok()) return st.status();
        out.push_back(std::move(st).value());
        if (out.size() >= limit) return out;
      }
    }
  }
  return out;
}

Result<bool> ChunkStore::DeleteIfOlder(const ChunkId& id, int64_t cutoff_ns) {
  std::lock_guard<std::mutex> lock(LockOf(id));
  std::string path = PathOf(id);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoStatus("stat " + path, errno);
  }
  if (MtimeNs(st) >= cutoff_ns) return false;
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoStatus("unlink " + path, errno);
  }
  ::unlink(HintPathOf(id).c_str());
  --count_;
  bytes_ -= static_cast<uint64_t>(st.st_size);
  return true;
}

Result<bool> ChunkStore::VerifyOrQuarantine(const ChunkId& id) {
  std::string path = PathOf(id);
  struct stat before;
  if (::stat(path.c_str(), &before) != 0) {
    if (errno == ENOENT) return NotFound("chunk " + id.ToHex() + " not stored here");
    return ErrnoStatus("stat " + path, errno);
  }
  // Read and hashed without the id's lock (a failing disk may take seconds, and the lock is
  // shared with other ids' puts and deletes); checked again under it before the move.
  auto read = Read(id);
  if (!read.ok() && read.status().code() != StatusCode::kCorruption) return read.status();
  if (read.ok() && ChunkId::Of((*read)->data(), (*read)->size()) == id) return false;
  std::lock_guard<std::mutex> lock(LockOf(id));
  // Still the file found bad: a GC delete and a fresh put of the id since leave a new file,
  // which this check says nothing about.
  struct stat now;
  if (::stat(path.c_str(), &now) != 0 || now.st_ino != before.st_ino ||
      now.st_mtim.tv_sec != before.st_mtim.tv_sec ||
      now.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
    return false;
  }
  // Wrong bytes, or bytes the disk cannot read: out of chunks/, durably (a crash must not
  // bring the replica back to be served and counted).
  std::string q = dir_ + "/quarantine/" + id.ToHex() + "." + std::to_string(std::time(nullptr));
  if (::rename(path.c_str(), q.c_str()) != 0) return ErrnoStatus("quarantine " + path, errno);
  ::unlink(HintPathOf(id).c_str());
  --count_;
  bytes_ -= static_cast<uint64_t>(now.st_size);
  QFS_RETURN_IF_ERROR(SyncDirectory(DirOf(id)));
  return true;
}

}  // namespace quorumfs
