#include "client/client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

TEST(SetPolicyParamsTest, ReadsNameValuePairsTrimmingSpaces) {
  v1::OpenSession open;
  ASSERT_TRUE(SetPolicyParams(" unit = frames,recent_size=8,, ", &open).ok());
  EXPECT_THAT(open.policy_params(),
              UnorderedElementsAre(Pair("unit", "frames"), Pair("recent_size", "8")));
}

TEST(SetPolicyParamsTest, EmptyTextSetsNothing) {
  v1::OpenSession open;
  ASSERT_TRUE(SetPolicyParams("", &open).ok());
  EXPECT_TRUE(open.policy_params().empty());
}

TEST(SetPolicyParamsTest, AnItemWithoutEqualsIsNamed) {
  v1::OpenSession open;
  const absl::Status status = SetPolicyParams("ratio=0.3,sum", &open);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("'sum' is not name=value"));
}

}  // namespace
}  // namespace streamkv::client
