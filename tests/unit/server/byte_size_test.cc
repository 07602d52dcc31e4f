#include "server/byte_size.h"

#include <cstdint>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::server {
namespace {

using ::testing::HasSubstr;

int64_t Parsed(const std::string& text) {
  int64_t bytes = -1;
  std::string error;
  EXPECT_TRUE(ParseByteSize(text, &bytes, &error)) << text << ": " << error;
  return bytes;
}

// The error for `text`, which must not parse; the output is left alone.
std::string ParseError(const std::string& text) {
  int64_t bytes = 7;
  std::string error;
  EXPECT_FALSE(ParseByteSize(text, &bytes, &error)) << text;
  EXPECT_EQ(bytes, 7) << text;
  return error;
}

TEST(ParseByteSizeTest, ReadsPlainNumbersAsBytes) {
  EXPECT_EQ(Parsed("512"), 512);
  EXPECT_EQ(Parsed("0"), 0);
  EXPECT_EQ(Parsed("512B"), 512);
}

TEST(ParseByteSizeTest, UnitsArePowersOf1024WithOptionalBOrIB) {
  EXPECT_EQ(Parsed("64K"), 64 * 1024);
  EXPECT_EQ(Parsed("2MB"), 2 * 1024 * 1024);
  EXPECT_EQ(Parsed("4G"), int64_t{4} << 30);
  EXPECT_EQ(Parsed("1.5GiB"), int64_t{3} << 29);
  EXPECT_EQ(Parsed("1T"), int64_t{1} << 40);
}

TEST(ParseByteSizeTest, AcceptsKubernetesBinarySuffixes) {
  EXPECT_EQ(Parsed("8Gi"), int64_t{8} << 30);
  EXPECT_EQ(Parsed("256Mi"), 256 * 1024 * 1024);
  EXPECT_EQ(Parsed("4ki"), 4 * 1024);
}

TEST(ParseByteSizeTest, IgnoresSpacesAndCase) {
  EXPECT_EQ(Parsed(" 3 M "), 3 * 1024 * 1024);
  EXPECT_EQ(Parsed("64k"), 64 * 1024);
  EXPECT_EQ(Parsed("1.5gib"), int64_t{3} << 29);
  EXPECT_EQ(Parsed("2mb"), 2 * 1024 * 1024);
}

TEST(ParseByteSizeTest, RefusesNegativeSizes) {
  EXPECT_THAT(ParseError("-1"), HasSubstr("'-1' is not a byte size"));
}

TEST(ParseByteSizeTest, RefusesUnknownUnits) {
  EXPECT_THAT(ParseError("12Q"), HasSubstr("unknown unit in '12Q'"));
  EXPECT_THAT(ParseError("abc"), HasSubstr("unknown unit in 'abc'"));
}

TEST(ParseByteSizeTest, RefusesEmptyTextAndAUnitWithoutANumber) {
  EXPECT_THAT(ParseError(""), HasSubstr("is not a byte size"));
  EXPECT_THAT(ParseError("K"), HasSubstr("'K' is not a byte size"));
}

TEST(ParseByteSizeTest, RefusesSizesBeyondInt64) {
  EXPECT_THAT(ParseError("10000000T"), HasSubstr("is not a byte size"));
}

TEST(ByteSizeFlagTest, ParsesAndUnparsesAsBytes) {
  ByteSize size;
  std::string error;
  ASSERT_TRUE(AbslParseFlag("2K", &size, &error)) << error;
  EXPECT_EQ(size.bytes, 2048);
  EXPECT_EQ(AbslUnparseFlag(size), "2048");
  EXPECT_FALSE(AbslParseFlag("2X", &size, &error));
}

}  // namespace
}  // namespace streamkv::server
