// Quorum availability arithmetic for `quorumfs quorum`. Nodes fail independently and are up
// with probability p. A replica set of N nodes can take a write while at least W of its members
// are up, a read while at least R are.
#pragma once

#include <cstdint>

namespace quorumfs {

// C(n, k) as a double (exact for the small n used here).
double Binomial(int n, int k);

// P(at least q of n independent nodes are up) = sum_{k>=q} C(n,k) p^k (1-p)^(n-k).
double AtLeastUp(int n, int q, double p);

struct QuorumFigures {
  double write_available = 0;        // one replica set: >= W up
  double read_available = 0;         // one replica set: >= R up
  double both_available = 0;         // one replica set: >= max(W, R) up
  bool reads_see_latest = false;     // R + W > N
  int write_failures_tolerated = 0;  // N - W
  int read_failures_tolerated = 0;   // N - R
  // In a cluster of M nodes where placement uses every N-subset (rendezvous over many keys):
  double expected_sets_available = 0;  // expected fraction of replica sets with both quorums
  double all_sets_available = 0;       // every replica set has both quorums
};

QuorumFigures ComputeQuorum(int n, int w, int r, double p, int m);

// The same figures estimated by Monte Carlo over `trials` random cluster states.
QuorumFigures SimulateQuorum(int n, int w, int r, double p, int m, int64_t trials, uint64_t seed);

}  // namespace quorumfs
