// The mount's command line: mount.quorumfs called the way mount(8) and /etc/fstab call a
// helper, and the options ro, allow_other, _netdev, default_permissions, --help.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace {

using testing::TestCluster;
using testing::TestMount;
using testing::TestMountOptions;

std::string MountLine(const std::string& dir) {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + dir + " ") != std::string::npos) return line;
  }
  return "";
}

std::string Helper() {
  std::string bin = QUORUMFS_MOUNT_BIN;
  return bin.substr(0, bin.rfind('/') + 1) + "mount.quorumfs";
}

int Shell(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(FuseMountOptions, HelpListsTheOptions) {
  std::string out;
  EXPECT_EQ(Shell(std::string(QUORUMFS_MOUNT_BIN) + " --help", &out), 0);
  for (const char* opt :
       {"attr_timeout", "entry_timeout", "max_dirty", "cache_size", "op_timeout", "allow_other",
        "_netdev", "ro", "selinux", "hedge_ms", "negative_timeout"}) {
    EXPECT_NE(out.find(opt), std::string::npos) << opt << " missing from --help:\n" << out;
  }
  out.clear();
  EXPECT_NE(Shell(std::string(QUORUMFS_MOUNT_BIN) + " --cluster /nonexistent /tmp", &out), 0);
  EXPECT_NE(out.find("/nonexistent"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(Shell(std::string(QUORUMFS_MOUNT_BIN) + " --cluster x /tmp -o op_timeout=abc", &out),
            0);
  EXPECT_NE(out.find("op_timeout"), std::string::npos) << out;
  // Numbers that are not finite are refused (strtod reads "nan" and "inf" whole).
  for (const char* bad : {"hedge_ms=nan", "op_timeout=inf", "cache_size=inf", "hedge_ms=-1",
                          "negative_timeout=3601"}) {
    out.clear();
    EXPECT_NE(Shell(std::string(QUORUMFS_MOUNT_BIN) + " --cluster x /tmp -o " + bad, &out), 0)
        << bad;
    EXPECT_NE(out.find(std::string(bad).substr(0, std::string(bad).find('='))), std::string::npos)
        << bad << ": " << out;
  }
}

TEST(FuseMountOptions, MountHelperCalledLikeMount8WithFstabOptions) {
  QUORUMFS_REQUIRE_FUSE();
  TestCluster cluster;
  std::string dir = cluster.dir() + "/mnt";
  ::mkdir(dir.c_str(), 0755);
  // mount(8) runs /sbin/mount.<type> SPEC DIR [-sfnv] -o OPTIONS; the helper daemonizes.
  std::string out;
  int rc = Shell(Helper() + " " + cluster.cluster_file() + " " + dir +
                     " -n -o rw,_netdev,allow_other,default_permissions,nofail,op_timeout=5",
                 &out);
  ASSERT_EQ(rc, 0) << out;
  std::string line;
  for (int i = 0; i < 100 && (line = MountLine(dir)).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(line.empty()) << "not mounted";
  EXPECT_NE(line.find("fuse.quorumfs"), std::string::npos) << line;
  EXPECT_NE(line.find("allow_other"), std::string::npos) << line;
  EXPECT_NE(line.find("default_permissions"), std::string::npos) << line;
  {
    std::ofstream f(dir + "/hello");
    f << "world";
  }
  {
    std::ifstream in(dir + "/hello");
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str(), "world");
  }
  // umount(8) works on it; the daemon exits.
  out.clear();
  EXPECT_EQ(Shell("umount " + dir, &out), 0) << out;
  for (int i = 0; i < 100 && !MountLine(dir).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(MountLine(dir).empty());
  if (!MountLine(dir).empty()) Shell("umount -l " + dir, &out);
}

TEST(FuseMountOptions, ReadOnlyMountRefusesWrites) {
  QUORUMFS_REQUIRE_FUSE();
  TestCluster cluster;
  {
    TestMount rw(cluster.cluster_file(), cluster.dir() + "/rw");
    ASSERT_TRUE(rw.ok()) << rw.Log();
    std::ofstream(rw.path("kept")) << "data";
  }
  TestMountOptions o;
  o.extra_opts = {"ro"};
  TestMount ro(cluster.cluster_file(), cluster.dir() + "/ro", o);
  ASSERT_TRUE(ro.ok()) << ro.Log();
  EXPECT_NE(MountLine(ro.dir()).find(" ro,"), std::string::npos) << MountLine(ro.dir());
  std::ifstream in(ro.path("kept"));
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "data");
  errno = 0;
  FILE* f = std::fopen(ro.path("new").c_str(), "w");
  EXPECT_EQ(f, nullptr);
  EXPECT_EQ(errno, EROFS);
  if (f) std::fclose(f);
  EXPECT_NE(::mkdir(ro.path("d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
}

// Without -o selinux the SELinux label is refused (as on GlusterFS), so that `ls -l` asks for
// it once, not once per file; other security.* attributes are stored. With it, it is stored.
TEST(FuseMountOptions, SelinuxLabelsOnlyWithTheOption) {
  QUORUMFS_REQUIRE_FUSE();
  TestCluster cluster;
  char buf[64];
  {
    TestMount m(cluster.cluster_file(), cluster.dir() + "/plain");
    ASSERT_TRUE(m.ok()) << m.Log();
    std::ofstream(m.path("f")) << "x";
    std::string f = m.path("f");
    EXPECT_EQ(::lgetxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    EXPECT_EQ(::lsetxattr(f.c_str(), "security.selinux", "l", 1, 0), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    EXPECT_EQ(::lremovexattr(f.c_str(), "security.selinux"), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
    ASSERT_EQ(::lsetxattr(f.c_str(), "security.other", "v", 1, 0), 0) << std::strerror(errno);
    EXPECT_EQ(::lgetxattr(f.c_str(), "security.other", buf, sizeof(buf)), 1);
  }
  TestMountOptions o;
  o.extra_opts = {"selinux"};
  TestMount m(cluster.cluster_file(), cluster.dir() + "/labels", o);
  ASSERT_TRUE(m.ok()) << m.Log();
  std::string f = m.path("f");
  EXPECT_EQ(::lgetxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);
  ASSERT_EQ(::lsetxattr(f.c_str(), "security.selinux", "label", 5, 0), 0) << std::strerror(errno);
  ASSERT_EQ(::lgetxattr(f.c_str(), "security.selinux", buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf, 5), "label");
  char names[256];
  ssize_t n = ::llistxattr(f.c_str(), names, sizeof(names));
  ASSERT_GT(n, 0);
  EXPECT_NE(std::string(names, static_cast<size_t>(n)).find("security.selinux"), std::string::npos);
}

}  // namespace
}  // namespace quorumfs
