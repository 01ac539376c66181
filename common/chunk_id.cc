#include "common/chunk_id.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace quorumfs {
namespace {

// SHA-256 is fetched once from the default provider (OpenSSL 3 explicit fetch avoids a
// provider lookup on every digest). It is never freed: it lives for the whole process.
const EVP_MD* Sha256Md() {
  static const EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) {
      std::fprintf(stderr, "quorumfs: OpenSSL cannot provide SHA256\n");
      std::abort();
    }
    return m;
  }();
  return md;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// One reusable digest context per thread.
EVP_MD_CTX* ThreadCtx() {
  thread_local std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr) {
    std::fprintf(stderr, "quorumfs: EVP_MD_CTX_new failed\n");
    std::abort();
  }
  return ctx.get();
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::array<uint8_t, 32> Sha256(const void* data, size_t size) {
  std::array<uint8_t, 32> out{};
  EVP_MD_CTX* ctx = ThreadCtx();
  unsigned int len = 0;
  // A digest failure here means a broken OpenSSL installation, not bad input: it is a bug
  // that no caller could handle, so stop rather than return a wrong hash.
  if (EVP_DigestInit_ex2(ctx, Sha256Md(), nullptr) != 1 ||
      (size > 0 && EVP_DigestUpdate(ctx, data, size) != 1) ||
      EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size()) {
    std::fprintf(stderr, "quorumfs: SHA-256 digest failed\n");
    std::abort();
  }
  return out;
}

ChunkId ChunkId::Of(const void* data, size_t size) { return ChunkId(Sha256(data, size)); }

Result<ChunkId> ChunkId::FromBytes(const void* data, size_t size) {
  if (size != kSize) {
    return InvalidArgument("chunk id must be " + std::to_string(kSize) + " bytes, got " +
                           std::to_string(size));
  }
  std::array<uint8_t, kSize> bytes;
  std::memcpy(bytes.data(), data, kSize);
  return ChunkId(bytes);
}

Result<ChunkId> ChunkId::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) {
    return InvalidArgument("chunk id must be " + std::to_string(2 * kSize) + " hex digits, got " +
                           std::to_string(hex.size()));
  }
  std::array<uint8_t, kSize> bytes;
  for (size_t i = 0; i < kSize; ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      size_t bad = hi < 0 ? 2 * i : 2 * i + 1;
      return InvalidArgument("chunk id has a non-hex character at position " + std::to_string(bad));
    }
    bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return ChunkId(bytes);
}

std::string ChunkId::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * kSize, '0');
  for (size_t i = 0; i < kSize; ++i) {
    out[2 * i] = kDigits[bytes_[i] >> 4];
    out[2 * i + 1] = kDigits[bytes_[i] & 0x0f];
  }
  return out;
}

bool ChunkId::IsZero() const {
  for (uint8_t b : bytes_) {
    if (b != 0) return false;
  }
  return true;
}

}  // namespace quorumfs
