#include "tests/sim/linearizability.h"

#include <algorithm>
#include <cstddef>
#include <map>
#include <sstream>
#include <unordered_set>
#include <utility>

namespace quorumfs::sim {
namespace {

// Values are interned so the register state is a small integer; 0 is "absent".
constexpr int kAbsent = 0;

class ValueTable {
 public:
  int Intern(const std::optional<std::string>& v) {
    if (!v.has_value()) return kAbsent;
    auto [it, inserted] = ids_.emplace(*v, static_cast<int>(names_.size()) + 1);
    if (inserted) names_.push_back(*v);
    return it->second;
  }
  std::optional<std::string> Name(int id) const {
    if (id == kAbsent) return std::nullopt;
    return names_[static_cast<size_t>(id) - 1];
  }

 private:
  std::map<std::string, int> ids_;
  std::vector<std::string> names_;
};

std::string QuoteValue(const std::optional<std::string>& v) {
  if (!v.has_value()) return "<absent>";
  constexpr size_t kMaxShown = 48;
  std::string out = "'";
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < v->size() && i < kMaxShown; ++i) {
    unsigned char c = static_cast<unsigned char>((*v)[i]);
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (v->size() > kMaxShown) out += "...(" + std::to_string(v->size()) + " bytes)";
  out += "'";
  return out;
}

// What an op does when linearized, after filtering.
enum class Step { kRead, kWrite, kCas, kCasMismatch };

struct CheckOp {
  size_t orig = 0;  // index into the caller's history
  Step step = Step::kRead;
  int expected = kAbsent;
  int value = kAbsent;
  bool definite = true;  // false for kUnknown: no return entry, may be omitted
};

// Applies `op` to `state`; returns false if the op cannot linearize in `state`.
bool Apply(const CheckOp& op, int state, int* next) {
  switch (op.step) {
    case Step::kRead:
      *next = state;
      return state == op.value;
    case Step::kWrite:
      *next = op.value;
      return true;
    case Step::kCas:
      *next = op.value;
      return state == op.expected;
    case Step::kCasMismatch:
      *next = state;
      return state != op.expected;
  }
  return false;
}

// Node of the doubly linked call/return list (with a sentinel head).
struct Entry {
  bool is_call = false;
  int op = -1;
  int index = -1;          // position in time order; used to measure search progress
  Entry* match = nullptr;  // call: its return entry (nullptr for unknown ops)
  Entry* prev = nullptr;
  Entry* next = nullptr;
};

// Removes a call entry and its return entry (if any) from the list.
void Lift(Entry* call) {
  call->prev->next = call->next;
  if (call->next != nullptr) call->next->prev = call->prev;
  if (Entry* ret = call->match; ret != nullptr) {
    ret->prev->next = ret->next;
    if (ret->next != nullptr) ret->next->prev = ret->prev;
  }
}

// Undoes Lift; must be called in reverse order of the Lifts.
void Unlift(Entry* call) {
  if (Entry* ret = call->match; ret != nullptr) {
    ret->prev->next = ret;
    if (ret->next != nullptr) ret->next->prev = ret;
  }
  call->prev->next = call;
  if (call->next != nullptr) call->next->prev = call;
}

// Memo of visited (linearized bitset, state) pairs. Keys live back to back in one arena of
// `words + 1` uint64s each, so the set stores only offsets.
class StateCache {
 public:
  explicit StateCache(size_t words) : words_(words), set_(1024, Hasher{this}, Equal{this}) {}

  // Returns true if the pair was not seen before (and records it).
  bool Insert(const std::vector<uint64_t>& bits, int state) {
    size_t offset = arena_.size();
    arena_.insert(arena_.end(), bits.begin(), bits.end());
    arena_.push_back(static_cast<uint64_t>(static_cast<uint32_t>(state)));
    if (set_.insert(offset).second) return true;
    arena_.resize(offset);
    return false;
  }

  size_t size() const { return set_.size(); }

 private:
  struct Hasher {
    const StateCache* cache;
    size_t operator()(size_t offset) const {
      const uint64_t* p = cache->arena_.data() + offset;
      uint64_t h = 0x9e3779b97f4a7c15ULL;
      for (size_t i = 0; i <= cache->words_; ++i) {
        h ^= p[i] + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdULL;
      }
      return static_cast<size_t>(h ^ (h >> 33));
    }
  };
  struct Equal {
    const StateCache* cache;
    bool operator()(size_t a, size_t b) const {
      const uint64_t* base = cache->arena_.data();
      return std::equal(base + a, base + a + cache->words_ + 1, base + b);
    }
  };

  size_t words_;
  std::vector<uint64_t> arena_;
  std::unordered_set<size_t, Hasher, Equal> set_;
};

std::string Interval(const Operation& op) {
  if (op.outcome == OpOutcome::kUnknown) {
    return "[" + std::to_string(op.invoke_time) + ",inf)";
  }
  return "[" + std::to_string(op.invoke_time) + "," + std::to_string(op.return_time) + "]";
}

}  // namespace

std::string DescribeOperation(const Operation& op) {
  std::string client = " by client " + std::to_string(op.client);
  std::string out;
  switch (op.kind) {
    case OpKind::kRead:
      out = "read" + client + " returning " + QuoteValue(op.value);
      break;
    case OpKind::kWrite:
      out = "write" + client + " of " + QuoteValue(op.value);
      break;
    case OpKind::kCas:
      out = "cas" + client + " " + QuoteValue(op.expected) + " -> " + QuoteValue(op.value);
      if (op.outcome == OpOutcome::kOk) out += op.cas_succeeded ? " (succeeded)" : " (mismatch)";
      break;
  }
  out += " at " + Interval(op);
  if (op.outcome == OpOutcome::kFailed) out += " (failed)";
  if (op.outcome == OpOutcome::kUnknown) out += " (outcome unknown)";
  return out;
}

std::string FormatHistory(const std::vector<Operation>& history) {
  std::ostringstream out;
  for (size_t i = 0; i < history.size(); ++i) {
    out << "#" << i << ": " << DescribeOperation(history[i]) << "\n";
  }
  return out.str();
}

CheckResult CheckRegisterHistory(const std::vector<Operation>& history, int64_t max_states) {
  // 1. Filter and translate the ops.
  ValueTable values;
  std::vector<CheckOp> ops;
  int definite_count = 0;
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& h = history[i];
    const bool unknown = h.outcome == OpOutcome::kUnknown;
    if (h.outcome == OpOutcome::kFailed) continue;
    if (h.kind == OpKind::kRead && unknown) continue;
    if (!unknown && h.return_time < h.invoke_time) {
      return {false, false,
              "malformed history: return before invocation for op #" + std::to_string(i) + ": " +
                  DescribeOperation(h)};
    }
    CheckOp op;
    op.orig = i;
    op.definite = !unknown;
    op.value = values.Intern(h.value);
    switch (h.kind) {
      case OpKind::kRead:
        op.step = Step::kRead;
        break;
      case OpKind::kWrite:
        op.step = Step::kWrite;
        break;
      case OpKind::kCas:
        op.expected = values.Intern(h.expected);
        op.step = (unknown || h.cas_succeeded) ? Step::kCas : Step::kCasMismatch;
        break;
    }
    if (op.definite) ++definite_count;
    ops.push_back(op);
  }
  const size_t unknown_count = ops.size() - static_cast<size_t>(definite_count);

  // 2. Build the time-ordered call/return list. At equal times calls sort before returns, so
  // touching intervals count as concurrent (the permissive reading of a coarse clock).
  struct Event {
    int64_t time;
    bool is_call;
    int op;
  };
  std::vector<Event> events;
  events.reserve(ops.size() * 2);
  for (size_t i = 0; i < ops.size(); ++i) {
    const Operation& h = history[ops[i].orig];
    events.push_back({h.invoke_time, true, static_cast<int>(i)});
    if (ops[i].definite) events.push_back({h.return_time, false, static_cast<int>(i)});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.is_call != b.is_call) return a.is_call;
    return a.op < b.op;
  });
  std::vector<Entry> entries(events.size() + 1);  // entries[0] is the sentinel head
  std::vector<Entry*> call_of(ops.size(), nullptr);
  std::vector<Entry*> return_of(ops.size(), nullptr);
  for (size_t i = 0; i < events.size(); ++i) {
    Entry& e = entries[i + 1];
    e.is_call = events[i].is_call;
    e.op = events[i].op;
    e.index = static_cast<int>(i);
    e.prev = &entries[i];
    entries[i].next = &e;
    (e.is_call ? call_of : return_of)[e.op] = &e;
  }
  for (size_t i = 0; i < ops.size(); ++i) call_of[i]->match = return_of[i];
  Entry* head = &entries[0];

  // 3. Depth-first just-in-time linearization.
  struct Frame {
    Entry* call;
    int state_before;
  };
  std::vector<Frame> stack;
  const size_t words = (ops.size() + 63) / 64;
  std::vector<uint64_t> linearized(words, 0);
  StateCache cache(words);
  int state = kAbsent;
  int remaining = definite_count;
  // Progress tracking for the violation report: the furthest return entry that blocked the search
  // and the partial linearization that reached it.
  int best_index = -1;
  int best_op = -1;
  int best_state = kAbsent;
  std::vector<int> best_partial;

  Entry* entry = head->next;
  while (remaining > 0) {
    // A return entry always follows while a definite op is unlinearized, so entry != nullptr.
    if (entry->is_call) {
      const CheckOp& op = ops[entry->op];
      int next_state;
      if (Apply(op, state, &next_state)) {
        const size_t w = static_cast<size_t>(entry->op) / 64;
        const uint64_t bit = uint64_t{1} << (entry->op % 64);
        linearized[w] |= bit;
        if (cache.Insert(linearized, next_state)) {
          if (static_cast<int64_t>(cache.size()) > max_states) {
            return {true, true,
                    "gave up after visiting " + std::to_string(cache.size()) +
                        " states (max_states=" + std::to_string(max_states) +
                        "); result inconclusive for " + std::to_string(ops.size()) + " ops"};
          }
          stack.push_back({entry, state});
          state = next_state;
          if (op.definite) --remaining;
          Lift(entry);
          entry = head->next;
          continue;
        }
        linearized[w] &= ~bit;
      }
      entry = entry->next;
      continue;
    }
    // A return entry of an op not yet linearized: this branch is dead.
    if (entry->index > best_index) {
      best_index = entry->index;
      best_op = entry->op;
      best_state = state;
      best_partial.clear();
      for (const Frame& f : stack) best_partial.push_back(f.call->op);
    }
    if (stack.empty()) break;
    Frame top = stack.back();
    stack.pop_back();
    state = top.state_before;
    const int undone = top.call->op;
    linearized[static_cast<size_t>(undone) / 64] &= ~(uint64_t{1} << (undone % 64));
    if (ops[undone].definite) ++remaining;
    Unlift(top.call);
    entry = top.call->next;
  }

  if (remaining == 0) {
    return {true, false,
            "linearizable: " + std::to_string(definite_count) + " definite and " +
                std::to_string(unknown_count) + " unknown-outcome ops, " +
                std::to_string(cache.size()) + " states visited"};
  }

  const Operation& culprit = history[ops[best_op].orig];
  std::ostringstream out;
  out << "no linearization for " << DescribeOperation(culprit) << " (op #" << ops[best_op].orig
      << "): the history prefix ending with this op's return is not linearizable, while every "
         "shorter prefix is.\n";
  out << "Longest partial linearization found (" << best_partial.size()
      << " ops, in order; register value afterwards " << QuoteValue(values.Name(best_state))
      << "):\n";
  constexpr size_t kMaxListed = 25;
  size_t skip = best_partial.size() > kMaxListed ? best_partial.size() - kMaxListed : 0;
  if (skip > 0) out << "  ... " << skip << " earlier ops omitted\n";
  for (size_t i = skip; i < best_partial.size(); ++i) {
    const CheckOp& op = ops[best_partial[i]];
    out << "  " << (i + 1) << ". #" << op.orig << ": " << DescribeOperation(history[op.orig])
        << "\n";
  }
  return {false, false, out.str()};
}

}  // namespace quorumfs::sim
