// fsx-style randomized test of the mount's data path: random writes (crossing 1 MiB chunk
// boundaries), appends, truncates, reads, mmap reads, fallocate, fsync, page-cache drops and
// close/reopen, on a file in the mount and on a reference file in a local directory. After every
// operation the returned bytes and the file size must agree; a difference fails with the seed and
// the last 30 operations.
//
// Reproduce one run: QUORUMFS_FSX_SEED=<seed> QUORUMFS_FSX_OPS=<n> fuse_fsx_test
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kMaxOffset = 8 * kMiB;
constexpr uint64_t kMaxWrite = 300 * 1024;

int EnvInt(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

class FsxTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!FuseAvailable(&why)) return;
    cluster_ = new TestCluster();
    char tmpl[] = "/tmp/quorumfs-fsx-local-XXXXXX";
    local_ = ::mkdtemp(tmpl);
    mount_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt");
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
    delete cluster_;
    cluster_ = nullptr;
    if (!local_.empty()) {
      std::string cmd = "rm -rf '" + local_ + "'";
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", local_.c_str());
    }
  }
  void SetUp() override {
    QUORUMFS_REQUIRE_FUSE();
    ASSERT_TRUE(mount_ && mount_->ok()) << "mount failed";
  }

  static TestCluster* cluster_;
  static TestMount* mount_;
  static std::string local_;
};

TestCluster* FsxTest::cluster_ = nullptr;
TestMount* FsxTest::mount_ = nullptr;
std::string FsxTest::local_;

// One file opened twice (plain and O_APPEND) on one file system.
struct Side {
  std::string path;
  int fd = -1;
  int afd = -1;  // O_APPEND

  bool Open(bool create) {
    fd = ::open(path.c_str(), O_RDWR | (create ? O_CREAT | O_TRUNC : 0), 0644);
    afd = ::open(path.c_str(), O_WRONLY | O_APPEND);
    return fd >= 0 && afd >= 0;
  }
  // close(2)'s result: where a mount reports a failed publish.
  int Close() {
    int r1 = fd >= 0 ? ::close(fd) : 0;
    int r2 = afd >= 0 ? ::close(afd) : 0;
    fd = afd = -1;
    return r1 != 0 ? r1 : r2;
  }
  off_t Size() const {
    struct stat st;
    return ::fstat(fd, &st) == 0 ? st.st_size : -1;
  }
};

std::string Hex16(const std::string& s, size_t at) {
  std::ostringstream o;
  for (size_t i = at; i < s.size() && i < at + 16; ++i) {
    o << std::hex << (static_cast<unsigned>(static_cast<unsigned char>(s[i])) | 0x100);
  }
  std::string h = o.str(), out;
  for (size_t i = 0; i < h.size(); i += 3) out += h.substr(i + 1, 2) + " ";
  return out;
}

class Fsx {
 public:
  Fsx(uint32_t seed, std::string mount_path, std::string local_path) : seed_(seed), rng_(seed) {
    m_.path = std::move(mount_path);
    l_.path = std::move(local_path);
  }
  ~Fsx() {
    m_.Close();
    l_.Close();
  }

  // Runs `ops` operations; returns "" or a description of the first difference.
  std::string Run(int ops) {
    if (!m_.Open(true) || !l_.Open(true)) return Fail("cannot create the files");
    for (op_ = 0; op_ < ops; ++op_) {
      std::string err = Step();
      if (!err.empty()) return Fail(err);
      err = CheckSize();
      if (!err.empty()) return Fail(err);
      if (op_ % 250 == 249) {
        err = CompareAll("periodic full compare");
        if (!err.empty()) return Fail(err);
      }
    }
    std::string err = CompareAll("final compare");
    if (!err.empty()) return Fail(err);
    int rm = m_.Close(), rl = l_.Close();
    if (rm != rl)
      return Fail("close: mount " + std::to_string(rm) + ", local " + std::to_string(rl));
    if (!m_.Open(false) || !l_.Open(false)) return Fail("cannot reopen for the last compare");
    err = CompareAll("compare after the last close");
    return err.empty() ? "" : Fail(err);
  }

 private:
  std::string Fail(const std::string& what) {
    std::ostringstream o;
    o << "seed " << seed_ << ", op " << op_ << ": " << what << "\nlast operations:\n";
    for (const auto& l : log_) o << "  " << l << "\n";
    o << "(reproduce: QUORUMFS_FSX_SEED=" << seed_ << " QUORUMFS_FSX_OPS=" << op_ + 1 << ")";
    return o.str();
  }
  void Log(const std::string& s) {
    log_.push_back(std::to_string(op_) + ": " + s);
    if (log_.size() > 30) log_.pop_front();
  }
  uint64_t Rand(uint64_t n) { return n ? rng_() % n : 0; }
  // Offsets cluster around chunk boundaries half the time.
  uint64_t RandOffset(uint64_t limit) {
    if (Rand(2) == 0) {
      uint64_t boundary = (1 + Rand(limit / kMiB)) * kMiB;
      uint64_t off = boundary - std::min<uint64_t>(boundary, Rand(kMaxWrite));
      return std::min(off, limit);
    }
    return Rand(limit + 1);
  }
  std::string Data(size_t n) {
    std::string s(n, '\0');
    uint64_t x = rng_() | 1;
    for (size_t i = 0; i < n; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      s[i] = static_cast<char>(x % 255 + 1);  // never 0, so holes are visible
    }
    return s;
  }

  std::string CheckSize() {
    off_t a = m_.Size(), b = l_.Size();
    if (a != b) {
      return "size differs: mount " + std::to_string(a) + ", local " + std::to_string(b);
    }
    return "";
  }

  std::string CompareRange(const char* what, uint64_t off, size_t len) {
    std::string a(len, '\0'), b(len, '\0');
    ssize_t ra = ::pread(m_.fd, a.data(), len, static_cast<off_t>(off));
    int ea = errno;
    ssize_t rb = ::pread(l_.fd, b.data(), len, static_cast<off_t>(off));
    if (ra != rb) {
      return std::string(what) + ": pread returned " + std::to_string(ra) +
             (ra < 0 ? std::string(" (") + std::strerror(ea) + ")" : "") + " on the mount, " +
             std::to_string(rb) + " locally";
    }
    if (ra > 0 && std::memcmp(a.data(), b.data(), static_cast<size_t>(ra)) != 0) {
      size_t i = 0;
      while (a[i] == b[i]) ++i;
      return std::string(what) + ": bytes differ at file offset " + std::to_string(off + i) +
             " (chunk " + std::to_string((off + i) / kMiB) + ", +" +
             std::to_string((off + i) % kMiB) + ")\n  mount: " + Hex16(a, i) +
             "\n  local: " + Hex16(b, i);
    }
    return "";
  }

  std::string CompareAll(const char* what) {
    off_t size = l_.Size();
    for (uint64_t off = 0; off < static_cast<uint64_t>(size) + 1; off += 4 * kMiB) {
      std::string err = CompareRange(what, off, 4 * kMiB);
      if (!err.empty()) return err;
    }
    return "";
  }

  std::string Step() {
    uint64_t size = static_cast<uint64_t>(l_.Size());
    uint64_t r = Rand(100);
    std::ostringstream d;
    if (r < 30) {  // write
      uint64_t off = RandOffset(kMaxOffset);
      size_t len = 1 + Rand(kMaxWrite);
      std::string data = Data(len);
      d << "write " << off << " +" << len;
      Log(d.str());
      ssize_t a = ::pwrite(m_.fd, data.data(), len, static_cast<off_t>(off));
      ssize_t b = ::pwrite(l_.fd, data.data(), len, static_cast<off_t>(off));
      if (a != b) return "pwrite returned " + std::to_string(a) + " vs " + std::to_string(b);
    } else if (r < 38) {  // append
      size_t len = 1 + Rand(kMaxWrite / 2);
      if (size + len > kMaxOffset + kMaxWrite) return Step();
      std::string data = Data(len);
      d << "append +" << len << " (at " << size << ")";
      Log(d.str());
      ssize_t a = ::write(m_.afd, data.data(), len);
      ssize_t b = ::write(l_.afd, data.data(), len);
      if (a != b) return "append returned " + std::to_string(a) + " vs " + std::to_string(b);
    } else if (r < 48) {  // truncate (down more often than up)
      uint64_t to = Rand(3) == 0 ? RandOffset(kMaxOffset) : Rand(size + 1);
      bool by_path = Rand(4) == 0;
      d << (by_path ? "truncate " : "ftruncate ") << to << " (from " << size << ")";
      Log(d.str());
      int a = by_path ? ::truncate(m_.path.c_str(), static_cast<off_t>(to))
                      : ::ftruncate(m_.fd, static_cast<off_t>(to));
      int b = by_path ? ::truncate(l_.path.c_str(), static_cast<off_t>(to))
                      : ::ftruncate(l_.fd, static_cast<off_t>(to));
      if (a != b) return "truncate returned " + std::to_string(a) + " vs " + std::to_string(b);
    } else if (r < 73) {  // read
      uint64_t off = Rand(5) == 0 ? RandOffset(size + 10) : Rand(size + 1);
      size_t len = 1 + Rand(Rand(4) == 0 ? 2 * kMiB : kMaxWrite);
      d << "read " << off << " +" << len << " (size " << size << ")";
      Log(d.str());
      return CompareRange("read", off, len);
    } else if (r < 77) {  // mmap read
      if (size == 0) return "";
      uint64_t off = Rand(size) & ~uint64_t{4095};
      size_t len = static_cast<size_t>(std::min<uint64_t>(1 + Rand(kMiB), size - off));
      d << "mapread " << off << " +" << len;
      Log(d.str());
      void* pa = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, m_.fd, static_cast<off_t>(off));
      void* pb = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, l_.fd, static_cast<off_t>(off));
      std::string err;
      if (pa == MAP_FAILED || pb == MAP_FAILED) {
        err = std::string("mmap failed: ") + std::strerror(errno);
      } else if (std::memcmp(pa, pb, len) != 0) {
        size_t i = 0;
        while (static_cast<char*>(pa)[i] == static_cast<char*>(pb)[i]) ++i;
        err = "mapread: bytes differ at file offset " + std::to_string(off + i);
      }
      if (pa != MAP_FAILED) ::munmap(pa, len);
      if (pb != MAP_FAILED) ::munmap(pb, len);
      return err;
    } else if (r < 82) {  // close and reopen
      Log("close/reopen");
      int a = m_.Close(), b = l_.Close();
      if (a != b) return "close returned " + std::to_string(a) + " vs " + std::to_string(b);
      if (!m_.Open(false) || !l_.Open(false)) return std::string("reopen: ") + std::strerror(errno);
    } else if (r < 86) {  // fsync
      Log("fsync");
      int a = ::fsync(m_.fd), b = ::fsync(l_.fd);
      if (a != b) return "fsync returned " + std::to_string(a) + " vs " + std::to_string(b);
    } else if (r < 91) {  // drop the page cache of the file: later reads reach the daemon
      Log("drop page cache");
      ::posix_fadvise(m_.fd, 0, 0, POSIX_FADV_DONTNEED);
    } else if (r < 95) {  // fallocate, mode 0 (extends) or KEEP_SIZE
      uint64_t off = RandOffset(kMaxOffset);
      uint64_t len = 1 + Rand(kMaxWrite);
      bool keep = Rand(2) == 0;
      d << "fallocate " << (keep ? "KEEP_SIZE " : "") << off << " +" << len;
      Log(d.str());
      int mode = keep ? FALLOC_FL_KEEP_SIZE : 0;
      int a = ::fallocate(m_.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len));
      int b = ::fallocate(l_.fd, mode, static_cast<off_t>(off), static_cast<off_t>(len));
      if (a != b) return "fallocate returned " + std::to_string(a) + " vs " + std::to_string(b);
    } else {  // a hole: seek past the end and write a little
      uint64_t off = size + Rand(2 * kMiB);
      if (off > kMaxOffset) return "";
      std::string data = Data(1 + Rand(100));
      d << "hole write " << off << " +" << data.size() << " (size " << size << ")";
      Log(d.str());
      ssize_t a = ::pwrite(m_.fd, data.data(), data.size(), static_cast<off_t>(off));
      ssize_t b = ::pwrite(l_.fd, data.data(), data.size(), static_cast<off_t>(off));
      if (a != b) return "pwrite returned " + std::to_string(a) + " vs " + std::to_string(b);
    }
    return "";
  }

  uint32_t seed_;
  std::mt19937_64 rng_;
  Side m_, l_;
  int op_ = 0;
  std::deque<std::string> log_;
};

TEST_P(FsxTest, RandomOps) {
  uint32_t seed = GetParam();
  if (const char* s = std::getenv("QUORUMFS_FSX_SEED")) {
    if (static_cast<uint32_t>(std::strtoul(s, nullptr, 10)) != seed && GetParam() != 1) {
      GTEST_SKIP() << "QUORUMFS_FSX_SEED selects another seed";
    }
    seed = static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
  }
  int ops = EnvInt("QUORUMFS_FSX_OPS", 2000);
  std::string name = "fsx-" + std::to_string(seed);
  auto start = std::chrono::steady_clock::now();
  Fsx fsx(seed, mount_->path(name), local_ + "/" + name);
  std::string err = fsx.Run(ops);
  EXPECT_TRUE(err.empty()) << err;
  std::fprintf(stderr, "seed %u: %d ops in %.1f s\n", seed, ops,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

INSTANTIATE_TEST_SUITE_P(Seeds, FsxTest, ::testing::Values(1u, 2u, 3u, 4u, 5u));

}  // namespace
}  // namespace testing
}  // namespace quorumfs
