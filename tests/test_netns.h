// NetLab: separate "hosts" for partition tests, built from Linux network namespaces. Each
// server and each client gets a network namespace of its own; every client is wired to every
// server by a veth pair of its own, so the link between one client and one server can be cut
// (both directions; packets are dropped silently, as a pulled cable or a dead switch port would
// drop them, not refused) and healed while every other pair keeps talking. Servers have no
// links to each other (quorumfs's servers never talk to each other). Needs root and `ip`
// (iproute2). The destructor deletes every namespace it made; a namespace left by a test that
// was killed is removed by the next NetLab (its names carry the creating process's pid).
#pragma once

#include <string>
#include <vector>

namespace quorumfs {
namespace testing {

class NetLab {
 public:
  // Whether this process can build a lab; if not, `*why` says why (for GTEST_SKIP).
  static bool Available(std::string* why);

  NetLab(int servers, int clients);  // failures are reported with ADD_FAILURE; check ok()
  ~NetLab();
  NetLab(const NetLab&) = delete;
  NetLab& operator=(const NetLab&) = delete;

  bool ok() const { return ok_; }
  // Names under /var/run/netns, for TestClusterOptions::netns and TestMountOptions::netns.
  std::string server_ns(int s) const;
  std::string client_ns(int c) const;
  // The address server `s` is reached at from every client (on its namespace's loopback).
  std::string server_host(int s) const;

  // From now on, nothing passes between client `c` and server `s` (in flight or new).
  bool Cut(int c, int s);  // false (and ADD_FAILURE) if `ip` failed
  // The link between client `c` and server `s` carries packets again.
  bool Heal(int c, int s);

 private:
  std::string client_host(int c) const;
  std::string ServerLink(int c, int s) const;  // the veth end in the server's namespace
  std::string ClientLink(int c, int s) const;
  static std::string Mac(int server_end, int c, int s);  // of one end of a pair
  bool Ip(const std::string& args);  // runs `ip <args>`; ADD_FAILURE and false if it fails

  int servers_, clients_;
  std::string prefix_;
  bool ok_ = false;
};

// Moves the calling thread into the network namespace `ns` (a name under /var/run/netns); for a
// child process between fork and exec. Returns false (errno set) if it could not.
bool EnterNetns(const std::string& ns);

}  // namespace testing
}  // namespace quorumfs
