// Real programs on the mount: tar a source tree in and out, git init/add/commit/fsck, and
// sqlite3 with a table of 1000 rows. A missing program skips its test with the reason.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace testing {
namespace {

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a command with bash (pipefail); returns its exit code and its merged output.
std::pair<int, std::string> Sh(const std::string& cmd) {
  std::string full = "bash -o pipefail -c " + ShellQuote("{ " + cmd + "\n} 2>&1");
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool Have(const std::string& program) {
  return Sh("command -v " + program + " >/dev/null").first == 0;
}

// A small source tree: nested directories, ~200 files of assorted sizes (a few over one
// chunk), empty files, an executable, symlinks and a hard link.
void MakeTree(const std::string& root) {
  std::mt19937 rng(42);
  ASSERT_EQ(Sh("mkdir -p '" + root + "'").first, 0);
  int made = 0;
  for (int d = 0; d < 10; ++d) {
    std::string dir = root + "/dir" + std::to_string(d);
    if (d % 3 == 2) dir += "/nested/deeper";
    ASSERT_EQ(Sh("mkdir -p '" + dir + "'").first, 0);
    for (int f = 0; f < 20; ++f, ++made) {
      size_t size = rng() % 4 == 0 ? 0 : rng() % 20000;
      if (made % 67 == 5) size = 1024 * 1024 + rng() % 2000000;  // crosses chunk boundaries
      std::string content;
      content.reserve(size);
      for (size_t i = 0; i < size; ++i) content += static_cast<char>('a' + (rng() % 26));
      std::string name = dir + "/file" + std::to_string(f) + (f % 4 == 0 ? ".c" : ".txt");
      std::ofstream(name, std::ios::binary) << content;
    }
  }
  ASSERT_EQ(Sh("cd '" + root +
               "' && chmod 755 dir0/file1.txt && ln -s dir0/file0.c link && "
               "ln -s nowhere dangling && ln dir1/file1.txt hardlink && mkdir empty")
                .first,
            0);
}

class ProgramsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!FuseAvailable(&why)) return;
    cluster_ = new TestCluster();
    mount_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt");
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    QUORUMFS_REQUIRE_FUSE();
    ASSERT_TRUE(mount_ && mount_->ok()) << "mount failed";
    char tmpl[] = "/tmp/quorumfs-programs-XXXXXX";
    local_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!local_.empty()) Sh("rm -rf '" + local_ + "'");
  }

  // Runs the shell command `copy`, which must succeed, then expects the tree `to` to hold what
  // `from` does: names, contents, and symlinks as links (diff -r --no-dereference).
  static void CopyAndCompare(const std::string& copy, const std::string& from,
                             const std::string& to) {
    auto r = Sh(copy);
    ASSERT_EQ(r.first, 0) << copy << ":\n" << r.second;
    r = Sh("diff -r --no-dereference '" + from + "' '" + to + "'");
    EXPECT_EQ(r.first, 0) << "the tree " << to << " differs:\n" << r.second;
  }

  // Runs the shell command `listing` (one line per entry) in `from` and in `to` and diffs the
  // two: exit 0 when they match, else the differences.
  std::pair<int, std::string> CompareListings(const std::string& listing, const std::string& from,
                                              const std::string& to) {
    const std::string a = local_ + "/from.list", b = local_ + "/to.list";
    return Sh("cd '" + from + "' && (" + listing + ") > '" + a + "' && cd '" + to + "' && (" +
              listing + ") > '" + b + "' && diff '" + a + "' '" + b + "'");
  }

  static TestCluster* cluster_;
  static TestMount* mount_;
  std::string local_;
};

TestCluster* ProgramsTest::cluster_ = nullptr;
TestMount* ProgramsTest::mount_ = nullptr;

TEST_F(ProgramsTest, TarInAndOut) {
  if (!Have("tar") || !Have("diff")) GTEST_SKIP() << "tar or diff is not installed";
  std::string src = local_ + "/src", out = local_ + "/out", in = mount_->path("tree");
  MakeTree(src);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(::mkdir(in.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  CopyAndCompare("tar -C '" + src + "' -cf - . | tar -C '" + in + "' -xf -", src, in);
  ASSERT_FALSE(HasFatalFailure());
  CopyAndCompare("tar -C '" + in + "' -cf - . | tar -C '" + out + "' -xf -", src, out);
  ASSERT_FALSE(HasFatalFailure());
  // Metadata tar restores: types, modes, symlink targets, mtimes (whole seconds: the tar
  // format has no more), file sizes.
  std::string list =
      "find . -printf '%p %y %m %l %Ts\\n' | sort && find . -type f -printf '%p %s\\n' | sort";
  auto r = CompareListings(list, src, in);
  EXPECT_EQ(r.first, 0) << "modes, sizes, link targets or mtimes differ:\n" << r.second;
  r = Sh("stat -c %h '" + in + "/hardlink'");
  EXPECT_EQ(r.second, "2\n");
  // And the tree can be removed again.
  r = Sh("rm -rf '" + in + "'");
  EXPECT_EQ(r.first, 0) << r.second;
  struct stat st;
  EXPECT_NE(::stat(in.c_str(), &st), 0);
}

// cp -a in and out: contents, and every entry's type, mode, owner, link target and times to
// the nanosecond. cp sets a copy's mode through a POSIX ACL when that succeeds, and the mount
// once stored such ACLs as plain attributes: every copy kept the mode it was created with.
TEST_F(ProgramsTest, CopyKeepsModesOwnersAndTimes) {
  if (!Have("cp") || !Have("diff")) GTEST_SKIP() << "cp or diff is not installed";
  std::string src = local_ + "/src", out = local_ + "/out", in = mount_->path("copied");
  MakeTree(src);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(Sh("cd '" + src +
               "' && chown 1234:5678 dir0/file2.txt && chmod 4755 dir0/file3.txt && "
               "chmod 640 dir1/file0.c && chmod 700 dir3 && touch -h -d '2001-02-03 04:05:06.7' "
               "link dir0/file4.c")
                .first,
            0);
  CopyAndCompare("cp -a '" + src + "' '" + in + "'", src, in);
  ASSERT_FALSE(HasFatalFailure());
  CopyAndCompare("cp -a '" + in + "' '" + out + "'", src, out);
  ASSERT_FALSE(HasFatalFailure());
  std::string list = "find . -printf '%p %y %m %U %G %l %T@\\n' | sort";
  for (const std::string& copy : {in, out}) {
    auto r = CompareListings(list, src, copy);
    EXPECT_EQ(r.first, 0) << copy << ": modes, owners, link targets or times differ:\n" << r.second;
  }
  // sed -i writes a new file and gives it the old one's mode the same way (it once came out
  // 0600), and its owner.
  auto r = Sh("cd '" + in + "' && chmod 754 dir0/file1.txt && chown 12:34 dir0/file1.txt && " +
              "sed -i 's/a/A/g' dir0/file1.txt && stat -c '%a %u:%g' dir0/file1.txt");
  EXPECT_EQ(r.second, "754 12:34\n");
}

TEST_F(ProgramsTest, GitInitAddCommit) {
  if (!Have("git")) GTEST_SKIP() << "git is not installed";
  std::string repo = mount_->path("repo");
  MakeTree(local_ + "/src");
  ASSERT_FALSE(HasFatalFailure());
  std::string git = "HOME='" + local_ + "' GIT_CONFIG_NOSYSTEM=1 git -c user.name=test " +
                    "-c user.email=test@example.com -c init.defaultBranch=main ";
  auto r = Sh("mkdir '" + repo + "' && cp -a '" + local_ + "/src/.' '" + repo + "/' && cd '" +
              repo + "' && " + git + "init -q && " + git + "add -A && " + git +
              "commit -q -m first && " + git + "status --porcelain");
  ASSERT_EQ(r.first, 0) << r.second;
  EXPECT_EQ(r.second, "") << "working tree not clean after the commit";
  // A second commit (modify, rename, delete), then git checks every object it wrote.
  r = Sh("cd '" + repo + "' && echo change >> dir0/file0.c && " + git +
         "mv dir1/file2.txt dir1/moved.txt && " + git + "rm -q dir4/file3.txt && " + git +
         "commit -q -am second && " + git + "fsck --full --strict && " + git +
         "log --oneline | wc -l && " + git + "status --porcelain");
  ASSERT_EQ(r.first, 0) << r.second;
  EXPECT_EQ(r.second, "2\n");
  // A clone out of the mount has the same tree.
  r = Sh("cd '" + local_ + "' && " + git + "clone -q '" + repo + "' clone && cd clone && " + git +
         "log --oneline | wc -l && diff -r --no-dereference -x .git -x empty . '" + repo + "'");
  EXPECT_EQ(r.first, 0) << r.second;
  EXPECT_EQ(r.second, "2\n");
}

TEST_F(ProgramsTest, Sqlite) {
  if (!Have("sqlite3")) {
    GTEST_SKIP() << "the sqlite3 command is not installed (scripts/packages.sh installs it)";
  }
  std::string db = mount_->path("test.db");
  std::ostringstream sql;
  sql << "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL);\n";
  // Ten transactions of 100 rows: each commit goes through the rollback journal.
  for (int tx = 0; tx < 10; ++tx) {
    sql << "BEGIN;\n";
    for (int i = 0; i < 100; ++i) {
      int id = tx * 100 + i;
      sql << "INSERT INTO t (name, value) VALUES ('row" << id << "', " << id * 1.5 << ");\n";
    }
    sql << "COMMIT;\n";
  }
  std::string script = local_ + "/script.sql";
  std::ofstream(script) << sql.str();
  auto r = Sh("sqlite3 '" + db + "' < '" + script + "'");
  ASSERT_EQ(r.first, 0) << r.second;
  r = Sh("sqlite3 '" + db + "' 'SELECT count(*), sum(value) FROM t;'");
  EXPECT_EQ(r.first, 0);
  EXPECT_EQ(r.second, "1000|749250.0\n");
  // WAL mode (shared memory file, mmap) and an integrity check.
  r = Sh("sqlite3 '" + db +
         "' 'PRAGMA journal_mode=WAL; UPDATE t SET value = value + 1 WHERE "
         "id % 2 = 0; PRAGMA integrity_check; SELECT count(*) FROM t WHERE value > 100;'");
  EXPECT_EQ(r.first, 0) << r.second;
  EXPECT_EQ(r.second, "wal\nok\n933\n");
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
