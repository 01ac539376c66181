// Linearizability checker for single-register histories recorded by the deterministic simulator.
//
// Every quorumfs metadata record is an independent CASPaxos register, so a simulation run is
// checked one record (key) at a time: linearizability is P-compositional per object, which means
// a multi-key history is linearizable iff every per-key sub-history is. This file checks one
// register.
//
// Model (sequential specification) of the register:
//   - The initial value is "absent" (std::nullopt).
//   - Write(v) sets the value to v (v may be nullopt, which makes the register absent again).
//   - Read returns the current value.
//   - Cas(expected, v): if the current value equals `expected` (nullopt matches only an absent
//     register) the value becomes v and the CAS succeeds; otherwise nothing changes and the CAS
//     reports a mismatch.
//
// Algorithm: Wing & Gong / Lowe just-in-time linearization with Porcupine-style memoization of
// (set of linearized operations, register value) pairs. Worst case is exponential, so the search
// is bounded by `max_states`; see CheckRegisterHistory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quorumfs::sim {

enum class OpKind { kRead, kWrite, kCas };

// kOk: the client got a definite reply. kFailed: the operation definitely did not take effect.
// kUnknown: the client never learnt the outcome (e.g. timeout); the operation may or may not take
// effect, at any time after its invocation, with no upper bound.
enum class OpOutcome { kOk, kFailed, kUnknown };

struct Operation {
  int client = 0;  // only used in messages
  OpKind kind = OpKind::kRead;
  // Cas: the compare value (nullopt = register absent). Ignored for reads and writes.
  std::optional<std::string> expected;
  // Write/Cas: the new value. Read: the value returned (nullopt = absent).
  std::optional<std::string> value;
  // Cas with outcome kOk: true if the compare matched and the new value was installed, false if
  // the CAS returned "mismatch" (no effect). Ignored otherwise.
  bool cas_succeeded = false;
  OpOutcome outcome = OpOutcome::kOk;
  int64_t invoke_time = 0;  // any monotonic integer clock
  int64_t return_time = 0;  // must be >= invoke_time; ignored (treated as +infinity) for kUnknown
};

struct CheckResult {
  // False only when the history was proven non-linearizable (or is malformed).
  bool linearizable = true;
  // True when the search exceeded max_states; `linearizable` is then true but inconclusive.
  bool gave_up = false;
  // On a violation: the operation that completes the shortest non-linearizable prefix of the
  // history (e.g. "no linearization for read by client 3 returning 'x' at [12,15]") followed by
  // the longest partial linearization the search found. Otherwise a one-line summary.
  std::string explanation;
};

// Checks one register's history, in any order. Ops are filtered first:
//   - Reads with outcome kFailed or kUnknown are dropped (they constrain nothing).
//   - Writes and CASes with outcome kFailed are dropped (they had no effect).
//   - A CAS with outcome kOk and cas_succeeded=false behaves like a read that observed a value
//     different from `expected`: it must linearize at a point where the value != expected.
//   - Writes and CASes with outcome kUnknown may be linearized anywhere after their invocation, or
//     omitted entirely. (An unknown CAS can only be linearized where its compare matches; the
//     mismatch case is the same as omitting it.)
// Every remaining definite (kOk) operation must linearize within [invoke_time, return_time].
// Intervals are closed: an op returning at t and an op invoked at the same t count as concurrent.
// A definite op with return_time < invoke_time makes the history malformed (linearizable=false,
// explanation says so).
// The search visits at most `max_states` distinct (linearized set, value) states; beyond that it
// stops and returns linearizable=true, gave_up=true.
CheckResult CheckRegisterHistory(const std::vector<Operation>& history,
                                 int64_t max_states = 2'000'000);

// Human readable dump of a history, one op per line in the given order, for failure messages.
std::string FormatHistory(const std::vector<Operation>& history);

// One-line description of a single op, e.g. "read by client 3 returning 'x' at [12,15]".
std::string DescribeOperation(const Operation& op);

}  // namespace quorumfs::sim
