#include "cache/policies/none_policy.h"

#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "cache/policy_factory.h"
#include "tests/unit/cache/policy_test_util.h"

namespace streamkv::cache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using test_util::AppendFrame;
using test_util::MakeCache;
using test_util::TinyGeometry;
using test_util::TokenIds;

TEST(NonePolicyTest, KeepsEveryTokenOfEveryFrame) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = CreatePolicy("none", {}, geometry);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ((*policy)->name(), "none");
  EXPECT_FALSE((*policy)->score_request().needed);
  EXPECT_EQ((*policy)->granularity(), Granularity::kLayer);
  EXPECT_EQ((*policy)->MaxTokensPerLayer(), std::nullopt);

  KvCache cache = MakeCache(geometry);
  for (int64_t frame = 0; frame < 3; ++frame) {
    AppendFrame(cache, frame, "CRPP");
    const EvictionOutcome outcome = (*policy)->EndFrame(frame, cache);
    EXPECT_THAT(outcome.evicted, ElementsAre(0, 0)) << "frame " << frame;
    EXPECT_EQ(outcome.protected_overflow, 0);
  }
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
    EXPECT_THAT(test_util::KeyIds(cache, layer, 1),
                ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
  }
}

TEST(NonePolicyTest, RejectsAnyParameter) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("none", {{"recent_size", "4"}}, TinyGeometry());
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr("recent_size"));
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr("none"));
}

}  // namespace
}  // namespace streamkv::cache
