// Ballot: the CASPaxos proposal number (counter, proposer id). The proposer id is a random
// 64-bit number drawn at every process start, so two proposers never share a ballot, even
// across restarts or clock steps. Ballot (0, 0) is "none"; (0, creator) is the one
// skip-prepare write of a freshly allocated inode (DESIGN.md, "Metadata").
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

namespace quorumfs {

struct Ballot {
  uint64_t counter = 0;
  uint64_t proposer = 0;

  // Acceptors refuse a ballot whose counter is this or more (an accept: whose successor's, the
  // promise it makes), so that every stored ballot is in range and Next() (and a proposer's
  // next ballot) can never wrap around to counter 0, the skip-prepare ballot: a garbled or
  // hostile accept at counter 2^64-1 would otherwise leave a row promised at (0, p), which any
  // delayed accept could overwrite. Honest counters grow by one per round; they never get near.
  static constexpr uint64_t kMaxCounter = uint64_t{1} << 62;
  bool InRange() const { return counter < kMaxCounter; }

  bool IsNone() const { return counter == 0 && proposer == 0; }
  bool operator==(const Ballot& o) const { return counter == o.counter && proposer == o.proposer; }
  bool operator!=(const Ballot& o) const { return !(*this == o); }
  bool operator<(const Ballot& o) const {
    return std::tie(counter, proposer) < std::tie(o.counter, o.proposer);
  }
  bool operator>(const Ballot& o) const { return o < *this; }
  bool operator<=(const Ballot& o) const { return !(o < *this); }
  bool operator>=(const Ballot& o) const { return !(*this < o); }

  // The next ballot of the same proposer: what an acceptor promises when it accepts this one.
  Ballot Next() const { return Ballot{counter + 1, proposer}; }

  std::string ToString() const {
    return "(" + std::to_string(counter) + "," + std::to_string(proposer) + ")";
  }
};

inline Ballot MaxBallot(const Ballot& a, const Ballot& b) { return a < b ? b : a; }

}  // namespace quorumfs
