// POSIX semantics of the mount: every test runs the same calls on a directory in the mount and
// on a local temp directory (ext4, tmpfs, ...) and asserts both produce the same trace of
// results (return values, errno, and the stat fields that must match: type, mode, nlink, size,
// uid, gid; timestamps only as relations).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace testing {
namespace {

std::string ErrName(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "errno" + std::to_string(e);
}

uint64_t Fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>('a' + rng() % 26);  // never a zero byte
  return s;
}

int64_t Ns(const struct timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

void Pause() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

// Records what a sequence of calls returned, for comparison between two file systems.
class Ops {
 public:
  explicit Ops(std::string root) : root_(std::move(root)) {}

  std::string P(const std::string& rel) const { return root_ + "/" + rel; }
  const std::string& root() const { return root_; }
  const std::vector<std::string>& lines() const { return lines_; }

  // A call returning a number, or -1 with errno.
  long Rec(const char* what, long rv) {
    int e = errno;
    lines_.push_back(std::string(what) + " = " +
                     (rv < 0 ? "-1 " + ErrName(e) : std::to_string(rv)));
    errno = e;
    return rv;
  }
  // A call returning a descriptor: recorded as ok or the errno.
  int RecFd(const char* what, int fd) {
    int e = errno;
    lines_.push_back(std::string(what) + " = " + (fd < 0 ? "-1 " + ErrName(e) : "fd"));
    if (fd >= 0) fds_.push_back(fd);
    errno = e;
    return fd;
  }
  void Note(const std::string& what, const std::string& value) {
    lines_.push_back(what + " : " + value);
  }
  void Note(const std::string& what, bool value) { Note(what, std::string(value ? "yes" : "no")); }
  void Data(const std::string& what, const std::string& bytes) {
    if (bytes.size() <= 64) {
      std::string shown;
      for (char c : bytes) shown += c == 0 ? std::string("\\0") : std::string(1, c);
      Note(what, "\"" + shown + "\"");
    } else {
      Note(what, std::to_string(bytes.size()) + " bytes, fnv " + std::to_string(Fnv(bytes)));
    }
  }

  static std::string Describe(const struct stat& st) {
    std::ostringstream o;
    const char* type = S_ISREG(st.st_mode)    ? "reg"
                       : S_ISDIR(st.st_mode)  ? "dir"
                       : S_ISLNK(st.st_mode)  ? "lnk"
                       : S_ISFIFO(st.st_mode) ? "fifo"
                       : S_ISCHR(st.st_mode)  ? "chr"
                       : S_ISBLK(st.st_mode)  ? "blk"
                       : S_ISSOCK(st.st_mode) ? "sock"
                                              : "?";
    o << "type=" << type << " mode=0" << std::oct << (st.st_mode & 07777) << std::dec
      << " nlink=" << st.st_nlink << " uid=" << st.st_uid << " gid=" << st.st_gid;
    if (!S_ISDIR(st.st_mode)) o << " size=" << st.st_size;  // directory sizes differ by design
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      o << " rdev=" << major(st.st_rdev) << ":" << minor(st.st_rdev);
    }
    return o.str();
  }

  // lstat (or stat with follow) of a path, recorded.
  struct stat Stat(const std::string& rel, bool follow = false) {
    struct stat st;
    std::memset(&st, 0, sizeof(st));
    int rc = follow ? ::stat(P(rel).c_str(), &st) : ::lstat(P(rel).c_str(), &st);
    std::string what = std::string(follow ? "stat(" : "lstat(") + rel + ")";
    if (rc != 0) {
      Note(what, "-1 " + ErrName(errno));
      std::memset(&st, 0, sizeof(st));
    } else {
      Note(what, Describe(st));
    }
    return st;
  }
  struct stat Fstat(int fd, const std::string& label) {
    struct stat st;
    std::memset(&st, 0, sizeof(st));
    if (::fstat(fd, &st) != 0) {
      Note("fstat(" + label + ")", "-1 " + ErrName(errno));
    } else {
      Note("fstat(" + label + ")", Describe(st));
    }
    return st;
  }
  // Unrecorded stat for timestamp relations.
  struct stat Quiet(const std::string& rel) {
    struct stat st;
    std::memset(&st, 0, sizeof(st));
    ::lstat(P(rel).c_str(), &st);
    return st;
  }

  std::string ReadFd(int fd) {
    std::string out;
    char buf[1 << 16];
    off_t off = 0;
    while (true) {
      ssize_t n = ::pread(fd, buf, sizeof(buf), off);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      off += n;
    }
    return out;
  }
  // Records the whole content of a file (or the errno of opening it).
  void Content(const std::string& rel) {
    int fd = ::open(P(rel).c_str(), O_RDONLY);
    if (fd < 0) {
      Note("content(" + rel + ")", "-1 " + ErrName(errno));
      return;
    }
    Data("content(" + rel + ")", ReadFd(fd));
    ::close(fd);
  }
  bool WriteFile(const std::string& rel, const std::string& data) {
    int fd = ::open(P(rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    return ::close(fd) == 0 && ok;
  }

  void CloseAll() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }
  ~Ops() { CloseAll(); }

 private:
  std::string root_;
  std::vector<std::string> lines_;
  std::vector<int> fds_;
};

// Records `expr` (a call returning -1/errno on failure) with its source text.
#define R(expr) o.Rec(#expr, (errno = 0, static_cast<long>(expr)))
// Records an open()-like call; the descriptor is closed when the Ops goes away.
#define F(expr) o.RecFd(#expr, (errno = 0, static_cast<int>(expr)))
#define PATH(rel) o.P(rel).c_str()

class PosixTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!FuseAvailable(&why)) return;
    cluster_ = new TestCluster();
    char tmpl[] = "/tmp/quorumfs-posix-local-XXXXXX";
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
      if (std::system(cmd.c_str()) != 0)
        std::fprintf(stderr, "could not remove %s\n", local_.c_str());
    }
  }
  void SetUp() override {
    QUORUMFS_REQUIRE_FUSE();
    ASSERT_TRUE(mount_ && mount_->ok()) << "mount failed";
  }

  // Runs `body` on a fresh directory in the mount and one in the local file system and expects
  // equal traces.
  void Compare(const std::function<void(Ops&)>& body) {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string mdir = mount_->path(name), ldir = local_ + "/" + name;
    ASSERT_EQ(::mkdir(mdir.c_str(), 0755), 0) << mdir << ": " << std::strerror(errno);
    ASSERT_EQ(::mkdir(ldir.c_str(), 0755), 0) << ldir << ": " << std::strerror(errno);
    Ops local(ldir), mounted(mdir);
    body(local);
    local.CloseAll();
    body(mounted);
    mounted.CloseAll();
    const auto& a = local.lines();
    const auto& b = mounted.lines();
    size_t n = std::max(a.size(), b.size());
    for (size_t i = 0; i < n; ++i) {
      std::string la = i < a.size() ? a[i] : "<missing>";
      std::string lb = i < b.size() ? b[i] : "<missing>";
      EXPECT_EQ(la, lb) << "step " << i << " differs (expected: local fs, actual: quorumfs)";
    }
    if (::testing::Test::HasFailure()) {
      std::ostringstream all;
      for (size_t i = 0; i < n; ++i) {
        all << (i < a.size() && i < b.size() && a[i] == b[i] ? "   " : "!! ") << i << "  "
            << (i < a.size() ? a[i] : "<missing>") << "\n";
        if (!(i < a.size() && i < b.size() && a[i] == b[i])) {
          all << "       quorumfs: " << (i < b.size() ? b[i] : "<missing>") << "\n";
        }
      }
      ADD_FAILURE() << "full trace (local fs; quorumfs where it differs):\n" << all.str();
    }
  }

  static TestCluster* cluster_;
  static TestMount* mount_;
  static std::string local_;
};

TestCluster* PosixTest::cluster_ = nullptr;
TestMount* PosixTest::mount_ = nullptr;
std::string PosixTest::local_;

TEST_F(PosixTest, CreateAndOpenFlags) {
  Compare([](Ops& o) {
    int fd = F(::open(PATH("f"), O_CREAT | O_EXCL | O_WRONLY, 0640));
    o.Stat("f");
    R(::write(fd, "hello", 5));
    R(::close(fd));
    F(::open(PATH("f"), O_CREAT | O_EXCL | O_WRONLY, 0640));
    fd = F(::open(PATH("f"), O_CREAT | O_WRONLY, 0600));  // exists: opens, mode unchanged
    R(::close(fd));
    o.Stat("f");
    o.Content("f");
    // O_TRUNC
    fd = F(::open(PATH("f"), O_WRONLY | O_TRUNC));
    o.Fstat(fd, "f after O_TRUNC");
    R(::close(fd));
    o.Stat("f");
    // O_APPEND: every write goes to the end, whatever the offset.
    fd = F(::open(PATH("f"), O_WRONLY | O_APPEND));
    R(::write(fd, "abc", 3));
    R(::lseek(fd, 0, SEEK_SET));
    R(::write(fd, "def", 3));
    R(::pwrite(fd, "gh", 2, 0));  // Linux: pwrite on O_APPEND appends too
    R(::close(fd));
    o.Content("f");
    // O_RDWR|O_APPEND reads from the offset, writes at the end.
    fd = F(::open(PATH("f"), O_RDWR | O_APPEND));
    char buf[16] = {};
    R(::read(fd, buf, 3));
    o.Data("read", std::string(buf, 3));
    R(::write(fd, "XY", 2));
    R(::lseek(fd, 0, SEEK_CUR));
    R(::close(fd));
    o.Content("f");
    // Errors.
    F(::open(PATH("missing"), O_RDONLY));
    F(::open(PATH("missing/x"), O_RDONLY | O_CREAT, 0644));
    F(::open(PATH("f/x"), O_RDONLY | O_CREAT, 0644));
    F(::open(PATH("f"), O_RDONLY | O_DIRECTORY));
    R(::mkdir(PATH("d"), 0755));
    F(::open(PATH("d"), O_WRONLY));
    F(::open(PATH("d"), O_RDWR | O_CREAT, 0644));
    fd = F(::open(PATH("f"), O_WRONLY));
    R(::read(fd, buf, 1));
    R(::close(fd));
    fd = F(::open(PATH("f"), O_RDONLY));
    R(::write(fd, "z", 1));
    R(::close(fd));
    // O_EXCL on a dangling symlink fails; without O_EXCL it creates the target.
    R(::symlink("target", PATH("dangling")));
    F(::open(PATH("dangling"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    fd = F(::open(PATH("dangling"), O_CREAT | O_WRONLY, 0644));
    R(::close(fd));
    o.Stat("target");
    // creat() with mode bits under the umask.
    mode_t old = ::umask(027);
    fd = F(::creat(PATH("masked"), 0777));
    R(::close(fd));
    ::umask(old);
    o.Stat("masked");
    // Empty file: read returns 0.
    fd = F(::open(PATH("empty"), O_CREAT | O_RDWR, 0644));
    R(::read(fd, buf, sizeof(buf)));
    R(::close(fd));
  });
}

TEST_F(PosixTest, ReadWrite) {
  Compare([](Ops& o) {
    int fd = F(::open(PATH("f"), O_CREAT | O_RDWR, 0644));
    R(::write(fd, "0123456789", 10));
    char buf[64] = {};
    R(::read(fd, buf, 10));  // at EOF
    R(::lseek(fd, 2, SEEK_SET));
    R(::read(fd, buf, 4));
    o.Data("read(2,4)", std::string(buf, 4));
    R(::pwrite(fd, "ab", 2, 4));
    R(::pread(fd, buf, 64, 0));
    o.Data("pread(0,64)", std::string(buf, 10));
    R(::pread(fd, buf, 5, 8));  // short read at EOF
    R(::pread(fd, buf, 5, 10));
    R(::pread(fd, buf, 5, 1000));
    R(::lseek(fd, 0, SEEK_CUR));  // pread/pwrite leave the offset alone
    R(::lseek(fd, 0, SEEK_END));
    R(::lseek(fd, -3, SEEK_END));
    R(::lseek(fd, -100, SEEK_SET));
    o.Fstat(fd, "f");
    R(::close(fd));
    o.Content("f");
    // A large write across several 1 MiB chunk boundaries, then overwrites straddling them.
    std::string big = Pattern(3 * 1024 * 1024 + 12345, 1);
    fd = F(::open(PATH("big"), O_CREAT | O_RDWR, 0644));
    R(::write(fd, big.data(), big.size()));
    std::string patch = Pattern(100000, 2);
    R(::pwrite(fd, patch.data(), patch.size(), 1024 * 1024 - 50000));
    big.replace(1024 * 1024 - 50000, patch.size(), patch);
    R(::pwrite(fd, "Z", 1, 2 * 1024 * 1024 - 1));
    big[2 * 1024 * 1024 - 1] = 'Z';
    o.Note("read back before close", o.ReadFd(fd) == big);
    o.Fstat(fd, "big");
    R(::close(fd));
    o.Content("big");
    fd = F(::open(PATH("big"), O_RDONLY));
    std::string mid(4096, '\0');
    R(::pread(fd, mid.data(), mid.size(), 1024 * 1024 - 2048));
    o.Data("pread across a chunk boundary", mid);
    R(::close(fd));
    // Reopen, overwrite one byte in the middle (read-modify-write of a published chunk).
    fd = F(::open(PATH("big"), O_WRONLY));
    R(::pwrite(fd, "Q", 1, 1500000));
    R(::close(fd));
    o.Content("big");
    o.Stat("big");
    // mtime and ctime change on write (after close at the latest).
    struct stat before = o.Quiet("big");
    Pause();
    fd = F(::open(PATH("big"), O_WRONLY));
    R(::pwrite(fd, "R", 1, 10));
    struct stat during = o.Quiet("big");
    o.Note("mtime changed by a write, before close", Ns(during.st_mtim) != Ns(before.st_mtim));
    R(::close(fd));
    struct stat after = o.Quiet("big");
    o.Note("mtime changed by a write", Ns(after.st_mtim) > Ns(before.st_mtim));
    o.Note("ctime changed by a write", Ns(after.st_ctim) > Ns(before.st_ctim));
  });
}

TEST_F(PosixTest, SparseFilesAndHoles) {
  Compare([](Ops& o) {
    int fd = F(::open(PATH("s"), O_CREAT | O_RDWR, 0644));
    R(::pwrite(fd, "end", 3, 5 * 1024 * 1024 + 7));
    o.Fstat(fd, "s");
    std::string buf(8192, 'x');
    R(::pread(fd, buf.data(), buf.size(), 0));
    o.Data("hole at 0", buf);
    R(::pread(fd, buf.data(), buf.size(), 5 * 1024 * 1024));
    o.Data("tail", buf.substr(0, 10));
    R(::close(fd));
    o.Stat("s");
    o.Content("s");
    // Write into the middle of the hole after reopening.
    fd = F(::open(PATH("s"), O_RDWR));
    R(::pwrite(fd, "mid", 3, 2 * 1024 * 1024 + 100));
    R(::close(fd));
    o.Content("s");
    // lseek past the end and write: the gap reads as zeros.
    fd = F(::open(PATH("g"), O_CREAT | O_RDWR, 0644));
    R(::write(fd, "a", 1));
    R(::lseek(fd, 300000, SEEK_CUR));
    R(::write(fd, "b", 1));
    R(::close(fd));
    o.Content("g");
    o.Stat("g");
  });
}

TEST_F(PosixTest, Truncate) {
  Compare([](Ops& o) {
    std::string data = Pattern(2 * 1024 * 1024 + 500, 3);
    o.WriteFile("t", data);
    R(::truncate(PATH("t"), 1024 * 1024 + 10));
    o.Stat("t");
    o.Content("t");
    R(::truncate(PATH("t"), 3 * 1024 * 1024));  // up: zeros after the old end
    o.Stat("t");
    o.Content("t");
    R(::truncate(PATH("t"), 0));
    o.Stat("t");
    R(::truncate(PATH("t"), 100));
    o.Content("t");
    // Down then up in one open: the cut bytes must not come back.
    o.WriteFile("u", data);
    int fd = F(::open(PATH("u"), O_RDWR));
    R(::ftruncate(fd, 10));
    R(::ftruncate(fd, 5000));
    std::string buf(5000, 'x');
    R(::pread(fd, buf.data(), buf.size(), 0));
    o.Data("after down+up", buf);
    R(::close(fd));
    o.Content("u");
    // ftruncate with unflushed writes, then write beyond the new end.
    fd = F(::open(PATH("v"), O_CREAT | O_RDWR, 0644));
    R(::write(fd, data.data(), 300000));
    R(::ftruncate(fd, 1000));
    R(::pwrite(fd, "tail", 4, 1024 * 1024 + 5));
    o.Fstat(fd, "v");
    o.Note(
        "v before close",
        o.ReadFd(fd) == data.substr(0, 1000) + std::string(1024 * 1024 + 5 - 1000, '\0') + "tail");
    R(::close(fd));
    o.Content("v");
    // Truncating the middle of a chunk that is dirty in another descriptor of the same file.
    fd = F(::open(PATH("w"), O_CREAT | O_RDWR, 0644));
    R(::write(fd, data.data(), 2 * 1024 * 1024));
    R(::truncate(PATH("w"), 1500000));
    o.Fstat(fd, "w");
    R(::close(fd));
    o.Content("w");
    // mtime changes on truncate.
    struct stat before = o.Quiet("w");
    Pause();
    R(::truncate(PATH("w"), 10));
    struct stat after = o.Quiet("w");
    o.Note("mtime changed by truncate", Ns(after.st_mtim) > Ns(before.st_mtim));
    o.Note("ctime changed by truncate", Ns(after.st_ctim) > Ns(before.st_ctim));
    // Errors.
    R(::mkdir(PATH("d"), 0755));
    R(::truncate(PATH("d"), 0));
    R(::truncate(PATH("missing"), 0));
    R(::truncate(PATH("t"), -1));
    fd = F(::open(PATH("t"), O_RDONLY));
    R(::ftruncate(fd, 0));
    R(::close(fd));
    o.Stat("t");
  });
}

TEST_F(PosixTest, MkdirRmdir) {
  Compare([](Ops& o) {
    R(::mkdir(PATH("d"), 0750));
    o.Stat("d");
    R(::mkdir(PATH("d"), 0755));
    R(::mkdir(PATH("d/sub1"), 0755));
    R(::mkdir(PATH("d/sub2"), 0755));
    o.Stat("d");
    o.Stat(".");
    R(::rmdir(PATH("d")));
    o.WriteFile("d/sub1/file", "x");
    R(::rmdir(PATH("d/sub1")));
    R(::rmdir(PATH("d/sub1/file")));
    R(::rmdir(PATH("d/missing")));
    R(::unlink(PATH("d/sub2")));
    R(::mkdir(PATH("d/sub1/file/x"), 0755));
    R(::mkdir(PATH("missing/x"), 0755));
    R(::rmdir(PATH("d/sub2/.")));
    R(::rmdir(PATH("d/sub2")));
    o.Stat("d");
    R(::unlink(PATH("d/sub1/file")));
    R(::rmdir(PATH("d/sub1")));
    R(::rmdir(PATH("d")));
    o.Stat("d");
    // A directory can be created again under the same name, and is empty.
    R(::mkdir(PATH("d"), 0700));
    o.Stat("d");
    DIR* dir = ::opendir(PATH("d"));
    std::set<std::string> names;
    while (dir) {
      dirent* e = ::readdir(dir);
      if (!e) break;
      names.insert(e->d_name);
    }
    if (dir) ::closedir(dir);
    std::string all;
    for (const auto& n : names) all += n + " ";
    o.Note("readdir(d)", all);
    // Parent mtime changes on mkdir/rmdir.
    struct stat before = o.Quiet(".");
    Pause();
    R(::mkdir(PATH("e"), 0755));
    struct stat mid = o.Quiet(".");
    Pause();
    R(::rmdir(PATH("e")));
    struct stat after = o.Quiet(".");
    o.Note("parent mtime changed by mkdir", Ns(mid.st_mtim) > Ns(before.st_mtim));
    o.Note("parent mtime changed by rmdir", Ns(after.st_mtim) > Ns(mid.st_mtim));
  });
}

TEST_F(PosixTest, Unlink) {
  Compare([](Ops& o) {
    o.WriteFile("f", "data");
    R(::unlink(PATH("f")));
    o.Stat("f");
    R(::unlink(PATH("f")));
    R(::unlink(PATH("f/x")));
    o.WriteFile("g", "data");
    R(::unlink(PATH("g/x")));
    R(::mkdir(PATH("d"), 0755));
    R(::unlink(PATH("d")));
    // Re-create under the same name: a new, empty file.
    int fd = F(::open(PATH("f"), O_CREAT | O_EXCL | O_RDWR, 0644));
    o.Fstat(fd, "new f");
    R(::close(fd));
    o.Content("f");
    struct stat before = o.Quiet(".");
    Pause();
    R(::unlink(PATH("f")));
    struct stat after = o.Quiet(".");
    o.Note("parent mtime changed by unlink", Ns(after.st_mtim) > Ns(before.st_mtim));
  });
}

TEST_F(PosixTest, Rename) {
  Compare([](Ops& o) {
    o.WriteFile("a", "A");
    o.WriteFile("b", "BB");
    R(::rename(PATH("a"), PATH("b")));  // over a file
    o.Stat("a");
    o.Stat("b");
    o.Content("b");
    R(::rename(PATH("b"), PATH("b")));  // same name: nothing happens
    o.Content("b");
    R(::rename(PATH("missing"), PATH("x")));
    // Directories.
    R(::mkdir(PATH("d1"), 0755));
    R(::mkdir(PATH("d2"), 0755));
    o.WriteFile("d1/f", "in d1");
    R(::rename(PATH("d1"), PATH("d2")));  // over an empty directory
    o.Stat("d1");
    o.Stat("d2");
    o.Content("d2/f");
    R(::mkdir(PATH("d3"), 0755));
    R(::rename(PATH("d3"), PATH("d2")));      // over a non-empty directory
    R(::rename(PATH("b"), PATH("d3")));       // file over directory
    R(::rename(PATH("d3"), PATH("b")));       // directory over file
    R(::rename(PATH("d2"), PATH("d2/sub")));  // into its own subtree
    R(::mkdir(PATH("d2/sub"), 0755));
    R(::rename(PATH("d2"), PATH("d2/sub/deeper")));
    R(::rename(PATH("d2/sub/.."), PATH("x")));
    R(::rename(PATH("b"), PATH("nodir/b")));
    R(::rename(PATH("b"), PATH("b/c")));
    // Moving a directory between parents updates both parents' link counts.
    R(::rename(PATH("d2/sub"), PATH("d3/sub")));
    o.Stat("d2");
    o.Stat("d3");
    o.Stat("d3/sub");
    // Rename of a file across directories keeps its inode and content.
    struct stat before = o.Quiet("b");
    R(::rename(PATH("b"), PATH("d3/b")));
    struct stat after = o.Quiet("d3/b");
    o.Note("same inode after rename", before.st_ino == after.st_ino);
    o.Content("d3/b");
    // renameat2 flags.
    o.WriteFile("x", "X");
    o.WriteFile("y", "YY");
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("x"), AT_FDCWD, PATH("y"), RENAME_NOREPLACE));
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("x"), AT_FDCWD, PATH("z"), RENAME_NOREPLACE));
    o.Content("x");
    o.Content("z");
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("z"), AT_FDCWD, PATH("y"), RENAME_EXCHANGE));
    o.Content("z");
    o.Content("y");
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("z"), AT_FDCWD, PATH("nothere"), RENAME_EXCHANGE));
    // Exchange a file with a directory across parents.
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("z"), AT_FDCWD, PATH("d3/sub"), RENAME_EXCHANGE));
    o.Stat("z");
    o.Stat("d3/sub");
    o.Stat("d3");
    o.Stat(".");
    o.Content("d3/sub");
    R(::syscall(SYS_renameat2, AT_FDCWD, PATH("z"), AT_FDCWD, PATH("y"),
                RENAME_EXCHANGE | RENAME_NOREPLACE));
    // A hard-linked pair: renaming one name over the other does nothing.
    o.WriteFile("h1", "H");
    R(::link(PATH("h1"), PATH("h2")));
    R(::rename(PATH("h1"), PATH("h2")));
    o.Stat("h1");
    o.Stat("h2");
    // ctime of the moved inode changes (Linux updates it on rename).
    struct stat c0 = o.Quiet("y");
    Pause();
    R(::rename(PATH("y"), PATH("y2")));
    struct stat c1 = o.Quiet("y2");
    o.Note("ctime changed by rename", Ns(c1.st_ctim) > Ns(c0.st_ctim));
  });
}

TEST_F(PosixTest, HardLinks) {
  Compare([](Ops& o) {
    o.WriteFile("f", "one");
    R(::link(PATH("f"), PATH("g")));
    o.Stat("f");
    o.Stat("g");
    struct stat a = o.Quiet("f"), b = o.Quiet("g");
    o.Note("same inode", a.st_ino == b.st_ino);
    int fd = F(::open(PATH("g"), O_WRONLY | O_APPEND));
    R(::write(fd, " two", 4));
    R(::close(fd));
    o.Content("f");
    R(::mkdir(PATH("d"), 0755));
    R(::link(PATH("f"), PATH("d/h")));
    o.Stat("f");
    R(::link(PATH("f"), PATH("g")));
    R(::link(PATH("d"), PATH("d2")));
    R(::link(PATH("missing"), PATH("m")));
    R(::unlink(PATH("f")));
    o.Stat("g");
    o.Content("d/h");
    R(::unlink(PATH("g")));
    o.Stat("d/h");
    R(::unlink(PATH("d/h")));
    o.Stat("d/h");
  });
}

TEST_F(PosixTest, Symlinks) {
  Compare([](Ops& o) {
    o.WriteFile("f", "target data");
    R(::symlink("f", PATH("l")));
    o.Stat("l");
    o.Stat("l", true);
    char buf[256] = {};
    long n = R(::readlink(PATH("l"), buf, sizeof(buf)));
    o.Data("readlink", std::string(buf, n > 0 ? n : 0));
    R(::readlink(PATH("l"), buf, 1));  // truncated, no error
    R(::readlink(PATH("f"), buf, sizeof(buf)));
    o.Content("l");
    F(::open(PATH("l"), O_RDONLY | O_NOFOLLOW));
    R(::symlink("loop2", PATH("loop1")));
    R(::symlink("loop1", PATH("loop2")));
    F(::open(PATH("loop1"), O_RDONLY));
    o.Stat("loop1", true);
    R(::symlink("nowhere", PATH("dangling")));
    o.Stat("dangling", true);
    o.Stat("dangling");
    R(::symlink("f", PATH("l")));
    std::string longtarget(1000, 'x');
    R(::symlink(longtarget.c_str(), PATH("long")));
    o.Stat("long");
    n = R(::readlink(PATH("long"), buf, sizeof(buf)));
    // A symlink to a directory, and paths through it.
    R(::mkdir(PATH("d"), 0755));
    o.WriteFile("d/in", "inside");
    R(::symlink("d", PATH("ld")));
    o.Content("ld/in");
    R(::symlink("../f", PATH("d/up")));
    o.Content("d/up");
    R(::unlink(PATH("l")));
    o.Stat("f");
  });
}

TEST_F(PosixTest, SpecialFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "mknod of devices needs root";
  Compare([](Ops& o) {
    R(::mkfifo(PATH("fifo"), 0640));
    o.Stat("fifo");
    R(::mknod(PATH("chr"), S_IFCHR | 0600, makedev(1, 3)));
    o.Stat("chr");
    R(::mknod(PATH("blk"), S_IFBLK | 0600, makedev(7, 0)));
    o.Stat("blk");
    R(::mknod(PATH("reg"), S_IFREG | 0644, 0));
    o.Stat("reg");
    R(::mknod(PATH("fifo"), S_IFIFO | 0600, 0));
    // Data through the fifo (the kernel's pipe: needs a reader and a writer).
    int rd = F(::open(PATH("fifo"), O_RDONLY | O_NONBLOCK));
    int wr = F(::open(PATH("fifo"), O_WRONLY | O_NONBLOCK));
    R(::write(wr, "pipe", 4));
    char buf[8] = {};
    R(::read(rd, buf, sizeof(buf)));
    o.Data("through fifo", std::string(buf, 4));
  });
}

TEST_F(PosixTest, ChmodChown) {
  Compare([](Ops& o) {
    o.WriteFile("f", "x");
    R(::chmod(PATH("f"), 04755));
    o.Stat("f");
    struct stat before = o.Quiet("f");
    Pause();
    R(::chown(PATH("f"), 1000, 1000));
    o.Stat("f");  // setuid cleared by chown
    struct stat after = o.Quiet("f");
    o.Note("ctime changed by chown", Ns(after.st_ctim) > Ns(before.st_ctim));
    o.Note("mtime unchanged by chown", Ns(after.st_mtim) == Ns(before.st_mtim));
    R(::chmod(PATH("f"), 02755));
    R(::chown(PATH("f"), 1000, 2000));  // setgid on an executable: cleared too
    o.Stat("f");
    R(::chown(PATH("f"), -1, -1));
    o.Stat("f");
    R(::chmod(PATH("f"), 0));
    o.Stat("f");
    R(::mkdir(PATH("d"), 0755));
    R(::chmod(PATH("d"), 01777));
    R(::chown(PATH("d"), 5, 6));
    o.Stat("d");
    R(::symlink("f", PATH("l")));
    R(::lchown(PATH("l"), 7, 8));
    o.Stat("l");
    o.Stat("f");
    int fd = F(::open(PATH("g"), O_CREAT | O_RDWR, 0600));
    R(::fchmod(fd, 0640));
    R(::fchown(fd, 3, 4));
    o.Fstat(fd, "g");
    R(::close(fd));
    R(::chmod(PATH("missing"), 0644));
  });
}

TEST_F(PosixTest, Utimens) {
  Compare([](Ops& o) {
    o.WriteFile("f", "x");
    struct timespec ts[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
    R(::utimensat(AT_FDCWD, PATH("f"), ts, 0));
    struct stat st = o.Quiet("f");
    o.Note("atime", std::to_string(Ns(st.st_atim)));
    o.Note("mtime", std::to_string(Ns(st.st_mtim)));
    // UTIME_OMIT leaves atime; UTIME_NOW sets mtime to now.
    struct timespec now_ts;
    ::clock_gettime(CLOCK_REALTIME, &now_ts);
    int64_t t0 = Ns(now_ts) - 1000000000;  // clocks of the servers may be coarser
    struct timespec ts2[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    R(::utimensat(AT_FDCWD, PATH("f"), ts2, 0));
    st = o.Quiet("f");
    o.Note("atime after OMIT", std::to_string(Ns(st.st_atim)));
    o.Note("mtime is now", Ns(st.st_mtim) >= t0 && Ns(st.st_mtim) < t0 + 60000000000LL);
    struct timespec ts3[2] = {{5, 6}, {0, UTIME_OMIT}};
    R(::utimensat(AT_FDCWD, PATH("f"), ts3, 0));
    struct stat st3 = o.Quiet("f");
    o.Note("atime", std::to_string(Ns(st3.st_atim)));
    o.Note("mtime unchanged by OMIT", Ns(st3.st_mtim) == Ns(st.st_mtim));
    // futimens and utimes(NULL).
    int fd = F(::open(PATH("f"), O_RDWR));
    struct timespec ts4[2] = {{7, 999999999}, {8, 1}};
    R(::futimens(fd, ts4));
    st = o.Quiet("f");
    o.Note("atime", std::to_string(Ns(st.st_atim)));
    o.Note("mtime", std::to_string(Ns(st.st_mtim)));
    R(::close(fd));
    R(::utimensat(AT_FDCWD, PATH("f"), nullptr, 0));
    st = o.Quiet("f");
    o.Note("both now", Ns(st.st_mtim) >= t0 && Ns(st.st_atim) >= t0);
    // Directories and symlinks (AT_SYMLINK_NOFOLLOW).
    R(::mkdir(PATH("d"), 0755));
    R(::utimensat(AT_FDCWD, PATH("d"), ts, 0));
    st = o.Quiet("d");
    o.Note("dir mtime", std::to_string(Ns(st.st_mtim)));
    R(::symlink("f", PATH("l")));
    R(::utimensat(AT_FDCWD, PATH("l"), ts4, AT_SYMLINK_NOFOLLOW));
    st = o.Quiet("l");
    o.Note("link mtime", std::to_string(Ns(st.st_mtim)));
    R(::utimensat(AT_FDCWD, PATH("missing"), ts, 0));
    // cp -p and tar: write, set the times through the descriptor, then close. The times stay.
    fd = F(::open(PATH("copied"), O_CREAT | O_WRONLY, 0644));
    R(::write(fd, "data", 4));
    R(::futimens(fd, ts));
    R(::close(fd));
    ::usleep(1100 * 1000);  // past attr_timeout (1 s): the stat below reads the stored record
    st = o.Quiet("copied");
    o.Note("copied mtime", std::to_string(Ns(st.st_mtim)));
    o.Stat("copied");
    o.Content("copied");
    // The mount publishes such times with the data, in one change; a write after them stamps
    // the write time again, and a setattr with the data along keeps its other parts.
    fd = F(::open(PATH("rewritten"), O_CREAT | O_WRONLY, 0644));
    R(::write(fd, "data", 4));
    R(::futimens(fd, ts));
    R(::write(fd, "more", 4));
    R(::close(fd));
    st = o.Quiet("rewritten");
    o.Note("rewritten mtime is now", Ns(st.st_mtim) >= t0 && Ns(st.st_mtim) < t0 + 60000000000LL);
    o.Content("rewritten");
    fd = F(::open(PATH("owned"), O_CREAT | O_WRONLY, 04755));
    R(::write(fd, "data", 4));
    R(::fchmod(fd, 04755));
    R(::futimens(fd, ts));
    R(::fchown(fd, 5, 6));
    o.Fstat(fd, "owned");
    R(::close(fd));
    st = o.Quiet("owned");
    o.Note("owned mtime", std::to_string(Ns(st.st_mtim)));
    o.Stat("owned");
    o.Content("owned");
  });
}

TEST_F(PosixTest, NameTooLong) {
  Compare([](Ops& o) {
    std::string n255(255, 'n'), n256(256, 'n');
    int fd = F(::open(PATH(n255), O_CREAT | O_WRONLY, 0644));
    R(::close(fd));
    o.Stat(n255);
    F(::open(PATH(n256), O_CREAT | O_WRONLY, 0644));
    R(::mkdir(PATH(n256), 0755));
    R(::symlink("x", PATH(n256)));
    R(::link(PATH(n255), PATH(n256)));
    R(::rename(PATH(n255), PATH(n256)));
    R(::unlink(PATH(n256)));
    o.Stat(n256);
    R(::unlink(PATH(n255)));
  });
}

TEST_F(PosixTest, Fallocate) {
  Compare([](Ops& o) {
    int fd = F(::open(PATH("f"), O_CREAT | O_RDWR, 0644));
    R(::fallocate(fd, 0, 0, 1024 * 1024));  // extends
    o.Fstat(fd, "f");
    R(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * 1024 * 1024));  // does not
    o.Fstat(fd, "f");
    R(::fallocate(fd, 0, 100, 10));  // inside: no change
    o.Fstat(fd, "f");
    R(::write(fd, "abc", 3));
    R(::fallocate(fd, 0, 2 * 1024 * 1024, 5000));
    o.Fstat(fd, "f");
    R(::close(fd));
    o.Content("f");
    o.Stat("f");
    fd = F(::open(PATH("g"), O_CREAT | O_RDWR, 0644));
    o.Note("posix_fallocate", ErrName(::posix_fallocate(fd, 0, 77777)));
    R(::close(fd));
    o.Stat("g");
    o.Content("g");
    fd = F(::open(PATH("f"), O_RDONLY));
    R(::fallocate(fd, 0, 0, 10));
    R(::close(fd));
  });
}

// PUNCH_HOLE and ZERO_RANGE: inside one chunk, across a chunk boundary, over whole chunks (which
// become holes: SEEK_HOLE finds them, and st_blocks falls once published), past the end (the
// size stays, or grows without KEEP_SIZE), then read back through the open file and after close.
TEST_F(PosixTest, PunchHoleAndZeroRange) {
  {
    std::string probe = local_ + "/zero-range-probe";
    int fd = ::open(probe.c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    bool supported = ::fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096) == 0;
    ::close(fd);
    ::unlink(probe.c_str());
    if (!supported) {
      GTEST_SKIP() << "the local reference directory " << local_
                   << " has no FALLOC_FL_ZERO_RANGE (tmpfs?) to compare with";
    }
  }
  Compare([](Ops& o) {
    const off_t mib = 1024 * 1024;
    const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    std::string data = Pattern(4 * mib + 1000, 9);
    int fd = F(::open(PATH("p"), O_CREAT | O_RDWR, 0644));
    R(::pwrite(fd, data.data(), data.size(), 0));
    R(::fsync(fd));
    struct stat before;
    ::fstat(fd, &before);
    R(::fallocate(fd, punch, 100, 5000));
    R(::fallocate(fd, punch, mib - 10, 20));
    R(::fallocate(fd, punch, mib, 2 * mib));
    o.Fstat(fd, "p");
    o.Data("after punches", o.ReadFd(fd));
    R(::lseek(fd, mib, SEEK_HOLE));
    R(::lseek(fd, mib + 77, SEEK_DATA));
    R(::lseek(fd, 0, SEEK_HOLE) <= mib);
    R(::fallocate(fd, punch, 4 * mib, 10 * mib));  // the tail and past it: the size stays
    o.Fstat(fd, "p");
    R(::fallocate(fd, punch, 20 * mib, 5));  // all past the end
    R(::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 3 * mib + 5, 100));
    o.Fstat(fd, "p");
    R(::fallocate(fd, FALLOC_FL_ZERO_RANGE, 4 * mib - 500, mib));  // zeroes and extends
    o.Fstat(fd, "p");
    R(::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10));  // PUNCH_HOLE needs KEEP_SIZE
    std::string expect = data;
    std::memset(&expect[100], 0, 5000);
    std::memset(&expect[mib - 10], 0, 2 * mib + 10);
    std::memset(&expect[3 * mib + 5], 0, 100);
    expect.resize(5 * mib - 500, '\0');
    std::memset(&expect[4 * mib - 500], 0, mib);
    o.Note("the open file reads as expected", o.ReadFd(fd) == expect);
    R(::pwrite(fd, "xyz", 3, mib + 5));  // a write into a punched chunk
    expect.replace(mib + 5, 3, "xyz");
    R(::close(fd));
    o.Content("p");
    struct stat after;
    ::stat(PATH("p"), &after);
    o.Note("blocks fell", after.st_blocks < before.st_blocks);
    fd = F(::open(PATH("p"), O_RDONLY));
    o.Note("reads as expected after close", o.ReadFd(fd) == expect);
    R(::lseek(fd, 2 * mib, SEEK_HOLE));
    R(::fallocate(fd, punch, 0, 10));  // not open for writing
    R(::close(fd));
  });
}

// copy_file_range(2): whole files and unaligned pieces, at and past the source's end, into the
// same file, a source with unpublished writes, and the calls the kernel refuses.
TEST_F(PosixTest, CopyFileRange) {
  Compare([](Ops& o) {
    const off_t mib = 1024 * 1024;
    std::string data = Pattern(3 * mib + 1000, 11);
    int fd = F(::open(PATH("src"), O_CREAT | O_WRONLY, 0644));
    R(::write(fd, data.data(), data.size()));
    R(::close(fd));
    int in = F(::open(PATH("src"), O_RDONLY));
    int out = F(::open(PATH("dst"), O_CREAT | O_RDWR, 0644));
    R(::copy_file_range(in, nullptr, out, nullptr, data.size() + 500, 0));
    R(::lseek(in, 0, SEEK_CUR));
    R(::lseek(out, 0, SEEK_CUR));
    R(::copy_file_range(in, nullptr, out, nullptr, 10, 0));  // at the source's end
    o.Fstat(out, "dst");
    int out2 = F(::open(PATH("dst2"), O_CREAT | O_RDWR, 0644));
    R(::pwrite(out2, "head", 4, 0));
    loff_t from = 100, to = 5000;
    R(::copy_file_range(in, &from, out2, &to, 2 * mib, 0));
    o.Note("offsets after", std::to_string(from) + " " + std::to_string(to));
    from = 3 * mib + 900, to = 10;
    R(::copy_file_range(in, &from, out2, &to, mib, 0));  // short: the source ends
    from = 4 * mib, to = 0;
    R(::copy_file_range(in, &from, out2, &to, mib, 0));  // past the source's end
    from = 0, to = 2 * mib + 5000;
    R(::copy_file_range(out2, &from, out2, &to, 5000, 0));  // within one file, apart
    from = 0, to = 100;
    R(::copy_file_range(out2, &from, out2, &to, 5000, 0));  // overlapping: refused
    from = 0, to = 0;
    R(::copy_file_range(in, &from, out2, &to, 10, 1));  // flags: refused
    R(::copy_file_range(out, &from, in, &to, 10, 0));   // into a read-only descriptor
    int app = F(::open(PATH("dst2"), O_WRONLY | O_APPEND));
    R(::copy_file_range(in, &from, app, &to, 10, 0));  // into an O_APPEND one
    o.Fstat(out2, "dst2");
    // A source with bytes this mount has not published yet.
    int w = F(::open(PATH("w"), O_CREAT | O_RDWR, 0644));
    R(::pwrite(w, data.data() + 7, mib + 3, 0));
    from = 1000, to = 0;
    R(::copy_file_range(w, &from, out, &to, mib, 0));
    R(::close(w));
    R(::close(out));
    R(::close(out2));
    R(::close(in));
    o.Content("dst");
    o.Content("dst2");
    std::string dst = data;
    std::memcpy(&dst[0], data.data() + 7 + 1000, mib);
    int fd2 = F(::open(PATH("dst"), O_RDONLY));
    o.Note("dst as expected", o.ReadFd(fd2) == dst);
  });
}

// The mount answers copy_file_range itself (the kernel would otherwise fall back to reading and
// writing every byte through it): a mount run with libfuse's debug log shows the request
// answered with success, not ENOSYS.
TEST_F(PosixTest, CopyFileRangeIsAnsweredByTheMount) {
  TestMountOptions opts;
  opts.extra_opts = {"debug"};
  TestMount m(cluster_->cluster_file(), cluster_->dir() + "/debug-mnt", opts);
  ASSERT_TRUE(m.ok()) << m.Log();
  std::string data = Pattern(100000, 12);
  { std::ofstream(m.path("a")) << data; }
  int in = ::open(m.path("a").c_str(), O_RDONLY);
  int out = ::open(m.path("b").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(in, 0);
  ASSERT_GE(out, 0);
  EXPECT_EQ(::copy_file_range(in, nullptr, out, nullptr, data.size(), 0),
            static_cast<ssize_t>(data.size()))
      << std::strerror(errno);
  ::close(in);
  EXPECT_EQ(::close(out), 0);
  std::ifstream b(m.path("b"));
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(b), {}), data);
  // libfuse's log: "unique: N, opcode: COPY_FILE_RANGE (47), ..." then "unique: N, success, ...".
  // (A newer kernel may ask COPY_FILE_RANGE_64 first; any of them answered with success counts.)
  std::string log = m.Log();
  std::vector<std::string> replies;
  for (size_t at = log.find("opcode: COPY_FILE_RANGE"); at != std::string::npos;
       at = log.find("opcode: COPY_FILE_RANGE", at + 1)) {
    size_t u = log.rfind("unique: ", at);
    std::string unique = log.substr(u, log.find(',', u) - u);
    size_t reply = log.find(unique + ", ", at);
    if (reply == std::string::npos) continue;
    replies.push_back(log.substr(reply, log.find('\n', reply) - reply));
  }
  ASSERT_FALSE(replies.empty()) << "the kernel never sent copy_file_range, or it had no reply";
  bool answered = std::any_of(replies.begin(), replies.end(), [](const std::string& r) {
    return r.find(", success") != std::string::npos;
  });
  EXPECT_TRUE(answered) << replies.front();
}

TEST_F(PosixTest, SeekDataHole) {
  // Granularity differs between file systems (blocks vs chunks), so the trace records only what
  // must hold everywhere: SEEK_DATA skips only zeros and fails with ENXIO exactly when no data
  // follows; SEEK_HOLE lands on a zero byte or at the end of the file.
  Compare([](Ops& o) {
    const off_t mib = 1024 * 1024;
    std::string d1 = Pattern(4096, 5), d2 = Pattern(10, 6);
    int fd = F(::open(PATH("s"), O_CREAT | O_RDWR, 0644));
    R(::pwrite(fd, d1.data(), d1.size(), mib));
    R(::pwrite(fd, d2.data(), d2.size(), 3 * mib));
    auto check = [&](const char* when) {
      struct stat st;
      ::fstat(fd, &st);
      std::string all = o.ReadFd(fd);
      off_t size = st.st_size;
      for (off_t off : {off_t{0}, mib - 1, mib, mib + 100, mib + 4096, 2 * mib, 3 * mib + 5,
                        size - 1, size, size + 10}) {
        std::string at = std::string(when) + " off=" + std::to_string(off);
        off_t d = ::lseek(fd, off, SEEK_DATA);
        int de = errno;
        bool data_follows = false;
        for (off_t i = std::max<off_t>(off, 0); i < size; ++i) data_follows |= all[i] != 0;
        if (d < 0) {
          o.Note(at + " SEEK_DATA",
                 "-1 " + ErrName(de) + (data_follows ? " but data follows" : ""));
        } else {
          bool only_zeros_skipped = d >= off && d < size;
          for (off_t i = off; only_zeros_skipped && i < d; ++i) only_zeros_skipped = all[i] == 0;
          o.Note(at + " SEEK_DATA valid", only_zeros_skipped);
        }
        off_t h = ::lseek(fd, off, SEEK_HOLE);
        int he = errno;
        if (h < 0) {
          o.Note(at + " SEEK_HOLE", "-1 " + ErrName(he));
        } else {
          o.Note(at + " SEEK_HOLE valid", h >= off && h <= size && (h == size || all[h] == 0));
        }
      }
    };
    check("dirty");
    R(::close(fd));
    fd = F(::open(PATH("s"), O_RDONLY));
    check("published");
    R(::close(fd));
  });
}

TEST_F(PosixTest, Statfs) {
  Compare([](Ops& o) {
    struct statvfs st;
    R(::statvfs(o.root().c_str(), &st));
    o.Note("f_blocks > 0", st.f_blocks > 0);
    o.Note("f_bsize > 0", st.f_bsize > 0);
    o.Note("f_bavail <= f_bfree <= f_blocks",
           st.f_bavail <= st.f_bfree && st.f_bfree <= st.f_blocks);
    o.Note("f_namemax", std::to_string(st.f_namemax));
  });
}

TEST_F(PosixTest, Xattrs) {
  Compare([](Ops& o) {
    o.WriteFile("f", "x");
    R(::setxattr(PATH("f"), "user.a", "one", 3, 0));
    R(::setxattr(PATH("f"), "user.b", "", 0, 0));
    R(::setxattr(PATH("f"), "user.a", "uno", 3, XATTR_CREATE));
    R(::setxattr(PATH("f"), "user.c", "c", 1, XATTR_REPLACE));
    R(::setxattr(PATH("f"), "user.a", "1", 1, XATTR_REPLACE));
    char buf[256] = {};
    R(::getxattr(PATH("f"), "user.a", nullptr, 0));
    long n = R(::getxattr(PATH("f"), "user.a", buf, sizeof(buf)));
    o.Data("user.a", std::string(buf, n > 0 ? n : 0));
    R(::getxattr(PATH("f"), "user.b", buf, sizeof(buf)));
    R(::getxattr(PATH("f"), "user.missing", buf, sizeof(buf)));
    std::string big(3000, 'v');
    R(::setxattr(PATH("f"), "user.big", big.data(), big.size(), 0));
    R(::getxattr(PATH("f"), "user.big", buf, 10));  // ERANGE
    n = ::listxattr(PATH("f"), nullptr, 0);
    o.Note("listxattr size > 0", n > 0);
    std::vector<char> list(static_cast<size_t>(std::max(n, 1L)) + 16);
    n = ::listxattr(PATH("f"), list.data(), list.size());
    std::set<std::string> names;
    for (long i = 0; i < n;) {
      std::string s(&list[i]);
      if (s.rfind("user.", 0) == 0) names.insert(s);
      i += static_cast<long>(s.size()) + 1;
    }
    std::string all;
    for (const auto& s : names) all += s + " ";
    o.Note("listxattr", all);
    R(::listxattr(PATH("f"), list.data(), 2));  // ERANGE
    R(::removexattr(PATH("f"), "user.a"));
    R(::removexattr(PATH("f"), "user.a"));
    R(::getxattr(PATH("f"), "user.a", buf, sizeof(buf)));
    R(::setxattr(PATH("f"), "user.", "x", 1, 0));
    R(::getxattr(PATH("missing"), "user.a", buf, sizeof(buf)));
    // On a directory, and through a descriptor.
    R(::mkdir(PATH("d"), 0755));
    R(::setxattr(PATH("d"), "user.dir", "D", 1, 0));
    n = R(::getxattr(PATH("d"), "user.dir", buf, sizeof(buf)));
    int fd = F(::open(PATH("f"), O_RDONLY));
    R(::fsetxattr(fd, "user.fd", "F", 1, 0));
    n = R(::fgetxattr(fd, "user.fd", buf, sizeof(buf)));
    o.Data("user.fd", std::string(buf, n > 0 ? n : 0));
    R(::close(fd));
    // Removing the last one leaves an empty list.
    R(::removexattr(PATH("d"), "user.dir"));
    n = ::listxattr(PATH("d"), list.data(), list.size());
    names.clear();
    for (long i = 0; i < n;) {
      std::string s(&list[i]);
      if (s.rfind("user.", 0) == 0) names.insert(s);
      i += static_cast<long>(s.size()) + 1;
    }
    o.Note("user xattrs left on d", std::to_string(names.size()));
  });
}

TEST_F(PosixTest, ReaddirThousandEntries) {
  Compare([](Ops& o) {
    R(::mkdir(PATH("d"), 0755));
    std::set<std::string> made;
    for (int i = 0; i < 1000; ++i) {
      std::string name = "entry-" + std::to_string(i * 7919 % 100000) + (i % 3 ? ".txt" : "");
      if (i % 100 == 0) name = std::string(200, static_cast<char>('A' + i / 100)) + "-long";
      int fd = ::open(o.P("d/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd < 0) {
        o.Note("create " + name, "-1 " + ErrName(errno));
        continue;
      }
      ::close(fd);
      made.insert(name);
    }
    R(::mkdir(PATH("d/subdir"), 0755));
    made.insert("subdir");
    made.insert(".");
    made.insert("..");
    auto list = [&](const char* what) {
      DIR* dir = ::opendir(PATH("d"));
      std::multiset<std::string> seen;
      int dirs = 0;
      while (dir) {
        dirent* e = ::readdir(dir);
        if (!e) break;
        seen.insert(e->d_name);
        if (e->d_type == DT_DIR) ++dirs;
      }
      if (dir) ::closedir(dir);
      o.Note(std::string(what) + ": entries", std::to_string(seen.size()));
      o.Note(std::string(what) + ": names equal as sets",
             std::set<std::string>(seen.begin(), seen.end()) == made && seen.size() == made.size());
      o.Note(std::string(what) + ": d_type DT_DIR count", std::to_string(dirs));
    };
    list("fresh");
    // Remove a third of them while listing: every name not removed must still be returned once.
    int removed = 0;
    for (auto it = made.begin(); it != made.end();) {
      if (*it != "." && *it != ".." && *it != "subdir" && removed++ % 3 == 0) {
        ::unlink(o.P("d/" + *it).c_str());
        it = made.erase(it);
      } else {
        ++it;
      }
    }
    list("after unlinks");
    o.Stat("d");
  });
}

TEST_F(PosixTest, UnlinkedOpenFile) {
  Compare([](Ops& o) {
    int fd = F(::open(PATH("f"), O_CREAT | O_RDWR, 0644));
    std::string data = Pattern(1500000, 7);
    R(::write(fd, data.data(), data.size()));
    R(::fsync(fd));
    int fd2 = F(::open(PATH("f"), O_RDONLY));
    R(::unlink(PATH("f")));
    o.Stat("f");
    o.Fstat(fd, "unlinked f");
    o.Note("readable through fd", o.ReadFd(fd) == data);
    R(::pwrite(fd, "after", 5, 2 * 1024 * 1024));
    o.Fstat(fd, "unlinked f after write");
    std::string tail(5, '\0');
    R(::pread(fd, tail.data(), 5, 2 * 1024 * 1024));
    o.Data("tail", tail);
    R(::fsync(fd));
    R(::ftruncate(fd, 100));
    o.Fstat(fd, "unlinked f after ftruncate");
    R(::close(fd));
    o.Fstat(fd2, "still open through fd2");
    o.Data("through fd2", o.ReadFd(fd2));
    R(::close(fd2));
    // The name is free again.
    fd = F(::open(PATH("f"), O_CREAT | O_EXCL | O_RDWR, 0644));
    o.Fstat(fd, "new f");
    R(::close(fd));
    // Renaming another file over an open one: the old one lives on through its descriptor.
    o.WriteFile("victim", "old victim");
    o.WriteFile("other", "other");
    fd = F(::open(PATH("victim"), O_RDWR));
    R(::rename(PATH("other"), PATH("victim")));
    o.Fstat(fd, "replaced victim");
    o.Data("replaced victim", o.ReadFd(fd));
    R(::pwrite(fd, "OLD", 3, 0));
    o.Data("replaced victim after write", o.ReadFd(fd));
    R(::close(fd));
    o.Content("victim");
    // A file with another link is not unlinked-open: nlink drops to 1.
    o.WriteFile("g", "G");
    R(::link(PATH("g"), PATH("g2")));
    fd = F(::open(PATH("g"), O_RDONLY));
    R(::unlink(PATH("g")));
    o.Fstat(fd, "g with a second link");
    R(::close(fd));
  });
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
