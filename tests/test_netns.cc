#include "tests/test_netns.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace quorumfs {
namespace testing {
namespace {

// Runs a shell command; returns its exit status and (in *out) what it printed.
int Shell(const std::string& cmd, std::string* out) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen((cmd + " 2>&1").c_str(), "r"), ::pclose);
  if (!p) return -1;
  char buf[4096];
  size_t n;
  std::string text;
  while ((n = std::fread(buf, 1, sizeof(buf), p.get())) > 0) text.append(buf, n);
  int status = ::pclose(p.release());
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Deletes lab namespaces whose creating process is gone (a test killed by its timeout).
void RemoveStaleLabs() {
  std::string list;
  if (Shell("ip netns list", &list) != 0) return;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find('\n', pos);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(pos, end - pos);
    pos = end + 1;
    name = name.substr(0, name.find(' '));
    if (name.rfind("qfslab", 0) != 0) continue;
    long pid = std::atol(name.c_str() + 6);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    Shell("ip netns delete " + name, nullptr);
  }
}

}  // namespace

bool EnterNetns(const std::string& ns) {
  int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int r = ::setns(fd, CLONE_NEWNET);
  int saved = errno;
  ::close(fd);
  errno = saved;
  return r == 0;
}

bool NetLab::Available(std::string* why) {
  if (::geteuid() != 0) {
    *why = "network namespaces need root";
    return false;
  }
  std::string out;
  if (Shell("ip -V", &out) != 0) {
    *why = "no `ip` command (iproute2): " + out;
    return false;
  }
  std::string probe = "qfsprobe" + std::to_string(::getpid());
  if (Shell("ip netns add " + probe, &out) != 0) {
    *why = "ip netns add failed: " + out;
    return false;
  }
  Shell("ip netns delete " + probe, nullptr);
  return true;
}

NetLab::NetLab(int servers, int clients)
    : servers_(servers), clients_(clients), prefix_("qfslab" + std::to_string(::getpid())) {
  RemoveStaleLabs();
  for (int s = 0; s < servers_; ++s) {
    if (!Ip("netns add " + server_ns(s)) || !Ip("-n " + server_ns(s) + " link set lo up") ||
        !Ip("-n " + server_ns(s) + " addr add " + server_host(s) + "/32 dev lo")) {
      return;
    }
  }
  for (int c = 0; c < clients_; ++c) {
    if (!Ip("netns add " + client_ns(c)) || !Ip("-n " + client_ns(c) + " link set lo up") ||
        !Ip("-n " + client_ns(c) + " addr add " + client_host(c) + "/32 dev lo")) {
      return;
    }
    for (int s = 0; s < servers_; ++s) {
      // Made in the client's namespace, then one end moved to the server's: the names only
      // have to be unique within a namespace, and no link ever shows in the host's.
      std::string cl = ClientLink(c, s), sl = ServerLink(c, s);
      if (!Ip("-n " + client_ns(c) + " link add " + cl + " address " + Mac(0, c, s) +
              " type veth peer name " + sl + " address " + Mac(1, c, s)) ||
          !Ip("-n " + client_ns(c) + " link set " + sl + " netns " + server_ns(s)) ||
          !Ip("-n " + client_ns(c) + " link set " + cl + " up") ||
          !Ip("-n " + client_ns(c) + " route add " + server_host(s) + "/32 dev " + cl + " src " +
              client_host(c)) ||
          !Ip("-n " + client_ns(c) + " neigh replace " + server_host(s) + " lladdr " +
              Mac(1, c, s) + " dev " + cl + " nud permanent")) {
        return;
      }
      if (!Heal(c, s)) return;
    }
  }
  ok_ = !::testing::Test::HasFailure();
}

NetLab::~NetLab() {
  for (int c = 0; c < clients_; ++c) Shell("ip netns delete " + client_ns(c), nullptr);
  for (int s = 0; s < servers_; ++s) Shell("ip netns delete " + server_ns(s), nullptr);
}

std::string NetLab::server_ns(int s) const { return prefix_ + "s" + std::to_string(s); }
std::string NetLab::client_ns(int c) const { return prefix_ + "c" + std::to_string(c); }
// 10.77.0.0/24 and 10.78.0.0/24 never leave the lab: every route to them is in its namespaces.
std::string NetLab::server_host(int s) const { return "10.77.0." + std::to_string(s + 1); }
std::string NetLab::client_host(int c) const { return "10.78.0." + std::to_string(c + 1); }
std::string NetLab::ServerLink(int c, int s) const {
  return "s" + std::to_string(s) + "c" + std::to_string(c);
}
std::string NetLab::ClientLink(int c, int s) const {
  return "c" + std::to_string(c) + "s" + std::to_string(s);
}

// Every link end has a fixed address, and each side knows the other's (a permanent neighbour
// entry), so no ARP runs: a cut only drops packets, and a heal needs no address resolution
// (an ARP that failed during the cut would answer "No route to host" for seconds after it).
std::string NetLab::Mac(int server_end, int c, int s) {
  char mac[32];
  std::snprintf(mac, sizeof(mac), "02:00:00:%02x:%02x:%02x", server_end, c, s);
  return mac;
}

bool NetLab::Ip(const std::string& args) {
  std::string out;
  int code = Shell("ip " + args, &out);
  if (code != 0) {
    ADD_FAILURE() << "ip " << args << ": exit " << code << ": " << out;
    return false;
  }
  return true;
}

// Cutting takes the server's end of the pair down. The client's end then has no carrier: what
// the client sends is dropped at its own link, and the server, whose route to the client went
// with its link, can send nothing back. Neither side's sockets hear of it (no reset, no ICMP):
// a connection just stops carrying bytes until its own timers give up.
bool NetLab::Cut(int c, int s) {
  return Ip("-n " + server_ns(s) + " link set " + ServerLink(c, s) + " down");
}

// Healing waits until both ends report a carrier: the kernel takes up to a second to pass a
// link's carrier on (its link watcher), and until then the link still drops what is sent.
bool NetLab::Heal(int c, int s) {
  if (!Ip("-n " + server_ns(s) + " link set " + ServerLink(c, s) + " up") ||
      !Ip("-n " + server_ns(s) + " route replace " + client_host(c) + "/32 dev " +
          ServerLink(c, s) + " src " + server_host(s)) ||
      !Ip("-n " + server_ns(s) + " neigh replace " + client_host(c) + " lladdr " + Mac(0, c, s) +
          " dev " + ServerLink(c, s) + " nud permanent")) {
    return false;
  }
  for (int i = 0; i < 100; ++i) {
    std::string a, b;
    if (Shell("ip -n " + client_ns(c) + " -o link show dev " + ClientLink(c, s), &a) == 0 &&
        Shell("ip -n " + server_ns(s) + " -o link show dev " + ServerLink(c, s), &b) == 0 &&
        a.find("LOWER_UP") != std::string::npos && b.find("LOWER_UP") != std::string::npos &&
        a.find("state UP") != std::string::npos && b.find("state UP") != std::string::npos) {
      return true;
    }
    ::usleep(50 * 1000);
  }
  ADD_FAILURE() << "the link between client " << c << " and server " << s
                << " has no carrier 5 s after it was brought up";
  return false;
}

}  // namespace testing
}  // namespace quorumfs
