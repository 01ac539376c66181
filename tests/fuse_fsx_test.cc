// fsx-style randomized test of the mount's data path: random writes (crossing 1 MiB chunk
// boundaries), appends, truncates, reads, mmap reads, fallocate (extending, KEEP_SIZE,
// PUNCH_HOLE, ZERO_RANGE), fsync, page-cache drops, futimens (its times must show at once) and
// close/reopen, on a file in the mount and on a reference file in a local directory. After every
// operation the returned bytes and the file size must agree; a difference fails with the seed
// and the last 30 operations. (A seed replays the operations of the mix it ran with: futimens,
// added 2026-12-07, and the fallocate modes, added 2026-12-08, each changed every seed's
// sequence.)
//
// Reproduce one run: QUORUMFS_FSX_SEED=<seed> QUORUMFS_FSX_OPS=<n> fuse_fsx_test
//
// FsxUnderFailuresTest (below) runs fsx and a namespace workload on two mounts while servers
// are killed, frozen and cut off by the network, one at a time. A longer soak by hand, one
// 60 s schedule per seed (the loop stops at the first failure):
//   for s in $(seq 2 20); do QUORUMFS_CHAOS_SEED=$s QUORUMFS_CHAOS_SECONDS=60 unshare -m
//   --propagation private build/tests/fuse_fsx_test --gtest_filter='FsxUnder*' || break; done
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/admin_test_util.h"
#include "tests/test_cluster.h"
#include "tests/test_mount.h"
#include "tests/test_netns.h"

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

// A workload's slowest operation: how long, which, and when it started.
struct Slowest {
  double took = 0;
  std::string op;
  std::chrono::steady_clock::time_point start;

  // Times `step` (which returns its error, or ""); `describe` names the operation it ran.
  template <typename Step, typename Describe>
  std::string Time(Step step, Describe describe) {
    auto begin = std::chrono::steady_clock::now();
    std::string err = step();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    if (t > took) {
      took = t;
      op = describe();
      start = begin;
    }
    return err;
  }
};

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

  // Runs `ops` operations, or fewer if `stop` returns true first; returns "" or a description
  // of the first difference.
  std::string Run(int ops, const std::function<bool()>& stop = nullptr) {
    if (!m_.Open(true) || !l_.Open(true)) return Fail("cannot create the files");
    for (op_ = 0; op_ < ops && !(stop && stop()); ++op_) {
      std::string err = slowest_.Time([this] { return Step(); },
                                      [this] { return log_.empty() ? "" : log_.back(); });
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
  int ops_done() const { return op_; }
  // The longest a single operation took, in seconds, and which one it was.
  const Slowest& slowest() const { return slowest_; }

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

  // "<mount's result> (<its errno>) vs <local result>", for a call whose results differ.
  static std::string Rc(ssize_t a, int ea, ssize_t b) {
    return std::to_string(a) + (a < 0 ? std::string(" (") + std::strerror(ea) + ")" : "") +
           " on the mount vs " + std::to_string(b) + " locally";
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
      int ea = errno;
      ssize_t b = ::pwrite(l_.fd, data.data(), len, static_cast<off_t>(off));
      if (a != b) return "pwrite returned " + Rc(a, ea, b);
    } else if (r < 38) {  // append
      size_t len = 1 + Rand(kMaxWrite / 2);
      if (size + len > kMaxOffset + kMaxWrite) return Step();
      std::string data = Data(len);
      d << "append +" << len << " (at " << size << ")";
      Log(d.str());
      ssize_t a = ::write(m_.afd, data.data(), len);
      int ea = errno;
      ssize_t b = ::write(l_.afd, data.data(), len);
      if (a != b) return "append returned " + Rc(a, ea, b);
    } else if (r < 48) {  // truncate (down more often than up)
      uint64_t to = Rand(3) == 0 ? RandOffset(kMaxOffset) : Rand(size + 1);
      bool by_path = Rand(4) == 0;
      d << (by_path ? "truncate " : "ftruncate ") << to << " (from " << size << ")";
      Log(d.str());
      int a = by_path ? ::truncate(m_.path.c_str(), static_cast<off_t>(to))
                      : ::ftruncate(m_.fd, static_cast<off_t>(to));
      int ea = errno;
      int b = by_path ? ::truncate(l_.path.c_str(), static_cast<off_t>(to))
                      : ::ftruncate(l_.fd, static_cast<off_t>(to));
      if (a != b) return "truncate returned " + Rc(a, ea, b);
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
      int a = m_.Close();
      int ea = errno;
      int b = l_.Close();
      if (a != b) return "close returned " + Rc(a, ea, b);
      if (!m_.Open(false)) return std::string("reopen on the mount: ") + std::strerror(errno);
      if (!l_.Open(false)) return std::string("reopen locally: ") + std::strerror(errno);
    } else if (r < 86) {  // fsync
      Log("fsync");
      int a = ::fsync(m_.fd);
      int ea = errno;
      int b = ::fsync(l_.fd);
      if (a != b) return "fsync returned " + Rc(a, ea, b);
    } else if (r < 91) {  // drop the page cache of the file: later reads reach the daemon
      Log("drop page cache");
      ::posix_fadvise(m_.fd, 0, 0, POSIX_FADV_DONTNEED);
    } else if (r < 95) {  // fallocate: extend, reserve, punch a hole or zero a range
      static constexpr struct {
        int mode;
        const char* name;
      } kModes[] = {{0, ""},
                    {FALLOC_FL_KEEP_SIZE, "KEEP_SIZE "},
                    {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "PUNCH_HOLE|KEEP_SIZE "},
                    {FALLOC_FL_ZERO_RANGE, "ZERO_RANGE "},
                    {FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "ZERO_RANGE|KEEP_SIZE "}};
      const auto& m = kModes[Rand(5)];
      // Punches and zeroes land inside the file mostly, and now and then span whole chunks.
      uint64_t off = m.mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) && Rand(3) != 0
                         ? Rand(size + 1)
                         : RandOffset(kMaxOffset);
      uint64_t len = 1 + Rand(Rand(4) == 0 ? 3 * kMiB : kMaxWrite);
      d << "fallocate " << m.name << off << " +" << len << " (size " << size << ")";
      Log(d.str());
      // The reference first: a local file system without the mode (tmpfs has no ZERO_RANGE)
      // leaves the step out on both sides.
      int b = ::fallocate(l_.fd, m.mode, static_cast<off_t>(off), static_cast<off_t>(len));
      if (b != 0 && errno == EOPNOTSUPP && m.mode != 0) return "";
      int a = ::fallocate(m_.fd, m.mode, static_cast<off_t>(off), static_cast<off_t>(len));
      int ea = errno;
      if (a != b) return "fallocate returned " + Rc(a, ea, b);
    } else if (r < 98) {  // a hole: seek past the end and write a little
      uint64_t off = size + Rand(2 * kMiB);
      if (off > kMaxOffset) return "";
      std::string data = Data(1 + Rand(100));
      d << "hole write " << off << " +" << data.size() << " (size " << size << ")";
      Log(d.str());
      ssize_t a = ::pwrite(m_.fd, data.data(), data.size(), static_cast<off_t>(off));
      int ea = errno;
      ssize_t b = ::pwrite(l_.fd, data.data(), data.size(), static_cast<off_t>(off));
      if (a != b) return "pwrite returned " + Rc(a, ea, b);
    } else {  // set the times through the descriptor (tar, cp -p), writes perhaps pending
      struct timespec ts[2] = {
          {static_cast<time_t>(1000 + Rand(1000)), 0},
          {static_cast<time_t>(1000000 + Rand(1000000)), static_cast<long>(Rand(1000000000))}};
      d << "futimens atime " << ts[0].tv_sec << ", mtime " << ts[1].tv_sec << "." << ts[1].tv_nsec;
      Log(d.str());
      int a = ::futimens(m_.fd, ts);
      int ea = errno;
      int b = ::futimens(l_.fd, ts);
      if (a != b) return "futimens returned " + Rc(a, ea, b);
      if (a != 0) return "";
      // The times hold with the data: the size is checked after every step, the bytes by reads.
      struct stat st;
      if (::fstat(m_.fd, &st) != 0) return std::string("fstat: ") + std::strerror(errno);
      if (st.st_mtim.tv_sec != ts[1].tv_sec || st.st_mtim.tv_nsec != ts[1].tv_nsec ||
          st.st_atim.tv_sec != ts[0].tv_sec) {
        return "futimens: the mount shows mtime " + std::to_string(st.st_mtim.tv_sec) + "." +
               std::to_string(st.st_mtim.tv_nsec) + ", atime " + std::to_string(st.st_atim.tv_sec);
      }
    }
    return "";
  }

  uint32_t seed_;
  std::mt19937_64 rng_;
  Side m_, l_;
  int op_ = 0;
  std::deque<std::string> log_;
  Slowest slowest_;
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

// fsx under failures. Two mounts, each on a "host" of its own (tests/test_netns.h), run fsx on a
// file each while faults come and go, one server at a time: a server killed and restarted,
// frozen (SIGSTOP) and thawed, or cut off by the network from one mount or from both; now and
// then a mount's chunk cache is emptied (SIGUSR1) so reads reach the servers. With at most one
// server of three away at any moment, a write quorum (2 of 3) and a read quorum are always
// reachable, so no operation may fail, and every read must return the local reference file's
// bytes. Afterwards each file read through the *other* mount equals its reference, `fsck
// --repair` mends what the faults left behind (chunks on two servers of three) and a second fsck
// finds the cluster clean.
//
// QUORUMFS_CHAOS_SEED (default 11) picks the fault schedule and the two fsx seeds;
// QUORUMFS_CHAOS_SECONDS (default 40) how long faults go on; QUORUMFS_CHAOS_MOUNT_OPTS (e.g.
// "hedge_ms=0") adds -o options to both mounts. The interleaving of faults and operations
// depends on timing, so a seed replays the schedule, not the run.
class FsxUnderFailuresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QUORUMFS_REQUIRE_FUSE();
    std::string why;
    if (!NetLab::Available(&why)) GTEST_SKIP() << "fsx under failures skipped: " << why;
    lab_ = std::make_unique<NetLab>(3, 2);
    ASSERT_TRUE(lab_->ok());
    std::vector<std::string> opts;
    if (const char* extra = std::getenv("QUORUMFS_CHAOS_MOUNT_OPTS"); extra && *extra) {
      opts.push_back(extra);
    }
    StartLabCluster(*lab_, 3, 2, &cluster_, &mounts_, opts);
    for (const auto& m : mounts_) ASSERT_TRUE(m->ok());
    char tmpl[] = "/tmp/quorumfs-chaos-local-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    local_ = tmpl;
  }
  void TearDown() override {
    if (frozen_ > 0) ::kill(frozen_, SIGCONT);
    for (auto [c, s] : cut_) lab_->Heal(c, s);
    mounts_.clear();  // the mounts go first: their daemons must not wait on a dead network
    cluster_.reset();
    lab_.reset();
    if (!local_.empty()) {
      std::string cmd = "rm -rf '" + local_ + "'";
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", local_.c_str());
    }
  }
  TestMount& m(int c) { return *mounts_[c]; }
  CliResult Fsck(std::vector<std::string> args) {
    args.insert(args.begin(), {"fsck", "--cluster", cluster_->cluster_file(), "--timeout", "3"});
    return RunCli(args, cluster_->dir(), 120, lab_->client_ns(0));
  }

  std::unique_ptr<NetLab> lab_;
  std::unique_ptr<TestCluster> cluster_;
  std::vector<std::unique_ptr<TestMount>> mounts_;
  std::string local_;
  pid_t frozen_ = -1;                     // a server stopped with SIGSTOP
  std::vector<std::pair<int, int>> cut_;  // links (mount, server) cut now
};

// The whole content of `path`, or "" with *err set.
std::string ReadWhole(const std::string& path, int* err) {
  *err = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return "";
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// A namespace workload with a model, for running under failures: files and directories under
// one root that only this workload touches, so every operation's outcome is known before it runs.
// It creates files with content, replaces a file's content (O_TRUNC), renames files (to a new
// name, or over another file, across directories) and directories (to a new name elsewhere, never
// into themselves), makes hard links, unlinks, makes and removes (empty) directories, and reads
// a file back checking its bytes and link count. Every operation must succeed.
class Tree {
 public:
  Tree(uint32_t seed, std::string root) : rng_(seed), root_(std::move(root)) { dirs_.insert(""); }

  // Runs operations until `stop` returns true; "" or a description of the first failure.
  std::string Run(const std::function<bool()>& stop) {
    for (op_ = 0; !stop(); ++op_) {
      std::string err = slowest_.Time([this] { return Step(); }, [this] { return last_; });
      if (!err.empty()) return "op " + std::to_string(op_) + " (" + last_ + "): " + err;
    }
    return "";
  }
  int ops_done() const { return op_; }
  const Slowest& slowest() const { return slowest_; }

  // Compares the tree under `root` (the same tree seen through another mount) with the model:
  // the same directories, the same file names, each file's bytes and link count.
  std::string Compare(const std::string& root) const {
    std::set<std::string> dirs, files;
    std::string err = Walk(root, "", &dirs, &files);
    if (!err.empty()) return err;
    if (dirs != dirs_) return "directories differ: " + Diff(dirs, dirs_);
    std::set<std::string> want;
    for (const auto& [path, ino] : files_) want.insert(path);
    if (files != want) return "file names differ: " + Diff(files, want);
    for (const auto& [path, ino] : files_) {
      err = CheckFile(root, path);
      if (!err.empty()) return err;
    }
    return "";
  }

 private:
  static std::string Join(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
  }
  std::string Abs(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }
  static std::string Errno(const char* what) {
    return std::string(what) + ": " + std::strerror(errno);
  }
  static std::string Diff(const std::set<std::string>& got, const std::set<std::string>& want) {
    std::string out;
    for (const auto& g : got)
      if (!want.count(g)) out += " +" + g;
    for (const auto& w : want)
      if (!got.count(w)) out += " -" + w;
    return out;
  }
  uint64_t Rand(uint64_t n) { return n ? rng_() % n : 0; }
  template <typename C>
  const typename C::value_type& Pick(const C& c) {
    auto it = c.begin();
    std::advance(it, static_cast<long>(Rand(c.size())));
    return *it;
  }
  std::string NewName(const std::string& dir) {
    for (;;) {
      std::string p = Join(dir, "n" + std::to_string(Rand(1000)));
      if (!files_.count(p) && !dirs_.count(p)) return p;
    }
  }
  std::string Content() {
    std::string s(Rand(3) == 0 ? 0 : Rand(20000), '\0');
    uint64_t x = rng_() | 1;
    for (auto& ch : s) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ch = static_cast<char>(x);
    }
    return s;
  }
  int Links(uint64_t ino) const {
    int n = 0;
    for (const auto& [path, i] : files_) n += i == ino;
    return n;
  }
  static std::string WriteFile(const std::string& path, int flags, const std::string& data) {
    int fd = ::open(path.c_str(), flags | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return Errno("open");
    if (!data.empty() && ::write(fd, data.data(), data.size()) != ssize_t(data.size())) {
      std::string e = Errno("write");
      ::close(fd);
      return e;
    }
    return ::close(fd) == 0 ? "" : Errno("close");
  }
  std::string CheckFile(const std::string& root, const std::string& rel) const {
    std::string path = root + "/" + rel;
    uint64_t ino = files_.at(rel);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return Errno(("stat " + rel).c_str());
    if (static_cast<int>(st.st_nlink) != Links(ino))
      return rel + ": nlink " + std::to_string(st.st_nlink) + ", want " +
             std::to_string(Links(ino));
    int err = 0;
    std::string got = ReadWhole(path, &err);
    if (err != 0) return "read " + rel + ": " + std::strerror(err);
    if (got != content_.at(ino))
      return rel + ": " + std::to_string(got.size()) + " bytes, want " +
             std::to_string(content_.at(ino).size()) +
             (got.size() == content_.at(ino).size() ? " (bytes differ)" : "");
    return "";
  }
  static std::string Walk(const std::string& root, const std::string& rel,
                          std::set<std::string>* dirs, std::set<std::string>* files) {
    dirs->insert(rel);
    std::string path = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(path.c_str());
    if (!d) return Errno(("opendir " + path).c_str());
    std::vector<std::pair<std::string, bool>> names;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.emplace_back(n, e->d_type == DT_DIR);
    }
    int rerr = errno;
    ::closedir(d);
    if (rerr != 0) return "readdir " + path + ": " + std::strerror(rerr);
    for (const auto& [n, is_dir] : names) {
      std::string child = Join(rel, n);
      if (is_dir) {
        std::string err = Walk(root, child, dirs, files);
        if (!err.empty()) return err;
      } else {
        files->insert(child);
      }
    }
    return "";
  }
  // Renames every model path under directory `from` to the same path under `to`.
  void MoveDir(const std::string& from, const std::string& to) {
    auto moved = [&](const std::string& p) {
      return p == from || p.compare(0, from.size() + 1, from + "/") == 0;
    };
    std::set<std::string> dirs;
    for (const auto& d : dirs_) dirs.insert(moved(d) ? to + d.substr(from.size()) : d);
    dirs_ = std::move(dirs);
    std::map<std::string, uint64_t> files;
    for (const auto& [p, ino] : files_) files[moved(p) ? to + p.substr(from.size()) : p] = ino;
    files_ = std::move(files);
  }

  std::string Step() {
    uint64_t r = Rand(100);
    if (files_.empty() || (r < 20 && files_.size() < 150)) {  // create
      std::string p = NewName(Pick(dirs_));
      std::string data = Content();
      last_ = "create " + p + " (" + std::to_string(data.size()) + " bytes)";
      std::string err = WriteFile(Abs(p), O_CREAT | O_EXCL, data);
      files_[p] = next_ino_;
      content_[next_ino_++] = data;
      return err;
    }
    if (r < 30) {  // replace a file's content
      const auto& [p, ino] = Pick(files_);
      std::string data = Content();
      last_ = "rewrite " + p + " (" + std::to_string(data.size()) + " bytes)";
      content_[ino] = data;
      return WriteFile(Abs(p), O_TRUNC, data);
    }
    if (r < 45) {  // rename a file to a new name or over another file
      std::string from = Pick(files_).first;
      std::string to = Rand(3) == 0 ? Pick(files_).first : NewName(Pick(dirs_));
      if (files_.count(to) && files_[to] == files_[from]) return "";  // the same file: a no-op
      last_ = "rename " + from + " -> " + to + (files_.count(to) ? " (replacing it)" : "");
      uint64_t ino = files_[from];
      files_.erase(from);
      files_[to] = ino;
      return ::rename(Abs(from).c_str(), Abs(to).c_str()) == 0 ? "" : Errno("rename");
    }
    if (r < 52) {  // hard link
      std::string from = Pick(files_).first;
      std::string to = NewName(Pick(dirs_));
      last_ = "link " + from + " -> " + to;
      files_[to] = files_[from];
      return ::link(Abs(from).c_str(), Abs(to).c_str()) == 0 ? "" : Errno("link");
    }
    if (r < 65) {  // unlink
      std::string p = Pick(files_).first;
      last_ = "unlink " + p;
      uint64_t ino = files_[p];
      files_.erase(p);
      if (Links(ino) == 0) content_.erase(ino);
      return ::unlink(Abs(p).c_str()) == 0 ? "" : Errno("unlink");
    }
    if (r < 72 && dirs_.size() < 25) {  // mkdir
      std::string p = NewName(Pick(dirs_));
      last_ = "mkdir " + p;
      dirs_.insert(p);
      return ::mkdir(Abs(p).c_str(), 0755) == 0 ? "" : Errno("mkdir");
    }
    if (r < 76) {  // rmdir of an empty directory
      std::vector<std::string> empty;
      for (const auto& d : dirs_) {
        if (d.empty()) continue;
        bool has = false;
        for (const auto& [p, ino] : files_) has = has || p.compare(0, d.size() + 1, d + "/") == 0;
        for (const auto& e : dirs_) has = has || e.compare(0, d.size() + 1, d + "/") == 0;
        if (!has) empty.push_back(d);
      }
      if (empty.empty()) return "";
      std::string p = Pick(empty);
      last_ = "rmdir " + p;
      dirs_.erase(p);
      return ::rmdir(Abs(p).c_str()) == 0 ? "" : Errno("rmdir");
    }
    if (r < 82 && dirs_.size() > 1) {  // move a directory to a new name, never into itself
      std::string from;
      while (from.empty()) from = Pick(dirs_);
      std::vector<std::string> parents;
      for (const auto& d : dirs_) {
        if (d != from && d.compare(0, from.size() + 1, from + "/") != 0) parents.push_back(d);
      }
      std::string to = NewName(Pick(parents));
      last_ = "rename dir " + from + " -> " + to;
      MoveDir(from, to);
      return ::rename(Abs(from).c_str(), Abs(to).c_str()) == 0 ? "" : Errno("rename");
    }
    std::string p = Pick(files_).first;  // read a file back
    last_ = "check " + p;
    return CheckFile(root_, p);
  }

  std::mt19937_64 rng_;
  std::string root_;
  std::set<std::string> dirs_;               // relative paths; "" is the root
  std::map<std::string, uint64_t> files_;    // relative path -> file id
  std::map<uint64_t, std::string> content_;  // file id -> bytes
  uint64_t next_ino_ = 1;
  int op_ = 0;
  std::string last_;
  Slowest slowest_;
};

TEST_F(FsxUnderFailuresTest, NoOperationFailsAndNothingIsLostWithOneServerAway) {
  // Seed 11 failed within its first 10 s before operations waited for a quorum (README,
  // "An operation waits for a quorum for op_timeout").
  const uint32_t seed = static_cast<uint32_t>(EnvInt("QUORUMFS_CHAOS_SEED", 11));
  const double seconds = EnvInt("QUORUMFS_CHAOS_SECONDS", 40);
  std::atomic<bool> stop{false};
  std::string result[2], tree_result[2];
  std::unique_ptr<Fsx> fsx[2];
  std::unique_ptr<Tree> tree[2];  // beside each fsx, a namespace workload in a directory of its own
  for (int c = 0; c < 2; ++c) {
    std::string dir = "tree" + std::to_string(c);
    ASSERT_EQ(::mkdir(m(c).path(dir).c_str(), 0755), 0) << std::strerror(errno);
    tree[c] = std::make_unique<Tree>(seed * 2 + 100 + static_cast<uint32_t>(c), m(c).path(dir));
    std::string name = "fsx" + std::to_string(c);
    fsx[c] = std::make_unique<Fsx>(seed * 2 + static_cast<uint32_t>(c), m(c).path(name),
                                   local_ + "/" + name);
  }
  std::vector<std::thread> workers;
  // However this test ends, the workers stop and are joined before what they use goes away.
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& workers;
    ~Joiner() {
      stop = true;
      for (auto& w : workers) {
        if (w.joinable()) w.join();
      }
    }
  } joiner{stop, workers};
  for (int c = 0; c < 2; ++c) {
    workers.emplace_back([&, c] {
      result[c] = fsx[c]->Run(1 << 30, [&] { return stop.load(); });
      if (!result[c].empty()) stop = true;
    });
    workers.emplace_back([&, c] {
      tree_result[c] = tree[c]->Run([&] { return stop.load(); });
      if (!tree_result[c].empty()) stop = true;
    });
  }

  // One fault at a time, each held 0.5-3 s, with 0.3-1.3 s of calm between. A fault the test
  // could not make or undo stops the run (TearDown undoes what is left).
  std::mt19937 rng(seed);
  std::vector<std::string> faults;
  auto start = std::chrono::steady_clock::now();
  std::string started_at;  // wall clock (UTC), to line the schedule up with the mounts' logs
  {
    timeval tv;
    ::gettimeofday(&tv, nullptr);
    tm t;
    ::gmtime_r(&tv.tv_sec, &t);
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d UTC", t.tm_hour, t.tm_min, t.tm_sec,
                  static_cast<int>(tv.tv_usec / 1000));
    started_at = buf;
  }
  auto now = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto sleep = [](double s) {
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(s * 1000)));
  };
  auto cut = [&](int c, int s) {
    cut_.emplace_back(c, s);
    return lab_->Cut(c, s);
  };
  auto heal_all = [&] {
    bool ok = true;
    for (auto [c, s] : cut_) ok = lab_->Heal(c, s) && ok;
    cut_.clear();
    return ok;
  };
  while (now() < seconds && !stop) {
    int s = static_cast<int>(rng() % 3);
    int kind = static_cast<int>(rng() % 5);
    double hold = 0.5 + (rng() % 2500) / 1000.0;
    std::ostringstream what;
    what << std::fixed << std::setprecision(1) << now() << " s: server " << s << " ";
    bool made = true;
    switch (kind) {
      case 0:
        cluster_->Kill(s);
        what << "killed";
        break;
      case 1:
        frozen_ = cluster_->pid(s);
        made = frozen_ > 0 && ::kill(frozen_, SIGSTOP) == 0;
        what << "frozen";
        break;
      case 2:
      case 3:
        made = cut(kind - 2, s);
        what << "cut off from mount " << kind - 2;
        break;
      default:
        made = cut(0, s) && cut(1, s);
        what << "cut off from both mounts";
    }
    what << " for " << hold << " s";
    if (rng() % 3 == 0) {
      int c = static_cast<int>(rng() % 2);
      ::kill(m(c).pid(), SIGUSR1);
      what << "; mount " << c << "'s chunk cache emptied";
    }
    faults.push_back(what.str());
    EXPECT_TRUE(made) << "could not make the fault: " << what.str();
    if (!made) break;
    sleep(hold);
    bool undone = true;
    switch (kind) {
      case 0:
        cluster_->Start(s);  // a failure to start is a fatal failure of this test
        undone = !HasFatalFailure();
        break;
      case 1:
        undone = ::kill(frozen_, SIGCONT) == 0;
        frozen_ = -1;
        break;
      default:
        undone = heal_all();
    }
    EXPECT_TRUE(undone) << "could not undo the fault: " << what.str();
    if (!undone) break;
    sleep(0.3 + (rng() % 1000) / 1000.0);
  }
  stop = true;
  for (auto& w : workers) w.join();
  if (HasFatalFailure()) return;
  std::string schedule;
  for (const auto& f : faults) schedule += "  " + f + "\n";
  // Each workload's count and slowest operation (when it started, on the fault schedule's
  // clock), its result, and the bounds: op_timeout (3 s) plus one call timeout and one connect
  // timeout, with room for this machine.
  auto report = [&](int c, const char* what, int ops, int min_ops, const Slowest& slowest,
                    const std::string& result) {
    std::fprintf(stderr, "mount %d: %d %s operations, the slowest %.2f s (at %.1f s: %s)\n", c, ops,
                 what, slowest.took, std::chrono::duration<double>(slowest.start - start).count(),
                 slowest.op.c_str());
    EXPECT_TRUE(result.empty()) << "mount " << c << ", chaos seed " << seed << ": " << result
                                << "\nfaults:\n"
                                << schedule;
    EXPECT_GT(ops, min_ops) << "mount " << c;
    EXPECT_LT(slowest.took, 10) << "mount " << c << ": " << slowest.op;
  };
  for (int c = 0; c < 2; ++c) {
    report(c, "fsx", fsx[c]->ops_done(), 100, fsx[c]->slowest(), result[c]);
    report(c, "namespace", tree[c]->ops_done(), 50, tree[c]->slowest(), tree_result[c]);
  }
  std::fprintf(stderr, "%zu faults (chaos seed %u, from %s):\n%s", faults.size(), seed,
               started_at.c_str(), schedule.c_str());
  EXPECT_GE(faults.size(), 5u);
  fsx[0].reset();  // closes the files
  fsx[1].reset();

  // What each mount wrote, read through the other one, then fsck.
  auto cross_check = [&](const std::string& when) {
    for (int c = 0; c < 2; ++c) {
      std::string name = "fsx" + std::to_string(c);
      int err = 0, lerr = 0;
      std::string got = ReadWhole(m(1 - c).path(name), &err);
      std::string want = ReadWhole(local_ + "/" + name, &lerr);
      ASSERT_EQ(lerr, 0);
      EXPECT_EQ(err, 0) << name << " through mount " << 1 - c << " " << when << ": "
                        << std::strerror(err);
      EXPECT_EQ(got.size(), want.size()) << name << " through mount " << 1 - c << " " << when;
      EXPECT_TRUE(got == want) << name << " through mount " << 1 - c << " " << when
                               << ": the bytes differ";
      std::string diff = tree[c]->Compare(m(1 - c).path("tree" + std::to_string(c)));
      EXPECT_EQ(diff, "") << "tree" << c << " through mount " << 1 - c << " " << when;
    }
  };
  cross_check("after the faults");
  CliResult repair = Fsck({"--repair", "--recount-quiet", "2"});  // nothing runs meanwhile
  EXPECT_TRUE(repair.code == 0 || repair.code == 1) << repair.All();
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
  for (int c = 0; c < 2; ++c) ::kill(m(c).pid(), SIGUSR1);
  sleep(0.2);
  cross_check("after fsck");
  if (HasFailure()) {
    for (int c = 0; c < 2; ++c) {
      std::fprintf(stderr, "mount %d's log:\n%s\n", c, m(c).Log().c_str());
    }
  }
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
