#include "common/record_key.h"

#include "common/chunk_id.h"

namespace quorumfs {

std::string EncodeU64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}

uint64_t DecodeU64(std::string_view eight) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(eight[i]);
  return v;
}

std::string AllocatorKey(uint64_t shard) { return "A/" + EncodeU64(shard); }
std::string InodeKey(uint64_t ino) { return "I/" + EncodeU64(ino); }
bool IsInodeKey(std::string_view key) { return key.substr(0, 2) == "I/"; }
std::string LayoutPageKey(uint64_t ino, uint64_t page) {
  return "C/" + EncodeU64(ino) + "/" + EncodeU64(page);
}
std::string DirEntryPrefix(uint64_t parent) { return "D/" + EncodeU64(parent) + "/"; }
std::string DirEntryKey(uint64_t parent, std::string_view name) {
  return DirEntryPrefix(parent) + EncodeU64(NameHash64(name)) + "/" + std::string(name);
}
std::string TxnKey(uint64_t txn) { return "X/" + EncodeU64(txn); }
std::string LockKey(std::string_view name) { return "L/" + std::string(name); }
std::string FileLocksKey(uint64_t ino) { return "F/" + EncodeU64(ino); }

uint64_t NameHash64(std::string_view name) {
  auto digest = Sha256(name.data(), name.size());
  return DecodeU64(std::string_view(reinterpret_cast<const char*>(digest.data()), 8));
}

Status ValidateRecordKey(std::string_view key) {
  if (key.size() > kMaxRecordKeySize) {
    return InvalidArgument("record key of " + std::to_string(key.size()) + " bytes (max " +
                           std::to_string(kMaxRecordKeySize) + ")");
  }
  if (key.size() < 3 || key[1] != '/') {
    return InvalidArgument("malformed record key (want <kind>/...)");
  }
  auto wrong_length = [&](const char* what) {
    return InvalidArgument(std::string("malformed ") + what + " key of " +
                           std::to_string(key.size()) + " bytes");
  };
  switch (key[0]) {
    case 'A':
    case 'I':
    case 'X':
    case 'F':
      if (key.size() != 10)
        return wrong_length(key[0] == 'A'   ? "allocator"
                            : key[0] == 'I' ? "inode"
                            : key[0] == 'X' ? "transaction"
                                            : "file lock");
      return Status::Ok();
    case 'C':
      if (key.size() != 19 || key[10] != '/') return wrong_length("layout page");
      return Status::Ok();
    case 'D': {
      if (key.size() < 20 || key[10] != '/' || key[19] != '/') return wrong_length("entry");
      std::string_view name = key.substr(20);
      if (name.empty()) return InvalidArgument("directory entry key with empty name");
      if (name.size() > kMaxNameSize)
        return Status(StatusCode::kNameTooLong, "name over 255 bytes");
      if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
        return InvalidArgument("directory entry name contains '/' or NUL");
      }
      if (DecodeU64(key.substr(11, 8)) != NameHash64(name)) {
        return InvalidArgument("directory entry key's name hash does not match its name");
      }
      return Status::Ok();
    }
    case 'L':
      if (key.size() > 2 + 64) return wrong_length("lock");
      return Status::Ok();
    default:
      return InvalidArgument(std::string("unknown record key prefix '") +
                             (key[0] >= 0x20 && key[0] < 0x7f
                                  ? std::string(1, key[0])
                                  : "\\x" + std::to_string(static_cast<uint8_t>(key[0]))) +
                             "/'");
  }
}

std::string RecordPlacementKey(std::string_view key) {
  switch (key[0]) {
    case 'I':
    case 'C':
    case 'D':
    case 'X':
    case 'F':
      return std::string(key.substr(2, 8));
    default:
      return std::string(key);
  }
}

std::string FloorRangeOf(std::string_view key) {
  switch (key[0]) {
    case 'I':
      return "I/" + EncodeU64(DecodeU64(key.substr(2, 8)) >> kInoBlockBits);
    case 'C':
    case 'D':
      return std::string(key.substr(0, 10));
    case 'X':
      return "X/";
    default:
      return std::string(key);
  }
}

std::string DescribeKey(std::string_view key) {
  if (!ValidateRecordKey(key).ok()) return "<malformed key>";
  switch (key[0]) {
    case 'A':
    case 'I':
    case 'X':
    case 'F':
      return std::string(1, key[0]) + "/" + std::to_string(DecodeU64(key.substr(2, 8)));
    case 'C':
      return "C/" + std::to_string(DecodeU64(key.substr(2, 8))) + "/" +
             std::to_string(DecodeU64(key.substr(11, 8)));
    case 'D':
      return "D/" + std::to_string(DecodeU64(key.substr(2, 8))) + "/'" +
             std::string(key.substr(20)) + "'";
    default:
      return std::string(key);
  }
}

}  // namespace quorumfs
