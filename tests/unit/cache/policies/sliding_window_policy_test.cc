#include "cache/policies/sliding_window_policy.h"

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
using test_util::KeyIds;
using test_util::MakeCache;
using test_util::TinyGeometry;
using test_util::TokenIds;
using test_util::ValueIds;

std::unique_ptr<EvictionPolicy> MakePolicy(const PolicyParams& params,
                                           const CacheGeometry& geometry) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("sliding_window", params, geometry);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

TEST(SlidingWindowPolicyTest, TokensKeepStartAndRecentTokens) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"start_size", "2"}, {"recent_size", "3"}}, geometry);
  ASSERT_NE(policy, nullptr);
  EXPECT_FALSE(policy->score_request().needed);
  EXPECT_EQ(policy->MaxTokensPerLayer(), 5);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0: 4 tokens <= 2 + 3, nothing to do.
  AppendFrame(cache, 0, "CRPP");
  EXPECT_THAT(policy->EndFrame(0, cache).evicted, ElementsAre(0, 0));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3));

  // Frame 1: ids 0..7; keep the first 2 (0, 1) and the last 3 (5, 6, 7): 3 evicted.
  AppendFrame(cache, 1, "CRPP");
  EXPECT_THAT(policy->EndFrame(1, cache).evicted, ElementsAre(3, 3));
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer), ElementsAre(0, 1, 5, 6, 7));
  }

  // Frame 2: ids 0, 1, 5, 6, 7, 8..11; keep 0, 1 and 9, 10, 11: 4 evicted. Roles do not matter.
  AppendFrame(cache, 2, "CRPP");
  EXPECT_THAT(policy->EndFrame(2, cache).evicted, ElementsAre(4, 4));
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer), ElementsAre(0, 1, 9, 10, 11));
    EXPECT_THAT(KeyIds(cache, layer, 1), ElementsAre(0, 1, 9, 10, 11));
    EXPECT_THAT(ValueIds(cache, layer, 0), ElementsAre(0, 1, 9, 10, 11));
  }
}

TEST(SlidingWindowPolicyTest, TokensWithoutStartKeepOnlyRecent) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"start_size", "0"}, {"recent_size", "2"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  // Frame 0: ids 0..3, keep 2, 3.  Frame 1: ids 2, 3, 4..7, keep 6, 7.
  AppendFrame(cache, 0, "CRPP");
  EXPECT_THAT(policy->EndFrame(0, cache).evicted, ElementsAre(2));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(2, 3));
  AppendFrame(cache, 1, "CRPP");
  EXPECT_THAT(policy->EndFrame(1, cache).evicted, ElementsAre(4));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(6, 7));
}

TEST(SlidingWindowPolicyTest, FramesKeepStartAndRecentFrames) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy =
      MakePolicy({{"start_size", "1"}, {"recent_size", "2"}, {"unit", "frames"}}, geometry);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->MaxTokensPerLayer(), 12);  // (1 + 2) frames of 4 tokens
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frames 0..2: at most 1 + 2 frames cached, nothing evicted.
  for (int64_t frame = 0; frame < 3; ++frame) {
    AppendFrame(cache, frame, "CRPP");
    EXPECT_THAT(policy->EndFrame(frame, cache).evicted, ElementsAre(0, 0)) << "frame " << frame;
  }
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));

  // Frame 3: frames 0, 1, 2, 3 cached; keep frame 0 and frames 2, 3: frame 1 (4 tokens) goes.
  AppendFrame(cache, 3, "CRPP");
  EXPECT_THAT(policy->EndFrame(3, cache).evicted, ElementsAre(4, 4));
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer), ElementsAre(0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15));
  }

  // Frame 4: frames 0, 2, 3, 4 cached; frame 2 goes.
  AppendFrame(cache, 4, "CRPP");
  EXPECT_THAT(policy->EndFrame(4, cache).evicted, ElementsAre(4, 4));
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer),
                ElementsAre(0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19));
    EXPECT_THAT(KeyIds(cache, layer, 0),
                ElementsAre(0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19));
  }
}

TEST(SlidingWindowPolicyTest, FramesCountDistinctFramesNotIndices) {
  // Frame indices 0, 5, 9: the window counts cached frames, not frame numbers.
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/2);
  auto policy =
      MakePolicy({{"start_size", "0"}, {"recent_size", "2"}, {"unit", "frames"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  AppendFrame(cache, 0, "CP");
  EXPECT_THAT(policy->EndFrame(0, cache).evicted, ElementsAre(0));
  AppendFrame(cache, 5, "CP");
  EXPECT_THAT(policy->EndFrame(5, cache).evicted, ElementsAre(0));
  AppendFrame(cache, 9, "CP");
  EXPECT_THAT(policy->EndFrame(9, cache).evicted, ElementsAre(2));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(10, 11, 18, 19));
}

void ExpectInvalid(const PolicyParams& params, const std::string& field) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("sliding_window", params, TinyGeometry());
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr(field));
}

TEST(SlidingWindowPolicyTest, RejectsInvalidParameters) {
  ExpectInvalid({{"recent_size", "0"}}, "recent_size");
  ExpectInvalid({{"recent_size", "ten"}}, "recent_size");
  ExpectInvalid({{"start_size", "-1"}}, "start_size");
  ExpectInvalid({{"start_size", "1.5"}}, "start_size");
  ExpectInvalid({{"unit", "bytes"}}, "unit");
  ExpectInvalid({{"window", "8"}}, "window");
}

TEST(SlidingWindowPolicyTest, DefaultsAreSeedValues) {
  auto policy = MakePolicy({}, TinyGeometry());
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->MaxTokensPerLayer(), 4 + 512);
}

}  // namespace
}  // namespace streamkv::cache
