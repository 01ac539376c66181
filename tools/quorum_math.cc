#include "tools/quorum_math.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace quorumfs {

double Binomial(int n, int k) {
  if (k < 0 || k > n) return 0;
  double r = 1;
  for (int i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r;
}

double AtLeastUp(int n, int q, double p) {
  double sum = 0;
  for (int k = std::max(q, 0); k <= n; ++k) {
    sum += Binomial(n, k) * std::pow(p, k) * std::pow(1 - p, n - k);
  }
  return sum;
}

QuorumFigures ComputeQuorum(int n, int w, int r, double p, int m) {
  QuorumFigures f;
  f.write_available = AtLeastUp(n, w, p);
  f.read_available = AtLeastUp(n, r, p);
  f.both_available = AtLeastUp(n, std::max(w, r), p);
  f.reads_see_latest = r + w > n;
  f.write_failures_tolerated = n - w;
  f.read_failures_tolerated = n - r;
  // Each replica set is available with the same probability, so by linearity the expected
  // fraction of available sets equals it.
  f.expected_sets_available = f.both_available;
  // Every N-subset is some key's replica set; all have both quorums iff at most N - max(W,R)
  // nodes of the whole cluster are down.
  f.all_sets_available = AtLeastUp(m, m - (n - std::max(w, r)), p);
  return f;
}

QuorumFigures SimulateQuorum(int n, int w, int r, double p, int m, int64_t trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution up(p);
  int64_t write_ok = 0, read_ok = 0, both_ok = 0, all_ok = 0;
  double sets_fraction_sum = 0;
  int need = std::max(w, r);
  std::vector<bool> state(m);
  for (int64_t t = 0; t < trials; ++t) {
    int up_count = 0;
    for (int i = 0; i < m; ++i) {
      state[i] = up(rng);
      up_count += state[i];
    }
    // One replica set: the first N nodes (all sets are alike under independence).
    int set_up = 0;
    for (int i = 0; i < n; ++i) set_up += state[i];
    write_ok += set_up >= w;
    read_ok += set_up >= r;
    both_ok += set_up >= need;
    // Fraction of all N-subsets with >= need up: hypergeometric count over the up nodes.
    double good = 0;
    for (int k = need; k <= n; ++k) good += Binomial(up_count, k) * Binomial(m - up_count, n - k);
    sets_fraction_sum += good / Binomial(m, n);
    all_ok += (m - up_count) <= (n - need);
  }
  QuorumFigures f;
  f.write_available = static_cast<double>(write_ok) / trials;
  f.read_available = static_cast<double>(read_ok) / trials;
  f.both_available = static_cast<double>(both_ok) / trials;
  f.reads_see_latest = r + w > n;
  f.write_failures_tolerated = n - w;
  f.read_failures_tolerated = n - r;
  f.expected_sets_available = sets_fraction_sum / trials;
  f.all_sets_available = static_cast<double>(all_ok) / trials;
  return f;
}

}  // namespace quorumfs
