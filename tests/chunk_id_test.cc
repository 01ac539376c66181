#include "common/chunk_id.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <unordered_set>

namespace quorumfs {
namespace {

constexpr char kEmptySha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kAbcSha[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

TEST(ChunkIdTest, KnownSha256Vectors) {
  EXPECT_EQ(ChunkId::Of("").ToHex(), kEmptySha);
  EXPECT_EQ(ChunkId::Of("abc").ToHex(), kAbcSha);
  EXPECT_EQ(ChunkId::Of(nullptr, 0).ToHex(), kEmptySha);
  // FIPS 180-2 two-block vector.
  EXPECT_EQ(ChunkId::Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").ToHex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(ChunkIdTest, Sha256MatchesChunkId) {
  std::array<uint8_t, 32> raw = Sha256("abc", 3);
  EXPECT_EQ(ChunkId(raw), ChunkId::Of("abc"));
  EXPECT_EQ(raw[0], 0xba);
  EXPECT_EQ(raw[31], 0xad);
}

TEST(ChunkIdTest, LargeInput) {
  std::string million(1000000, 'a');
  EXPECT_EQ(ChunkId::Of(million).ToHex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(ChunkIdTest, HexRoundTrip) {
  ChunkId id = ChunkId::Of("abc");
  Result<ChunkId> parsed = ChunkId::FromHex(id.ToHex());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, id);

  std::string upper = kAbcSha;
  for (char& c : upper) c = static_cast<char>(toupper(c));
  Result<ChunkId> from_upper = ChunkId::FromHex(upper);
  ASSERT_TRUE(from_upper.ok()) << from_upper.status().ToString();
  EXPECT_EQ(*from_upper, id);
  EXPECT_EQ(from_upper->ToHex(), kAbcSha);  // output is always lowercase
}

TEST(ChunkIdTest, BadHexRejected) {
  std::string good = kAbcSha;

  Result<ChunkId> short_hex = ChunkId::FromHex(good.substr(0, 63));
  ASSERT_FALSE(short_hex.ok());
  EXPECT_EQ(short_hex.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_hex.status().message().find("64 hex digits"), std::string::npos);

  Result<ChunkId> long_hex = ChunkId::FromHex(good + "0");
  ASSERT_FALSE(long_hex.ok());
  EXPECT_EQ(long_hex.status().code(), StatusCode::kInvalidArgument);

  EXPECT_FALSE(ChunkId::FromHex("").ok());

  std::string bad_char = good;
  bad_char[10] = 'g';
  Result<ChunkId> with_g = ChunkId::FromHex(bad_char);
  ASSERT_FALSE(with_g.ok());
  EXPECT_EQ(with_g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(with_g.status().message().find("position 10"), std::string::npos);

  std::string with_space = good;
  with_space[63] = ' ';
  EXPECT_FALSE(ChunkId::FromHex(with_space).ok());

  std::string with_nul = good;
  with_nul[0] = '\0';
  EXPECT_FALSE(ChunkId::FromHex(with_nul).ok());
}

TEST(ChunkIdTest, FromBytes) {
  ChunkId id = ChunkId::Of("abc");
  Result<ChunkId> copy = ChunkId::FromBytes(id.bytes().data(), id.bytes().size());
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(*copy, id);
  EXPECT_EQ(copy->view(), id.view());

  Result<ChunkId> too_short = ChunkId::FromBytes(id.bytes().data(), 31);
  ASSERT_FALSE(too_short.ok());
  EXPECT_EQ(too_short.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_short.status().message().find("got 31"), std::string::npos);

  std::string thirty_three(33, 'x');
  Result<ChunkId> too_long = ChunkId::FromBytes(thirty_three.data(), thirty_three.size());
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);

  EXPECT_FALSE(ChunkId::FromBytes(nullptr, 0).ok());
}

TEST(ChunkIdTest, ZeroAndOrdering) {
  ChunkId zero;
  EXPECT_TRUE(zero.IsZero());
  EXPECT_EQ(zero.ToHex(), std::string(64, '0'));
  ChunkId a = ChunkId::Of("a");
  ChunkId b = ChunkId::Of("b");
  EXPECT_FALSE(a.IsZero());
  EXPECT_NE(a, b);
  EXPECT_TRUE(zero < a);
  EXPECT_TRUE((a < b) != (b < a));

  std::unordered_set<ChunkId, ChunkIdHash> set{a, b, ChunkId::Of("a")};
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace quorumfs
