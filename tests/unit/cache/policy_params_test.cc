#include "cache/policy_params.h"

#include <memory>
#include <string>
#include <vector>

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

// count: int [1, 10] default 5; ratio: double (0, 1] default 0.5; flag: bool default false;
// mode: enum a|b default a; limit: int [0, 100] absent unless given.
std::vector<ParamSpec> Schema() {
  return {
      {"count", ParamSpec::Type::kInt, "5", 1, 10, false, {}, "an int"},
      {"ratio", ParamSpec::Type::kDouble, "0.5", 0, 1, true, {}, "a double"},
      {"flag", ParamSpec::Type::kBool, "false", 0, 0, false, {}, "a bool"},
      {"mode", ParamSpec::Type::kEnum, "a", 0, 0, false, {"a", "b"}, "an enum"},
      {"limit", ParamSpec::Type::kInt, "", 0, 100, false, {}, "optional"},
  };
}

// The error of parsing `params`; fails the test when parsing succeeds.
std::string ErrorOf(const PolicyParams& params) {
  absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), params);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(ParseParamsTest, AppliesDefaults) {
  absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), {});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Int("count"), 5);
  EXPECT_DOUBLE_EQ(parsed->Double("ratio"), 0.5);
  EXPECT_FALSE(parsed->Bool("flag"));
  EXPECT_EQ(parsed->Enum("mode"), "a");
  EXPECT_TRUE(parsed->Has("count"));
  EXPECT_FALSE(parsed->Has("limit"));
}

TEST(ParseParamsTest, GivenValuesOverrideDefaults) {
  absl::StatusOr<ParsedParams> parsed = ParseParams(
      "demo", Schema(),
      {{"count", "10"}, {"ratio", "1"}, {"flag", "true"}, {"mode", "b"}, {"limit", "0"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Int("count"), 10);  // inclusive max
  EXPECT_DOUBLE_EQ(parsed->Double("ratio"), 1.0);
  EXPECT_TRUE(parsed->Bool("flag"));
  EXPECT_EQ(parsed->Enum("mode"), "b");
  ASSERT_TRUE(parsed->Has("limit"));
  EXPECT_EQ(parsed->Int("limit"), 0);  // inclusive min
}

TEST(ParseParamsTest, ParsesBoolSpellings) {
  for (const char* text : {"true", "1", "True"}) {
    absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), {{"flag", text}});
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_TRUE(parsed->Bool("flag")) << text;
  }
  for (const char* text : {"false", "0"}) {
    absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), {{"flag", text}});
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_FALSE(parsed->Bool("flag")) << text;
  }
  EXPECT_THAT(ErrorOf({{"flag", "maybe"}}), HasSubstr("flag"));
  EXPECT_THAT(ErrorOf({{"flag", ""}}), HasSubstr("flag"));
}

TEST(ParseParamsTest, ExclusiveLowerBound) {
  EXPECT_THAT(ErrorOf({{"ratio", "0"}}), HasSubstr("ratio"));
  EXPECT_THAT(ErrorOf({{"ratio", "0"}}), HasSubstr("(0, 1]"));
  absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), {{"ratio", "0.001"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_DOUBLE_EQ(parsed->Double("ratio"), 0.001);
  EXPECT_THAT(ErrorOf({{"ratio", "1.0001"}}), HasSubstr("ratio"));
}

TEST(ParseParamsTest, IntBoundsAreInclusive) {
  EXPECT_THAT(ErrorOf({{"count", "0"}}), HasSubstr("count"));
  EXPECT_THAT(ErrorOf({{"count", "11"}}), HasSubstr("count"));
  EXPECT_THAT(ErrorOf({{"count", "0"}}), HasSubstr("[1, 10]"));
  absl::StatusOr<ParsedParams> parsed = ParseParams("demo", Schema(), {{"count", "1"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Int("count"), 1);
}

TEST(ParseParamsTest, RejectsNonNumbers) {
  EXPECT_THAT(ErrorOf({{"count", "five"}}), HasSubstr("count"));
  EXPECT_THAT(ErrorOf({{"count", "2.5"}}), HasSubstr("count"));
  EXPECT_THAT(ErrorOf({{"count", ""}}), HasSubstr("count"));
  EXPECT_THAT(ErrorOf({{"ratio", "half"}}), HasSubstr("ratio"));
  EXPECT_THAT(ErrorOf({{"ratio", "nan"}}), HasSubstr("ratio"));
  EXPECT_THAT(ErrorOf({{"ratio", "inf"}}), HasSubstr("ratio"));
  EXPECT_THAT(ErrorOf({{"limit", "1e9"}}), HasSubstr("limit"));
}

TEST(ParseParamsTest, RejectsBadEnumAndListsChoices) {
  const std::string error = ErrorOf({{"mode", "c"}});
  EXPECT_THAT(error, HasSubstr("mode"));
  EXPECT_THAT(error, HasSubstr("a|b"));
  EXPECT_THAT(error, HasSubstr("'c'"));
  EXPECT_THAT(ErrorOf({{"mode", "A"}}), HasSubstr("mode"));  // case-sensitive
}

TEST(ParseParamsTest, RejectsUnknownNamesAndListsKnownOnes) {
  const std::string error = ErrorOf({{"count", "3"}, {"colour", "red"}});
  EXPECT_THAT(error, HasSubstr("colour"));
  EXPECT_THAT(error, HasSubstr("count, ratio, flag, mode, limit"));
  EXPECT_THAT(error, HasSubstr("policy 'demo'"));

  absl::StatusOr<ParsedParams> empty = ParseParams("bare", {}, {{"x", "1"}});
  ASSERT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("'x'"));
}

TEST(ParseParamsTest, ErrorsNamePolicyAndField) {
  const std::string error = ErrorOf({{"count", "99"}});
  EXPECT_THAT(error, HasSubstr("policy 'demo'"));
  EXPECT_THAT(error, HasSubstr("parameter 'count'"));
  EXPECT_THAT(error, HasSubstr("'99'"));
}

TEST(ParseParamsTest, TypeNames) {
  EXPECT_EQ(ParamTypeName(ParamSpec::Type::kInt), "int");
  EXPECT_EQ(ParamTypeName(ParamSpec::Type::kDouble), "double");
  EXPECT_EQ(ParamTypeName(ParamSpec::Type::kBool), "bool");
  EXPECT_EQ(ParamTypeName(ParamSpec::Type::kEnum), "enum");
}

TEST(PolicyFactoryTest, RegistersEveryPolicyInOrder) {
  std::vector<std::string> names;
  for (const PolicyDescriptor* policy : RegisteredPolicies()) names.push_back(policy->name);
  EXPECT_THAT(names, ElementsAre("none", "sliding_window", "h2o", "global_ratio", "layerwise"));
}

// Every declared default must pass its own schema, and every enum default be one of its choices.
TEST(ParsePolicyParamsTest, ReadsNameValueLists) {
  absl::StatusOr<PolicyParams> params = ParsePolicyParams("unit=frames,recent_size=3,expr=a=b");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(*params, (PolicyParams{{"unit", "frames"}, {"recent_size", "3"}, {"expr", "a=b"}}));
  EXPECT_TRUE(ParsePolicyParams("")->empty());
  EXPECT_THAT(std::string(ParsePolicyParams("unit=frames,recent").status().message()),
              HasSubstr("expected name=value, got 'recent'"));
  EXPECT_THAT(std::string(ParsePolicyParams("=3").status().message()), HasSubstr("'=3'"));
}

TEST(PolicyFactoryTest, DeclaredDefaultsParse) {
  for (const PolicyDescriptor* policy : RegisteredPolicies()) {
    absl::StatusOr<ParsedParams> parsed = ParseParams(policy->name, policy->params, {});
    EXPECT_TRUE(parsed.ok()) << policy->name << ": " << parsed.status();
    EXPECT_FALSE(policy->summary.empty()) << policy->name;
    for (const ParamSpec& spec : policy->params) {
      EXPECT_FALSE(spec.help.empty()) << policy->name << "." << spec.name;
    }
  }
}

TEST(PolicyFactoryTest, UnknownPolicyIsNamed) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("lru", {}, test_util::TinyGeometry());
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(policy.status().message());
  EXPECT_THAT(message, HasSubstr("'lru'"));
  EXPECT_THAT(message, HasSubstr("sliding_window"));
}

TEST(PolicyFactoryTest, CacheOptionsFollowThePolicy) {
  const CacheGeometry geometry = test_util::TinyGeometry(2, /*tokens_per_frame=*/4);
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> window =
      CreatePolicy("sliding_window", {{"start_size", "1"}, {"recent_size", "3"}}, geometry);
  ASSERT_TRUE(window.ok()) << window.status();
  const KvCacheOptions window_options = CacheOptionsFor(**window, geometry, at::kCPU);
  EXPECT_EQ(window_options.granularity, Granularity::kLayer);
  EXPECT_EQ(window_options.initial_capacity, 1 + 3 + 4);  // bound + one frame

  absl::StatusOr<std::unique_ptr<EvictionPolicy>> h2o =
      CreatePolicy("h2o", {{"heavy_size", "2"}, {"recent_size", "2"}}, geometry);
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  const KvCacheOptions h2o_options = CacheOptionsFor(**h2o, geometry, at::kCPU);
  EXPECT_EQ(h2o_options.granularity, Granularity::kHead);
  EXPECT_EQ(h2o_options.initial_capacity, 2 + 2 + 4);
}

}  // namespace
}  // namespace streamkv::cache
