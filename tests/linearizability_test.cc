// Tests for the register linearizability checker used by the deterministic simulator.
#include "tests/sim/linearizability.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace quorumfs::sim {
namespace {

using V = std::optional<std::string>;

Operation Read(int client, V value, int64_t invoke, int64_t ret,
               OpOutcome outcome = OpOutcome::kOk) {
  Operation op;
  op.client = client;
  op.kind = OpKind::kRead;
  op.value = std::move(value);
  op.outcome = outcome;
  op.invoke_time = invoke;
  op.return_time = ret;
  return op;
}

Operation Write(int client, V value, int64_t invoke, int64_t ret,
                OpOutcome outcome = OpOutcome::kOk) {
  Operation op;
  op.client = client;
  op.kind = OpKind::kWrite;
  op.value = std::move(value);
  op.outcome = outcome;
  op.invoke_time = invoke;
  op.return_time = ret;
  return op;
}

Operation Cas(int client, V expected, V value, bool succeeded, int64_t invoke, int64_t ret,
              OpOutcome outcome = OpOutcome::kOk) {
  Operation op;
  op.client = client;
  op.kind = OpKind::kCas;
  op.expected = std::move(expected);
  op.value = std::move(value);
  op.cas_succeeded = succeeded;
  op.outcome = outcome;
  op.invoke_time = invoke;
  op.return_time = ret;
  return op;
}

Operation UnknownWrite(int client, V value, int64_t invoke) {
  // return_time is deliberately garbage: it must be ignored for kUnknown.
  return Write(client, std::move(value), invoke, invoke - 1000, OpOutcome::kUnknown);
}

void ExpectLinearizable(const std::vector<Operation>& h) {
  CheckResult r = CheckRegisterHistory(h);
  EXPECT_TRUE(r.linearizable) << r.explanation << "\n" << FormatHistory(h);
  EXPECT_FALSE(r.gave_up) << r.explanation;
}

// Returns the explanation so callers can check which op was blamed.
std::string ExpectRejected(const std::vector<Operation>& h) {
  CheckResult r = CheckRegisterHistory(h);
  EXPECT_FALSE(r.linearizable) << r.explanation << "\n" << FormatHistory(h);
  EXPECT_FALSE(r.gave_up) << r.explanation;
  return r.explanation;
}

TEST(LinearizabilityTest, EmptyHistory) { ExpectLinearizable({}); }

TEST(LinearizabilityTest, InitialValueIsAbsent) {
  ExpectLinearizable({Read(1, std::nullopt, 0, 1)});
  ExpectRejected({Read(1, "a", 0, 1)});
}

TEST(LinearizabilityTest, SequentialHistory) {
  ExpectLinearizable({
      Read(1, std::nullopt, 0, 1),
      Write(1, "a", 2, 3),
      Read(2, "a", 4, 5),
      Write(2, "b", 6, 7),
      Read(1, "b", 8, 9),
      Cas(3, "b", "c", true, 10, 11),
      Read(1, "c", 12, 13),
      Cas(2, "a", "d", false, 14, 15),
      Read(2, "c", 16, 17),
      Write(1, std::nullopt, 18, 19),  // delete
      Read(3, std::nullopt, 20, 21),
      Cas(3, std::nullopt, "e", true, 22, 23),
      Read(1, "e", 24, 25),
  });
}

TEST(LinearizabilityTest, InputOrderDoesNotMatter) {
  ExpectLinearizable({
      Read(2, "b", 8, 9),
      Write(1, "b", 6, 7),
      Read(2, "a", 4, 5),
      Write(1, "a", 2, 3),
  });
}

TEST(LinearizabilityTest, ConcurrentWritesReadsSeeEither) {
  // Two overlapping writes; reads during them may see absent, a or b, in a consistent order.
  const Operation wa = Write(1, "a", 0, 10);
  const Operation wb = Write(2, "b", 0, 10);
  ExpectLinearizable({wa, wb, Read(3, "a", 2, 3), Read(4, "b", 4, 5), Read(3, "b", 11, 12)});
  ExpectLinearizable({wa, wb, Read(3, "b", 2, 3), Read(4, "a", 4, 5), Read(3, "a", 11, 12)});
  ExpectLinearizable({wa, wb, Read(3, std::nullopt, 1, 2), Read(4, "a", 4, 5)});
  // Two concurrent reads may disagree while the writes are in flight.
  ExpectLinearizable({wa, wb, Read(3, "a", 2, 6), Read(4, "b", 2, 6)});
  // But once a reader saw b after another saw a, the value cannot flip back to a.
  std::string why =
      ExpectRejected({wa, wb, Read(3, "a", 2, 3), Read(4, "b", 4, 5), Read(5, "a", 6, 7)});
  EXPECT_NE(why.find("read by client 5 returning 'a' at [6,7]"), std::string::npos) << why;
  // After both writes complete, reads must agree with each other.
  ExpectRejected({wa, wb, Read(3, "a", 11, 12), Read(4, "b", 13, 14)});
  // And cannot go back to absent.
  ExpectRejected({wa, wb, Read(3, std::nullopt, 11, 12)});
}

TEST(LinearizabilityTest, TouchingIntervalsAreConcurrent) {
  // A write returning at 5 and a read invoked at 5 may be ordered either way.
  ExpectLinearizable({Write(1, "a", 0, 5), Read(2, std::nullopt, 5, 6)});
  ExpectRejected({Write(1, "a", 0, 5), Read(2, std::nullopt, 6, 7)});
}

TEST(LinearizabilityTest, StaleReadAfterCompletedWriteRejected) {
  std::string why = ExpectRejected({
      Write(1, "a", 0, 1),
      Write(2, "b", 2, 3),
      Read(3, "a", 4, 5),
      Read(4, "b", 6, 7),
  });
  EXPECT_NE(why.find("no linearization for read by client 3 returning 'a' at [4,5]"),
            std::string::npos)
      << why;
  // The partial linearization shows how far the search got.
  EXPECT_NE(why.find("write by client 2 of 'b' at [2,3]"), std::string::npos) << why;
}

TEST(LinearizabilityTest, ReadOfValueNeverWrittenRejected) {
  std::string why = ExpectRejected({
      Write(1, "a", 0, 10),
      Read(2, "a", 1, 3),
      Read(3, "ghost", 4, 6),
      Read(2, "a", 7, 9),
  });
  EXPECT_NE(why.find("read by client 3 returning 'ghost' at [4,6]"), std::string::npos) << why;
}

TEST(LinearizabilityTest, TwoCasFromSameValueBothSucceedingRejected) {
  std::string why = ExpectRejected({
      Write(1, "a", 0, 1),
      Cas(2, "a", "b", true, 2, 10),
      Cas(3, "a", "c", true, 3, 9),
  });
  EXPECT_NE(why.find("cas by client"), std::string::npos) << why;
  // Fine if the value was reset to a in between.
  ExpectLinearizable({
      Write(1, "a", 0, 1),
      Cas(2, "a", "b", true, 2, 10),
      Write(4, "a", 2, 10),
      Cas(3, "a", "c", true, 3, 9),
  });
  // Fine if only one succeeded and the other reported a mismatch.
  ExpectLinearizable({
      Write(1, "a", 0, 1),
      Cas(2, "a", "b", true, 2, 10),
      Cas(3, "a", "c", false, 3, 9),
      Read(1, "b", 11, 12),
  });
}

TEST(LinearizabilityTest, CasSuccessRequiresMatchingValue) {
  ExpectRejected({Write(1, "a", 0, 1), Cas(2, "x", "b", true, 2, 3)});
  ExpectRejected({Cas(2, "a", "b", true, 0, 1)});  // register is absent
  ExpectLinearizable({Cas(2, std::nullopt, "b", true, 0, 1), Read(1, "b", 2, 3)});
  // The new value is installed.
  ExpectRejected({Write(1, "a", 0, 1), Cas(2, "a", "b", true, 2, 3), Read(1, "a", 4, 5)});
}

TEST(LinearizabilityTest, CasFailureConsistent) {
  // Mismatch against a different value: fine, and it has no effect.
  ExpectLinearizable({Write(1, "a", 0, 1), Cas(2, "b", "c", false, 2, 3), Read(1, "a", 4, 5)});
  // Mismatch expecting absent on a present value.
  ExpectLinearizable({Write(1, "a", 0, 1), Cas(2, std::nullopt, "c", false, 2, 3)});
  // Mismatch concurrent with the write that installs `expected`: linearize it before the write.
  ExpectLinearizable({Cas(2, std::nullopt, "c", false, 0, 3), Write(1, "a", 1, 2)});
  ExpectLinearizable({Write(1, "a", 0, 1), Cas(2, "a", "c", false, 2, 5), Write(1, "b", 3, 4)});
}

TEST(LinearizabilityTest, CasFailureInconsistent) {
  std::string why =
      ExpectRejected({Write(1, "a", 0, 1), Cas(2, "a", "c", false, 2, 3), Read(1, "a", 4, 5)});
  EXPECT_NE(why.find("cas by client 2 'a' -> 'c' (mismatch) at [2,3]"), std::string::npos) << why;
  // Mismatch expecting absent on the initial (absent) register.
  ExpectRejected({Cas(2, std::nullopt, "c", false, 0, 1)});
  // A mismatching CAS has no effect.
  ExpectRejected({Write(1, "a", 0, 1), Cas(2, "b", "c", false, 2, 3), Read(1, "c", 4, 5)});
}

TEST(LinearizabilityTest, FailedOpsAreDropped) {
  // A failed write never took effect.
  ExpectRejected({Write(1, "a", 0, 1, OpOutcome::kFailed), Read(2, "a", 2, 3)});
  ExpectLinearizable({Write(1, "a", 0, 1, OpOutcome::kFailed), Read(2, std::nullopt, 2, 3)});
  ExpectRejected({Cas(1, std::nullopt, "a", false, 0, 1, OpOutcome::kFailed), Read(2, "a", 2, 3)});
  // Failed and unknown reads constrain nothing, whatever they carry.
  ExpectLinearizable({Write(1, "a", 0, 1), Read(2, "junk", 2, 3, OpOutcome::kFailed),
                      Read(2, "junk", 4, 5, OpOutcome::kUnknown), Read(3, "a", 6, 7)});
}

TEST(LinearizabilityTest, UnknownWriteLaterObservedOk) {
  ExpectLinearizable({
      UnknownWrite(1, "a", 5),
      Read(2, std::nullopt, 6, 7),
      Read(3, std::nullopt, 50, 60),
      Read(2, "a", 1000, 1001),  // no upper bound on when it takes effect
      Read(3, "a", 1002, 1003),
  });
  // Once observed, it has taken effect and stays.
  ExpectRejected({
      UnknownWrite(1, "a", 5),
      Read(2, "a", 10, 11),
      Read(3, std::nullopt, 12, 13),
  });
}

TEST(LinearizabilityTest, UnknownWriteNeverObservedOk) {
  ExpectLinearizable({
      Write(1, "a", 0, 1),
      UnknownWrite(2, "b", 2),
      Read(3, "a", 3, 4),
      Read(3, "a", 100, 101),
      Write(1, "c", 102, 103),
      Read(3, "c", 104, 105),
  });
  ExpectLinearizable({UnknownWrite(2, "b", 0)});
}

TEST(LinearizabilityTest, UnknownWriteObservedBeforeInvocationRejected) {
  std::string why = ExpectRejected({
      Read(3, "a", 0, 5),
      UnknownWrite(1, "a", 10),
      Read(4, "a", 11, 12),
  });
  EXPECT_NE(why.find("read by client 3 returning 'a' at [0,5]"), std::string::npos) << why;
}

TEST(LinearizabilityTest, UnknownCas) {
  const Operation cas = Cas(2, "a", "b", false, 3, 0, OpOutcome::kUnknown);
  ExpectLinearizable({Write(1, "a", 0, 1), cas, Read(3, "b", 10, 11)});
  ExpectLinearizable({Write(1, "a", 0, 1), cas, Read(3, "a", 10, 11)});
  // Its compare cannot match: the register never held a.
  ExpectRejected({Write(1, "x", 0, 1), cas, Read(3, "b", 10, 11)});
  // Linearizing it only where the compare matches: a is written after the CAS was invoked.
  ExpectLinearizable({cas, Write(1, "a", 5, 6), Read(3, "b", 10, 11)});
}

TEST(LinearizabilityTest, MalformedHistoryRejected) {
  CheckResult r = CheckRegisterHistory({Write(1, "a", 10, 5)});
  EXPECT_FALSE(r.linearizable);
  EXPECT_NE(r.explanation.find("malformed"), std::string::npos) << r.explanation;
}

TEST(LinearizabilityTest, GivesUpWhenStateBudgetExceeded) {
  std::vector<Operation> h;
  for (int i = 0; i < 10; ++i) h.push_back(Write(i, "v" + std::to_string(i), 0, 100));
  h.push_back(Read(0, "v3", 101, 102));
  CheckResult r = CheckRegisterHistory(h, /*max_states=*/3);
  EXPECT_TRUE(r.linearizable);
  EXPECT_TRUE(r.gave_up);
  EXPECT_NE(r.explanation.find("gave up"), std::string::npos) << r.explanation;
  // With the default budget it is decided.
  ExpectLinearizable(h);
  // Even a violating history reports gave_up rather than a verdict if the budget runs out first.
  h.back() = Read(0, "never", 101, 102);
  r = CheckRegisterHistory(h, /*max_states=*/3);
  EXPECT_TRUE(r.linearizable);
  EXPECT_TRUE(r.gave_up);
}

TEST(LinearizabilityTest, FormatHistory) {
  std::string s = FormatHistory({
      Write(1, "a", 0, 1),
      Read(2, std::nullopt, 2, 3),
      Cas(3, "a", "b", true, 4, 5),
      UnknownWrite(4, std::string("x\n", 2), 6),
      Write(5, "z", 7, 8, OpOutcome::kFailed),
  });
  EXPECT_EQ(s,
            "#0: write by client 1 of 'a' at [0,1]\n"
            "#1: read by client 2 returning <absent> at [2,3]\n"
            "#2: cas by client 3 'a' -> 'b' (succeeded) at [4,5]\n"
            "#3: write by client 4 of 'x\\x0a' at [6,inf) (outcome unknown)\n"
            "#4: write by client 5 of 'z' at [7,8] (failed)\n");
}

// Generates a history from a real sequential register: op i takes effect at time 100*i and its
// interval extends a random amount either side, so up to ~6 ops overlap. Values come from a small
// domain (repeats make the search harder). Some writes/CASes time out (kUnknown; they take effect
// or not) and some fail cleanly (kFailed; no effect).
std::vector<Operation> RandomHistory(uint32_t seed, int n) {
  std::mt19937 rng(seed);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto random_value = [&]() -> V {
    int v = uniform(0, 5);
    if (v == 0) return std::nullopt;
    return "v" + std::to_string(v);
  };
  V reg;
  std::vector<Operation> h;
  for (int i = 0; i < n; ++i) {
    const int64_t point = 100 * int64_t{i};
    const int64_t invoke = point - uniform(0, 300);
    const int64_t ret = point + uniform(0, 300);
    const int client = uniform(0, 7);
    const int kind = uniform(0, 99);
    const int fate = uniform(0, 99);
    const OpOutcome outcome =
        fate < 6 ? OpOutcome::kUnknown : (fate < 10 ? OpOutcome::kFailed : OpOutcome::kOk);
    const bool applies =
        outcome == OpOutcome::kOk || (outcome == OpOutcome::kUnknown && uniform(0, 1) == 1);
    if (kind < 45) {
      h.push_back(Read(client, reg, invoke, ret, outcome));
    } else if (kind < 75) {
      V value = random_value();
      if (applies) reg = value;
      h.push_back(Write(client, value, invoke, ret, outcome));
    } else {
      V expected = uniform(0, 1) == 0 ? reg : random_value();
      V value = random_value();
      const bool matched = expected == reg;
      if (applies && matched) reg = value;
      h.push_back(Cas(client, expected, value, matched, invoke, ret, outcome));
    }
  }
  return h;
}

TEST(LinearizabilityTest, RandomHistoriesFromRealRegisterAreLinearizable) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::vector<Operation> h = RandomHistory(seed, 200);
    auto start = std::chrono::steady_clock::now();
    CheckResult r = CheckRegisterHistory(h);
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(r.linearizable) << "seed " << seed << ": " << r.explanation << "\n"
                                << FormatHistory(h);
    EXPECT_FALSE(r.gave_up) << "seed " << seed << ": " << r.explanation;
    EXPECT_LT(elapsed, std::chrono::seconds(1)) << "seed " << seed;
  }
}

TEST(LinearizabilityTest, RandomHistoryWithCorruptedReadIsRejected) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::vector<Operation> h = RandomHistory(seed, 200);
    // Corrupt a definite read in the middle of the history.
    size_t victim = h.size();
    for (size_t i = h.size() / 2; i < h.size(); ++i) {
      if (h[i].kind == OpKind::kRead && h[i].outcome == OpOutcome::kOk) {
        victim = i;
        break;
      }
    }
    ASSERT_LT(victim, h.size()) << "seed " << seed;
    h[victim].value = "corrupt";
    auto start = std::chrono::steady_clock::now();
    CheckResult r = CheckRegisterHistory(h);
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_FALSE(r.linearizable) << "seed " << seed;
    EXPECT_FALSE(r.gave_up) << "seed " << seed << ": " << r.explanation;
    EXPECT_LT(elapsed, std::chrono::seconds(1)) << "seed " << seed;
    // The prefix before the corrupted read's return is still linearizable, so it is the culprit.
    EXPECT_NE(r.explanation.find("no linearization for " + DescribeOperation(h[victim])),
              std::string::npos)
        << "seed " << seed << ": " << r.explanation;
  }
}

// Reference checker: tries every ordering of every admissible subset of ops. Only for tiny inputs.
bool BruteForceLinearizable(const std::vector<Operation>& history) {
  std::vector<const Operation*> ops;
  for (const Operation& op : history) {
    if (op.outcome == OpOutcome::kFailed) continue;
    if (op.kind == OpKind::kRead && op.outcome == OpOutcome::kUnknown) continue;
    ops.push_back(&op);
  }
  std::vector<size_t> unknown;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i]->outcome == OpOutcome::kUnknown) unknown.push_back(i);
  }
  for (uint32_t mask = 0; mask < (1u << unknown.size()); ++mask) {
    std::vector<size_t> chosen;
    for (size_t i = 0, u = 0; i < ops.size(); ++i) {
      if (u < unknown.size() && unknown[u] == i) {
        if (mask & (1u << u)) chosen.push_back(i);
        ++u;
      } else {
        chosen.push_back(i);
      }
    }
    do {
      bool ok = true;
      // Real-time order: an op that returned strictly before another was invoked precedes it.
      for (size_t a = 0; a < chosen.size() && ok; ++a) {
        for (size_t b = a + 1; b < chosen.size() && ok; ++b) {
          const Operation& later = *ops[chosen[b]];
          if (later.outcome == OpOutcome::kOk && later.return_time < ops[chosen[a]]->invoke_time) {
            ok = false;
          }
        }
      }
      V reg;
      for (size_t k = 0; k < chosen.size() && ok; ++k) {
        const Operation& op = *ops[chosen[k]];
        switch (op.kind) {
          case OpKind::kRead:
            ok = reg == op.value;
            break;
          case OpKind::kWrite:
            reg = op.value;
            break;
          case OpKind::kCas:
            if (op.outcome == OpOutcome::kOk && !op.cas_succeeded) {
              ok = reg != op.expected;
            } else {
              ok = reg == op.expected;
              reg = op.value;
            }
            break;
        }
      }
      if (ok) return true;
    } while (std::next_permutation(chosen.begin(), chosen.end()));
  }
  return false;
}

TEST(LinearizabilityTest, MatchesBruteForceOnSmallRandomHistories) {
  std::mt19937 rng(12345);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto random_value = [&]() -> V {
    int v = uniform(0, 2);
    if (v == 0) return std::nullopt;
    return std::string(1, static_cast<char>('a' + v - 1));
  };
  int accepted = 0;
  int rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<Operation> h;
    const int n = uniform(1, 6);
    for (int i = 0; i < n; ++i) {
      const int64_t invoke = uniform(0, 10);
      const int64_t ret = invoke + uniform(0, 4);
      const int fate = uniform(0, 9);
      const OpOutcome outcome =
          fate == 0 ? OpOutcome::kUnknown : (fate == 1 ? OpOutcome::kFailed : OpOutcome::kOk);
      switch (uniform(0, 2)) {
        case 0:
          h.push_back(Read(i, random_value(), invoke, ret, outcome));
          break;
        case 1:
          h.push_back(Write(i, random_value(), invoke, ret, outcome));
          break;
        default:
          h.push_back(
              Cas(i, random_value(), random_value(), uniform(0, 1) == 1, invoke, ret, outcome));
          break;
      }
    }
    const bool expected = BruteForceLinearizable(h);
    CheckResult r = CheckRegisterHistory(h);
    ASSERT_FALSE(r.gave_up);
    ASSERT_EQ(r.linearizable, expected) << r.explanation << "\n" << FormatHistory(h);
    (expected ? accepted : rejected)++;
  }
  // Both verdicts are well represented.
  EXPECT_GT(accepted, 500);
  EXPECT_GT(rejected, 500);
}

}  // namespace
}  // namespace quorumfs::sim
