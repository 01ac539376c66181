// ChunkId: SHA-256 of a chunk's bytes (OpenSSL EVP). Chunks are immutable and
// content-addressed, so the id is both the name and the checksum.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace quorumfs {

class ChunkId {
 public:
  static constexpr size_t kSize = 32;

  ChunkId() { bytes_.fill(0); }
  explicit ChunkId(const std::array<uint8_t, kSize>& bytes) : bytes_(bytes) {}

  // SHA-256 of `data`.
  static ChunkId Of(const void* data, size_t size);
  static ChunkId Of(std::string_view data) { return Of(data.data(), data.size()); }

  // From exactly 32 raw bytes; InvalidArgument otherwise.
  static Result<ChunkId> FromBytes(const void* data, size_t size);
  // From 64 lowercase or uppercase hex digits; InvalidArgument otherwise.
  static Result<ChunkId> FromHex(std::string_view hex);

  const std::array<uint8_t, kSize>& bytes() const { return bytes_; }
  std::string_view view() const {
    return std::string_view(reinterpret_cast<const char*>(bytes_.data()), kSize);
  }
  std::string ToHex() const;  // 64 lowercase hex digits

  bool IsZero() const;
  bool operator==(const ChunkId& o) const { return bytes_ == o.bytes_; }
  bool operator!=(const ChunkId& o) const { return bytes_ != o.bytes_; }
  bool operator<(const ChunkId& o) const { return bytes_ < o.bytes_; }

 private:
  std::array<uint8_t, kSize> bytes_;
};

struct ChunkIdHash {
  size_t operator()(const ChunkId& id) const {
    size_t h;
    __builtin_memcpy(&h, id.bytes().data(), sizeof(h));
    return h;
  }
};

// SHA-256 of `data` as raw 32 bytes (used for value hashes and placement weights).
std::array<uint8_t, 32> Sha256(const void* data, size_t size);

}  // namespace quorumfs
