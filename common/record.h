// The two byte formats of a metadata record:
//  - AcceptorState: one acceptor's row {promised, accepted, value} (stored by chunkservers).
//  - RecordEnvelope: the value a proposer writes: the caller's payload plus a version that
//    rises by one with every applied change and the ids of the last kRecentChanges changes.
//    The ids make a retried change exactly-once: after an accept with an unknown outcome the
//    proposer looks for its own id in the value it reads next (see proposer.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ballot.h"
#include "common/status.h"

namespace quorumfs {

struct AcceptorState {
  Ballot promised;
  Ballot accepted;
  std::optional<std::string> value;  // envelope bytes; set iff accepted is not none

  std::string Encode() const;
  static Result<AcceptorState> Decode(std::string_view bytes);
  bool operator==(const AcceptorState& o) const {
    return promised == o.promised && accepted == o.accepted && value == o.value;
  }
};

// The largest encoded record value (envelope and payload) an acceptor takes; a proposer
// refuses a larger write itself instead of sending it.
constexpr size_t kMaxRecordValue = 1024 * 1024;

struct RecordEnvelope {
  static constexpr size_t kRecentChanges = 32;

  uint64_t version = 0;          // 0: the record was never written
  std::vector<uint64_t> recent;  // change ids, oldest first, at most kRecentChanges
  // The id of the change that wrote version 1, kept for the record's life: a write that would
  // have created the record was chosen iff it is the birth, however many changes followed (the
  // window of `recent` cannot tell that past kRecentChanges). 0: unknown (a record written in
  // the first envelope format and already past its window).
  uint64_t birth = 0;
  std::string payload;

  // Applies a change with id `change_id` that sets the payload.
  void Apply(uint64_t change_id, std::string new_payload);
  bool Contains(uint64_t change_id) const;

  std::string Encode() const;
  static Result<RecordEnvelope> Decode(std::string_view bytes);
};

}  // namespace quorumfs
