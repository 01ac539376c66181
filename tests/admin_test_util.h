// Helpers for the admin CLI tests (fsck_test, cli_test): run the real `quorumfs` binary as a
// subprocess, and populate or read back files through a ClusterClient's Namespace (no FUSE).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster_client.h"
#include "common/record_key.h"
#include "tests/test_netns.h"

namespace quorumfs {
namespace testing {

struct CliResult {
  int code = -1;  // exit status; -1 if killed by a signal or timed out
  std::string out, err;
  std::string All() const { return out + err; }
};

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `quorumfs args...`, capturing stdout and stderr (in files under `scratch_dir`); inside
// network namespace `netns` when one is given (partition tests).
inline CliResult RunCli(const std::vector<std::string>& args, const std::string& scratch_dir,
                        int timeout_s = 120, const std::string& netns = "") {
  static int seq = 0;
  std::string base =
      scratch_dir + "/cli." + std::to_string(::getpid()) + "." + std::to_string(seq++);
  std::string out_path = base + ".out", err_path = base + ".err";
  std::vector<std::string> full = {QUORUMFS_CLI_BIN};
  full.insert(full.end(), args.begin(), args.end());
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!netns.empty() && !EnterNetns(netns)) ::_exit(125);
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) ::dup2(out, 1);
    if (err >= 0) ::dup2(err, 2);
    std::vector<char*> argv;
    for (const auto& a : full) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  CliResult r;
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  r.code = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadWholeFile(out_path);
  r.err = ReadWholeFile(err_path);
  if (!exited) r.err += "\n[test: killed after " + std::to_string(timeout_s) + " s]";
  ::unlink(out_path.c_str());
  ::unlink(err_path.c_str());
  return r;
}

inline ClusterClientOptions ShortDeadlines() {
  ClusterClientOptions o;
  o.rpc.call_timeout = 1 * kj::SECONDS;
  o.rpc.connect_timeout = 500 * kj::MILLISECONDS;
  o.rpc.reconnect_max = 200 * kj::MILLISECONDS;
  o.proposer.round_timeout = 1 * kj::SECONDS;
  o.proposer.op_timeout = 5 * kj::SECONDS;
  o.ns.busy_timeout = 10 * kj::SECONDS;
  return o;
}

inline std::string RandomBytes(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Blocking file-system operations over one ClusterClient's Namespace.
class TestFs {
 public:
  explicit TestFs(ClusterClient& c) : c_(c) {}
  ClusterClient& client() { return c_; }

  Result<Inode> EnsureRoot() {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().EnsureRoot(); });
  }

  Result<Inode> GetAttr(uint64_t ino) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().GetAttr(ino); });
  }

  Result<Inode> Lookup(uint64_t parent, const std::string& name) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().Lookup(parent, name); });
  }

  // "/a/b" -> ("/a", "b").
  static std::pair<std::string, std::string> Split(const std::string& path) {
    size_t slash = path.rfind('/');
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    return {dir, path.substr(slash + 1)};
  }

  Result<uint64_t> Resolve(const std::string& path) {
    uint64_t ino = kRootIno;
    std::stringstream ss(path);
    std::string comp;
    while (std::getline(ss, comp, '/')) {
      if (comp.empty()) continue;
      QFS_ASSIGN_OR_RETURN(Inode in, Lookup(ino, comp));
      ino = in.ino;
    }
    return ino;
  }

  Result<Inode> Create(const std::string& path, FileType type = FileType::kRegular) {
    auto [dir, name] = Split(path);
    QFS_ASSIGN_OR_RETURN(uint64_t parent, Resolve(dir));
    CreateRequest req;
    req.type = type;
    req.mode = type == FileType::kDirectory ? 0755 : 0644;
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().Create(parent, name, req); });
  }

  Status Rename(const std::string& from, const std::string& to) {
    auto [fdir, fname] = Split(from);
    auto [tdir, tname] = Split(to);
    QFS_ASSIGN_OR_RETURN(uint64_t fparent, Resolve(fdir));
    QFS_ASSIGN_OR_RETURN(uint64_t tparent, Resolve(tdir));
    return c_.RunSync<Status>([&] { return c_.ns().Rename(fparent, fname, tparent, tname, 0); });
  }

  Status Unlink(const std::string& path) {
    auto [dir, name] = Split(path);
    QFS_ASSIGN_OR_RETURN(uint64_t parent, Resolve(dir));
    return c_.RunSync<Status>([&] { return c_.ns().Unlink(parent, name); });
  }

  // Creates `path` holding `data`: every chunk-size piece is put as a chunk, then the layout
  // is published with each slot changed from a hole.
  Result<Inode> WriteFile(const std::string& path, const std::string& data) {
    QFS_ASSIGN_OR_RETURN(Inode in, Create(path));
    uint64_t cs = in.chunk_size;
    LayoutUpdate update;
    for (uint64_t off = 0, i = 0; off < data.size(); off += cs, ++i) {
      std::string piece = data.substr(off, cs);
      uint32_t len = static_cast<uint32_t>(piece.size());
      QFS_ASSIGN_OR_RETURN(ChunkId id, c_.PutChunk(std::move(piece)));
      update.slots.push_back(LayoutUpdate::SlotChange{i, Slot{}, Slot{id, len}});
    }
    update.written_end = data.size();
    auto conflict = std::make_shared<LayoutConflict>();
    return c_.RunSync<Result<Inode>>(
        [&] { return c_.ns().PublishLayout(in.ino, update, conflict); });
  }

  // The file's bytes: GetAttr, then every slot's chunk (holes read as zeros).
  Result<std::string> ReadFile(uint64_t ino) {
    QFS_ASSIGN_OR_RETURN(Inode in, GetAttr(ino));
    std::string out;
    for (const auto& s : in.slots) {
      if (s.hole()) {
        out.append(in.chunk_size, '\0');
        continue;
      }
      QFS_ASSIGN_OR_RETURN(std::string bytes, c_.GetChunk(s.id));
      if (bytes.size() < s.length) return Internal("chunk shorter than its slot");
      bytes.resize(s.length);
      if (s.length < in.chunk_size) bytes.resize(in.chunk_size, '\0');
      out += bytes;
    }
    out.resize(in.size, '\0');
    return out;
  }

  // Every entry under `dir` (recursively), as path -> ino.
  Result<std::multimap<uint64_t, std::string>> Walk(uint64_t dir = kRootIno,
                                                    const std::string& path = "") {
    std::multimap<uint64_t, std::string> out;
    uint64_t offset = 0;
    for (;;) {
      auto page = c_.RunSync<Result<DirListing>>([&] { return c_.ns().ReadDir(dir, offset, 256); });
      if (!page.ok()) return page.status();
      for (const auto& e : page->entries) {
        std::string child = path + "/" + e.name;
        out.emplace(e.ino, child);
        if (e.type == FileType::kDirectory) {
          QFS_ASSIGN_OR_RETURN(auto sub, Walk(e.ino, child));
          out.insert(sub.begin(), sub.end());
        }
      }
      if (page->end || page->entries.empty()) break;
      offset = page->entries.back().offset;
    }
    return out;
  }

 private:
  ClusterClient& c_;
};

// Chunk files of `id` under one node's data dir.
inline std::string ChunkPath(const std::string& data_dir, const ChunkId& id) {
  std::string hex = id.ToHex();
  return data_dir + "/chunks/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex;
}

inline bool FileExists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

}  // namespace testing
}  // namespace quorumfs
