#include "chunkserver/chunk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "common/memory.h"

namespace quorumfs {
namespace {

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/quorumfs-chunkstore-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { (void)std::system(("rm -rf '" + dir_ + "'").c_str()); }
  // Mounts a fresh file system of `type` over dir_, in a private mount namespace so that it
  // goes away with the test process. Needs root, which CI has.
  void MountOverDir(const std::string& type, const char* options) {
    ASSERT_EQ(::geteuid(), 0u) << "this test mounts a " << type << " and needs root";
    ASSERT_EQ(::unshare(CLONE_NEWNS), 0);
    ASSERT_EQ(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0);
    ASSERT_EQ(::mount(type.c_str(), dir_.c_str(), type.c_str(), 0, options), 0);
  }
  static bool EmptyDir(const std::string& dir) {
    return std::system(("test -z \"$(ls -A '" + dir + "')\"").c_str()) == 0;
  }
  std::string dir_;
};

TEST_F(ChunkStoreTest, PutGetAndLayout) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::string data = "hello chunk";
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  std::string hex = id.ToHex();
  struct stat st;
  EXPECT_EQ(
      ::stat((dir_ + "/chunks/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex).c_str(),
             &st),
      0);
  auto got = (*store)->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, data);
  EXPECT_EQ((*store)->chunk_count(), 1u);
  EXPECT_EQ((*store)->chunk_bytes(), data.size());
  EXPECT_EQ((*store)->Get(ChunkId::Of("absent")).status().code(), StatusCode::kNotFound);
  // Reopen counts what is on disk.
  store->reset();
  auto again = ChunkStore::Open(dir_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->chunk_count(), 1u);
}

// A chunk's fsync makes its name durable in its prefix directory, but not that directory's own
// name: the first put into a prefix directory in a process's life syncs the two directories
// above it, later puts into it sync nothing more, and a reopened store syncs them again once.
TEST_F(ChunkStoreTest, FirstPutIntoAPrefixDirectorySyncsItsParents) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string a = "first";
  ChunkId ida = ChunkId::Of(a);
  ASSERT_TRUE((*store)->Put(ida, a.data(), a.size(), "").ok());
  EXPECT_EQ((*store)->prefix_dir_syncs(), 2u);
  // Bytes of another chunk under a's 4-hex-digit prefix (about 65,536 tries).
  auto same_prefix = [&ida](const std::string& tag) {
    for (uint64_t i = 0;; ++i) {
      std::string bytes = tag + std::to_string(i);
      if (ChunkId::Of(bytes).ToHex().substr(0, 4) == ida.ToHex().substr(0, 4)) return bytes;
    }
  };
  std::string b = same_prefix("second ");
  ASSERT_TRUE((*store)->Put(ChunkId::Of(b), b.data(), b.size(), "").ok());
  EXPECT_EQ((*store)->prefix_dir_syncs(), 2u);
  std::string c = "third";
  ChunkId idc = ChunkId::Of(c);
  ASSERT_NE(idc.ToHex().substr(0, 4), ida.ToHex().substr(0, 4));
  ASSERT_TRUE((*store)->Put(idc, c.data(), c.size(), "").ok());
  EXPECT_EQ((*store)->prefix_dir_syncs(), 4u);
  store->reset();
  auto again = ChunkStore::Open(dir_);
  ASSERT_TRUE(again.ok());
  std::string d = same_prefix("fourth ");
  ASSERT_TRUE((*again)->Put(ChunkId::Of(d), d.data(), d.size(), "").ok());
  EXPECT_EQ((*again)->prefix_dir_syncs(), 2u) << "an existing directory is synced once too";
  EXPECT_EQ((*again)->chunk_count(), 4u);
}

TEST_F(ChunkStoreTest, HashMismatchStoresNothing) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  ChunkId wrong = ChunkId::Of("other");
  Status s = (*store)->Put(wrong, "bytes", 5, "");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("hash mismatch"), std::string::npos);
  EXPECT_FALSE((*store)->Has(wrong));
  EXPECT_EQ((*store)->chunk_count(), 0u);
}

TEST_F(ChunkStoreTest, RePutRefreshesLastPutTimeAndHint) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string data = "refresh me";
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "b").ok());
  auto first = (*store)->Stat(id);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->hint, "b");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  auto second = (*store)->Stat(id);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second->last_put_ns, first->last_put_ns);
  EXPECT_EQ(second->hint, "");  // now stored by its home node
  EXPECT_EQ((*store)->chunk_count(), 1u);
}

TEST_F(ChunkStoreTest, ListPagesInIdOrder) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::vector<ChunkId> ids;
  for (int i = 0; i < 50; ++i) {
    std::string d = "chunk " + std::to_string(i);
    ids.push_back(ChunkId::Of(d));
    ASSERT_TRUE((*store)->Put(ids.back(), d.data(), d.size(), "").ok());
  }
  std::sort(ids.begin(), ids.end());
  std::vector<ChunkId> listed;
  std::optional<ChunkId> after;
  for (;;) {
    auto page = (*store)->List(after ? &*after : nullptr, 7);
    ASSERT_TRUE(page.ok());
    for (const auto& c : *page) listed.push_back(c.id);
    if (page->size() < 7) break;
    after = page->back().id;
  }
  EXPECT_EQ(listed, ids);
  // A directory that cannot be read fails the listing: an empty or partial listing would show
  // fsck the chunks as missing (and a rebalance as moved). Before, it listed nothing.
  std::string chunks = dir_ + "/chunks", aside = dir_ + "/chunks-aside";
  ASSERT_EQ(::rename(chunks.c_str(), aside.c_str()), 0);
  auto gone = (*store)->List(nullptr, 100);
  EXPECT_FALSE(gone.ok());
  if (!gone.ok()) {
    EXPECT_NE(gone.status().message().find("chunks"), std::string::npos);
  }
  ASSERT_EQ(::rename(aside.c_str(), chunks.c_str()), 0);
  std::string prefix = chunks + "/" + ids.back().ToHex().substr(0, 2);
  ASSERT_EQ(::rename(prefix.c_str(), aside.c_str()), 0);
  { std::ofstream(prefix) << "not a directory"; }
  auto unreadable = (*store)->List(nullptr, 100);
  EXPECT_FALSE(unreadable.ok());
  ASSERT_EQ(::unlink(prefix.c_str()), 0);
  ASSERT_EQ(::rename(aside.c_str(), prefix.c_str()), 0);
  auto again = (*store)->List(nullptr, 100);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->size(), ids.size());
}

TEST_F(ChunkStoreTest, DeleteOnlyIfOlderThanCutoff) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string data = "gc me";
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  auto st = (*store)->Stat(id);
  ASSERT_TRUE(st.ok());
  auto kept = (*store)->DeleteIfOlder(id, st->last_put_ns);  // not older: kept
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(*kept);
  EXPECT_TRUE((*store)->Has(id));
  auto gone = (*store)->DeleteIfOlder(id, st->last_put_ns + 1);
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(*gone);
  EXPECT_FALSE((*store)->Has(id));
  EXPECT_EQ((*store)->chunk_count(), 0u);
}

TEST_F(ChunkStoreTest, CorruptReplicaIsQuarantined) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string data = "precious bytes";
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  auto healthy = (*store)->VerifyOrQuarantine(id);
  ASSERT_TRUE(healthy.ok());
  EXPECT_FALSE(*healthy);
  {
    std::fstream f((*store)->PathOf(id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('X');
  }
  auto bad = (*store)->VerifyOrQuarantine(id);
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(*bad);
  EXPECT_FALSE((*store)->Has(id));
}

// A replica the disk cannot read (EIO) is as bad as one with wrong bytes: the read says
// corruption (so the reader reports it) and a verify quarantines it. Any other read failure
// says nothing about the replica and quarantines nothing.
TEST_F(ChunkStoreTest, UnreadableReplicaIsQuarantinedOtherFailuresAreNot) {
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string data = "bytes on a bad sector";
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  ASSERT_EQ((*store)->chunk_count(), 1u);

  (*store)->FailReadsForTesting(EMFILE);
  EXPECT_EQ((*store)->Read(id).status().code(), StatusCode::kIoError);
  auto other = (*store)->VerifyOrQuarantine(id);
  EXPECT_FALSE(other.ok());
  EXPECT_TRUE((*store)->Has(id));
  EXPECT_EQ((*store)->chunk_count(), 1u);

  (*store)->FailReadsForTesting(EIO);
  auto read = (*store)->Read(id);
  EXPECT_EQ(read.status().code(), StatusCode::kCorruption);
  EXPECT_NE(read.status().message().find("unreadable"), std::string::npos);
  auto bad = (*store)->VerifyOrQuarantine(id);
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  EXPECT_TRUE(*bad);
  EXPECT_FALSE((*store)->Has(id));
  EXPECT_EQ((*store)->chunk_count(), 0u);
  EXPECT_EQ((*store)->chunk_bytes(), 0u);

  // A good copy put again is stored afresh, not refreshed in place.
  (*store)->FailReadsForTesting(0);
  ASSERT_TRUE((*store)->Put(id, data.data(), data.size(), "").ok());
  auto back = (*store)->Get(id);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, data);
}

// Chunks are written with O_DIRECT from an aligned buffer padded to 4 KiB, then truncated to
// their size: every size must come back byte for byte, with the right file size, whichever
// way the store writes (--buffered-chunks writes through the page cache).
TEST_F(ChunkStoreTest, EverySizeComesBackExactlyDirectAndBuffered) {
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "O_DIRECT" : "buffered");
    std::string dir = dir_ + (direct ? "/direct" : "/buffered");
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    auto store = ChunkStore::Open(dir, direct);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::mt19937_64 rng(42);
    for (size_t size : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{4097},
                        size_t{65536 + 17}, size_t{1 << 20}, size_t{(3 << 20) + 5}}) {
      SCOPED_TRACE(size);
      // From an ordinary buffer (copied to an aligned one for O_DIRECT) and from a page-aligned
      // pooled one (written as it is, as the server does).
      for (bool pooled : {false, true}) {
        SCOPED_TRACE(pooled ? "pooled source" : "string source");
        std::string data(size, '\0');
        for (char& c : data) c = static_cast<char>(rng());
        ChunkId id = ChunkId::Of(data);
        std::shared_ptr<ChunkBuffer> buf = ChunkBuffer::Take(size);
        if (size > 0) std::memcpy(buf->data(), data.data(), size);
        const char* src = pooled ? buf->data() : data.data();
        ASSERT_TRUE((*store)->Put(id, src, size, "").ok());
        struct stat st;
        ASSERT_EQ(::stat((*store)->PathOf(id).c_str(), &st), 0);
        EXPECT_EQ(static_cast<size_t>(st.st_size), size);
        auto got = (*store)->Get(id);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_TRUE(*got == data);
      }
    }
    // A file system that takes O_DIRECT (this one, if a probe file opens and writes with it)
    // keeps it.
    int probe = ::open((dir + "/probe").c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
    bool fs_direct = probe >= 0;
    if (probe >= 0) {
      void* block = nullptr;
      ASSERT_EQ(::posix_memalign(&block, 4096, 4096), 0);
      std::memset(block, 0, 4096);
      fs_direct = ::pwrite(probe, block, 4096, 0) == 4096;
      std::free(block);
      ::close(probe);
    }
    EXPECT_EQ((*store)->direct_io(), direct && fs_direct);
    // Nothing is left in tmp/.
    EXPECT_TRUE(EmptyDir(dir + "/tmp"));
  }
}

// While chunks are written with O_DIRECT, the first read of a chunk not wholly in the page
// cache is made with O_DIRECT as well (no kernel copy out of freshly filled cache pages), a
// second read through the cache (which then keeps it), and a cached chunk's read always
// through the cache; every size comes back byte for byte each way. The store lives on the
// build tree's file system (a disk in any CI), not on /tmp, which may be a tmpfs where every
// chunk is always cached.
TEST(ChunkStoreDirectReadTest, FirstColdReadIsDirectLaterReadsThroughTheCache) {
  char tmpl[] = "quorumfs-chunkstore-direct-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = std::string(tmpl);
  struct Cleanup {
    std::string d;
    ~Cleanup() { (void)std::system(("rm -rf '" + d + "'").c_str()); }
  } cleanup{dir};
  auto store = ChunkStore::Open(dir, /*direct_io=*/true);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto evict = [&](const ChunkId& id) {
    int fd = ::open((*store)->PathOf(id).c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ::close(fd);
  };
  auto read_buffered = [&](const ChunkId& id, size_t bytes) {
    int fd = ::open((*store)->PathOf(id).c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);  // no read-ahead past `bytes`
    std::string sink(bytes, '\0');
    ASSERT_EQ(::pread(fd, sink.data(), bytes, 0), static_cast<ssize_t>(bytes));
    ::close(fd);
  };
  auto cached_pages = [&](const ChunkId& id) -> uint64_t {
    int fd = ::open((*store)->PathOf(id).c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    struct {
      uint64_t off, len;
    } range{0, 0};  // len 0: to the end of the file
    uint64_t cs[5] = {};
    EXPECT_EQ(::syscall(451, fd, &range, cs, 0), 0) << std::strerror(errno);
    ::close(fd);
    return cs[0];
  };
  // Whether this kernel can tell what is cached (cachestat, Linux 6.5+): without it every read
  // stays buffered, as before.
  bool kernel_tells = ::syscall(451, -1, nullptr, nullptr, 0) != 0 && errno != ENOSYS;
  std::mt19937_64 rng(7);
  auto put = [&](size_t size, std::string* data, ChunkId* id) {
    data->assign(size, '\0');
    for (char& c : *data) c = static_cast<char>(rng());
    *id = ChunkId::Of(*data);
    ASSERT_TRUE((*store)->Put(*id, data->data(), size, "").ok());
    ASSERT_TRUE((*store)->direct_io()) << dir << " refuses O_DIRECT: this test cannot see it";
    ASSERT_NO_FATAL_FAILURE(evict(*id));
  };
  for (size_t size : {size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{65536 + 17},
                      size_t{1 << 20}, size_t{(3 << 20) + 5}}) {
    SCOPED_TRACE(size);
    const uint64_t pages = (size + 4095) / 4096;
    std::string data;
    ChunkId id;
    ASSERT_NO_FATAL_FAILURE(put(size, &data, &id));
    // First read, cold: O_DIRECT, and nothing of it cached afterwards.
    uint64_t before = (*store)->direct_reads();
    auto got = (*store)->Read(id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(std::string((*got)->data(), (*got)->size()), data);
    if (kernel_tells) {
      EXPECT_EQ((*store)->direct_reads(), before + 1);
      EXPECT_EQ(cached_pages(id), 0u);
    } else {
      EXPECT_EQ((*store)->direct_reads(), before);
    }
    // Second read, cold again: through the cache, which keeps the whole chunk.
    ASSERT_NO_FATAL_FAILURE(evict(id));
    before = (*store)->direct_reads();
    auto again = (*store)->Get(id);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, data);
    EXPECT_EQ((*store)->direct_reads(), before);
    if (kernel_tells) {
      EXPECT_EQ(cached_pages(id), pages);
    }
    // Cached: through the cache.
    auto cached = (*store)->Read(id);
    ASSERT_TRUE(cached.ok()) << cached.status().ToString();
    EXPECT_EQ(std::string((*cached)->data(), (*cached)->size()), data);
    EXPECT_EQ((*store)->direct_reads(), before);
    // A chunk partly cached (its first block read through the cache) is not wholly cached: its
    // first read by the store is O_DIRECT.
    if (size > 4096) {
      std::string other;
      ChunkId other_id;
      ASSERT_NO_FATAL_FAILURE(put(size, &other, &other_id));
      ASSERT_NO_FATAL_FAILURE(read_buffered(other_id, 4096));
      before = (*store)->direct_reads();
      auto partly = (*store)->Get(other_id);
      ASSERT_TRUE(partly.ok()) << partly.status().ToString();
      EXPECT_EQ(*partly, other);
      EXPECT_EQ((*store)->direct_reads(), before + (kernel_tells ? 1 : 0));
    }
  }
  // A store that writes through the page cache (--buffered-chunks) reads through it too.
  auto buffered = ChunkStore::Open(dir, /*direct_io=*/false);
  ASSERT_TRUE(buffered.ok()) << buffered.status().ToString();
  std::string data(100000, 'q');
  ChunkId id = ChunkId::Of(data);
  ASSERT_TRUE((*buffered)->Put(id, data.data(), data.size(), "").ok());
  ASSERT_NO_FATAL_FAILURE(evict(id));
  auto got = (*buffered)->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, data);
  EXPECT_EQ((*buffered)->direct_reads(), 0u);
}

// Chunk buffers are page-aligned and reused: a buffer given back is taken again by the next
// request of a size it fits, and the pool keeps at most kPoolBytes of free buffers.
TEST(ChunkBufferTest, AlignedReusedAndBounded) {
  char* first = nullptr;
  {
    auto a = ChunkBuffer::Take((5 << 20) + 12345);  // a size no other test in this process uses
    ASSERT_EQ(a->size(), size_t{(5 << 20) + 12345});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % ChunkBuffer::kAlign, 0u);
    std::memset(a->data(), 7, a->size());
    first = a->data();
  }
  auto b = ChunkBuffer::Take((5 << 20) + 100);
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(b->size(), size_t{(5 << 20) + 100});
  b.reset();
  {
    std::vector<std::shared_ptr<ChunkBuffer>> many;
    for (int i = 0; i < 100; ++i) many.push_back(ChunkBuffer::Take(1 << 20));  // 100 MiB
  }
  EXPECT_LE(ChunkBuffer::pooled_bytes(), ChunkBuffer::kPoolBytes);
  EXPECT_GE(ChunkBuffer::pooled_bytes(), ChunkBuffer::kPoolBytes / 2);
}

// After KeepLargeBuffersInHeap (the daemons call it first thing), a buffer of a large chunk's size
// comes from the heap, not from a mapping of its own, and stays there for reuse once freed.
TEST(ChunkBufferTest, LargeBuffersStayInTheHeap) {
  KeepLargeBuffersInHeap();
  constexpr size_t kSize = 24 << 20;  // above any size glibc's own threshold rose to before
  struct mallinfo2 before = mallinfo2();
  char* p = static_cast<char*>(std::malloc(kSize));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, kSize);
  struct mallinfo2 during = mallinfo2();
  EXPECT_LT(during.hblkhd, before.hblkhd + kSize) << "the buffer got a mapping of its own";
  std::free(p);
  struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.arena + after.hblkhd, during.arena + during.hblkhd - (1 << 20))
      << "the freed buffer was handed back to the kernel";
}

// A file system that refuses O_DIRECT (ramfs does; so do tmpfs before Linux 6.6 and some FUSE
// and overlay file systems) gets the chunk written through the page cache, from its first put
// on: no failed put, nothing left in tmp/ (the refused open may have created the file).
TEST_F(ChunkStoreTest, FileSystemWithoutODirectFallsBackToBuffered) {
  ASSERT_NO_FATAL_FAILURE(MountOverDir("ramfs", nullptr));
  int probe = ::open((dir_ + "/probe").c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  ASSERT_LT(probe, 0) << "ramfs took O_DIRECT here: this test cannot see the fallback";
  ::unlink((dir_ + "/probe").c_str());
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE((*store)->direct_io());
  for (size_t size : {size_t{1 << 20}, size_t{5000}, size_t{100}}) {
    std::string data(size, static_cast<char>('a' + size % 26));
    ChunkId id = ChunkId::Of(data);
    Status s = (*store)->Put(id, data.data(), data.size(), "");
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto got = (*store)->Get(id);
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(*got == data);
  }
  EXPECT_FALSE((*store)->direct_io());
  EXPECT_TRUE(EmptyDir(dir_ + "/tmp"));
  ::umount2(dir_.c_str(), MNT_DETACH);
}

// A full disk is an ENOSPC-style error, never a crash or a partial chunk. Uses a small tmpfs
// in a private mount namespace (needs root, which CI has).
TEST_F(ChunkStoreTest, DiskFullIsNoSpaceAndLeavesNothing) {
  ASSERT_NO_FATAL_FAILURE(MountOverDir("tmpfs", "size=256k"));
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  std::string small(64 * 1024, 's');
  ASSERT_TRUE((*store)->Put(ChunkId::Of(small), small.data(), small.size(), "").ok());
  std::string big(1024 * 1024, 'b');
  ChunkId big_id = ChunkId::Of(big);
  Status s = (*store)->Put(big_id, big.data(), big.size(), "");
  EXPECT_EQ(s.code(), StatusCode::kNoSpace) << s.ToString();
  EXPECT_FALSE((*store)->Has(big_id));
  EXPECT_EQ((*store)->chunk_count(), 1u);
  // The temp file was removed: the small chunk's space is all that is used, so another small
  // chunk still fits.
  std::string small2(64 * 1024, 't');
  EXPECT_TRUE((*store)->Put(ChunkId::Of(small2), small2.data(), small2.size(), "").ok());
  ::umount2(dir_.c_str(), MNT_DETACH);
}

// With a reserve, puts of new chunks stop while that much is still free (for the metadata store
// on the same disk), with NoSpace and nothing written; a put of a chunk already stored (a
// refresh) takes no space and still succeeds.
TEST_F(ChunkStoreTest, PutsLeaveTheReserveFree) {
  ASSERT_NO_FATAL_FAILURE(MountOverDir("tmpfs", "size=4m"));
  auto store = ChunkStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  (*store)->set_reserve(1 << 20);
  std::vector<std::string> stored;
  Status refused;
  for (int i = 0; i < 100; ++i) {
    std::string data(64 * 1024, static_cast<char>(i));
    data[0] = 'x';
    Status s = (*store)->Put(ChunkId::Of(data), data.data(), data.size(), "");
    if (!s.ok()) {
      refused = s;
      break;
    }
    stored.push_back(data);
  }
  ASSERT_FALSE(refused.ok()) << "never refused";
  EXPECT_EQ(refused.code(), StatusCode::kNoSpace) << refused.ToString();
  EXPECT_NE(refused.message().find("--reserve"), std::string::npos) << refused.ToString();
  EXPECT_GT(stored.size(), 20u);
  struct statvfs vfs;
  ASSERT_EQ(::statvfs(dir_.c_str(), &vfs), 0);
  EXPECT_GE(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize, 1u << 20);
  EXPECT_TRUE(EmptyDir(dir_ + "/tmp"));
  EXPECT_EQ((*store)->chunk_count(), stored.size());
  const std::string& again = stored.front();
  EXPECT_TRUE((*store)->Put(ChunkId::Of(again), again.data(), again.size(), "").ok());
  // Without the reserve the same disk takes more.
  (*store)->set_reserve(0);
  std::string more(64 * 1024, 'm');
  EXPECT_TRUE((*store)->Put(ChunkId::Of(more), more.data(), more.size(), "").ok());
  ::umount2(dir_.c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace quorumfs
