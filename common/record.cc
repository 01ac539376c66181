#include "common/record.h"

#include <algorithm>

#include "common/record_key.h"

namespace quorumfs {
namespace {

constexpr char kStateFormat = 1;
// 1: {format, version, n, ids, payload}; 2 adds the birth id after the version. Both decode.
constexpr char kEnvelopeFormatV1 = 1;
constexpr char kEnvelopeFormat = 2;

void PutBallot(std::string* out, const Ballot& b) {
  out->append(EncodeU64(b.counter));
  out->append(EncodeU64(b.proposer));
}

Ballot GetBallot(std::string_view in) { return Ballot{DecodeU64(in), DecodeU64(in.substr(8))}; }

}  // namespace

std::string AcceptorState::Encode() const {
  std::string out;
  out.reserve(34 + (value ? value->size() : 0));
  out.push_back(kStateFormat);
  PutBallot(&out, promised);
  PutBallot(&out, accepted);
  out.push_back(value ? 1 : 0);
  if (value) out.append(*value);
  return out;
}

Result<AcceptorState> AcceptorState::Decode(std::string_view bytes) {
  if (bytes.size() < 34 || bytes[0] != kStateFormat || static_cast<uint8_t>(bytes[33]) > 1) {
    return Status(StatusCode::kCorruption, "malformed acceptor state row");
  }
  AcceptorState s;
  s.promised = GetBallot(bytes.substr(1));
  s.accepted = GetBallot(bytes.substr(17));
  if (bytes[33] == 1) {
    s.value = std::string(bytes.substr(34));
  } else if (bytes.size() != 34) {
    return Status(StatusCode::kCorruption, "acceptor state row has bytes after an empty value");
  }
  return s;
}

void RecordEnvelope::Apply(uint64_t change_id, std::string new_payload) {
  if (++version == 1) birth = change_id;
  recent.push_back(change_id);
  if (recent.size() > kRecentChanges) recent.erase(recent.begin());
  payload = std::move(new_payload);
}

bool RecordEnvelope::Contains(uint64_t change_id) const {
  return std::find(recent.begin(), recent.end(), change_id) != recent.end();
}

std::string RecordEnvelope::Encode() const {
  std::string out;
  out.reserve(18 + 8 * recent.size() + payload.size());
  out.push_back(kEnvelopeFormat);
  out.append(EncodeU64(version));
  out.append(EncodeU64(birth));
  out.push_back(static_cast<char>(recent.size()));
  for (uint64_t id : recent) out.append(EncodeU64(id));
  out.append(payload);
  return out;
}

Result<RecordEnvelope> RecordEnvelope::Decode(std::string_view bytes) {
  const bool v1 = !bytes.empty() && bytes[0] == kEnvelopeFormatV1;
  const size_t head = v1 ? 10 : 18;  // format, version, [birth], count
  if (bytes.size() < head || (!v1 && bytes[0] != kEnvelopeFormat)) {
    return Status(StatusCode::kCorruption, "malformed record envelope");
  }
  RecordEnvelope e;
  e.version = DecodeU64(bytes.substr(1));
  if (!v1) e.birth = DecodeU64(bytes.substr(9));
  size_t n = static_cast<uint8_t>(bytes[head - 1]);
  if (n > kRecentChanges || n > e.version || bytes.size() < head + 8 * n) {
    return Status(StatusCode::kCorruption, "malformed record envelope change list");
  }
  for (size_t i = 0; i < n; ++i) e.recent.push_back(DecodeU64(bytes.substr(head + 8 * i)));
  // A first-format record still within its window shows its birth as its oldest change.
  if (v1 && e.version >= 1 && e.version == n) e.birth = e.recent.front();
  e.payload = std::string(bytes.substr(head + 8 * n));
  return e;
}

}  // namespace quorumfs
