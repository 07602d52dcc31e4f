#include "server/session_open.h"

#include <memory>
#include <string>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "server/model_registry.h"

namespace streamkv::server {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

class SpecFromOpenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServedModel>> model = LoadBuiltinTinyStream3r("tiny", {});
    ASSERT_TRUE(model.ok()) << model.status();
    registry_ = new ModelRegistry();
    registry_->Add(*std::move(model));
  }
  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
  }

  SpecFromOpenTest() {
    limits_.default_session_budget_bytes = 1000;
    limits_.max_session_budget_bytes = 5000;
    limits_.image_limits.max_height = 480;
    limits_.image_limits.max_width = 640;
  }
  void SetUp() override { ASSERT_NE(registry_, nullptr); }

  absl::StatusOr<SessionSpec> Spec(const v1::OpenSession& open) const {
    return SpecFromOpen(open, *registry_, limits_);
  }
  // The InvalidArgument message `open` is refused with.
  std::string Refusal(const v1::OpenSession& open) const {
    absl::StatusOr<SessionSpec> spec = Spec(open);
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
    return std::string(spec.status().message());
  }

  static inline ModelRegistry* registry_ = nullptr;
  OpenLimits limits_;
};

TEST_F(SpecFromOpenTest, EmptyOpenTakesEveryDefault) {
  absl::StatusOr<SessionSpec> spec = Spec(v1::OpenSession());
  ASSERT_TRUE(spec.ok()) << spec.status();
  const ServedModel* tiny = registry_->models().front().get();
  EXPECT_EQ(spec->model, tiny);
  EXPECT_EQ(spec->policy, "none");
  EXPECT_THAT(spec->policy_params, IsEmpty());
  EXPECT_EQ(spec->budget_bytes, 1000);
  EXPECT_EQ(spec->outputs, tiny->model->output_names());
  EXPECT_EQ(spec->dtype, v1::TENSOR_DTYPE_FLOAT32);
  EXPECT_EQ(spec->frame_height, 0);
  EXPECT_EQ(spec->frame_width, 0);
  EXPECT_EQ(spec->label, "");
  EXPECT_EQ(spec->id, "");
  EXPECT_EQ(spec->resume_token, "");
}

TEST_F(SpecFromOpenTest, TakesWhatTheOpenAsksFor) {
  v1::OpenSession open;
  open.set_model("tiny");
  open.set_kv_budget_bytes(5000);
  open.mutable_outputs()->set_dtype(v1::TENSOR_DTYPE_FLOAT16);
  open.mutable_frame_size()->set_height(480);
  open.mutable_frame_size()->set_width(640);
  open.set_label(std::string(128, 'x'));
  absl::StatusOr<SessionSpec> spec = Spec(open);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model->name, "tiny");
  EXPECT_EQ(spec->budget_bytes, 5000);
  EXPECT_EQ(spec->dtype, v1::TENSOR_DTYPE_FLOAT16);
  EXPECT_EQ(spec->frame_height, 480);
  EXPECT_EQ(spec->frame_width, 640);
  EXPECT_EQ(spec->label, std::string(128, 'x'));
}

TEST_F(SpecFromOpenTest, PolicyParamsCarryTheDefaultsOfParametersLeftOut) {
  v1::OpenSession open;
  open.set_policy("sliding_window");
  (*open.mutable_policy_params())["recent_size"] = "2";
  absl::StatusOr<SessionSpec> spec = Spec(open);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->policy, "sliding_window");
  EXPECT_THAT(spec->policy_params,
              UnorderedElementsAre(Pair("start_size", "4"), Pair("recent_size", "2"),
                                   Pair("unit", "tokens")));
}

TEST_F(SpecFromOpenTest, SelectedOutputsFollowTheModelsOrder) {
  v1::OpenSession open;
  open.mutable_outputs()->add_names("images");
  open.mutable_outputs()->add_names("depth");
  absl::StatusOr<SessionSpec> spec = Spec(open);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->outputs, ElementsAre("depth", "images"));
}

TEST_F(SpecFromOpenTest, UnknownModelNamesTheFieldAndTheServedModels) {
  v1::OpenSession open;
  open.set_model("huge");
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("model: "), HasSubstr("'huge'"),
                                   HasSubstr("served: tiny")));
}

TEST_F(SpecFromOpenTest, UnknownPolicyNamesTheFieldAndTheKnownPolicies) {
  v1::OpenSession open;
  open.set_policy("lru");
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("policy: "), HasSubstr("'lru'"),
                                   HasSubstr("sliding_window")));
}

TEST_F(SpecFromOpenTest, BadPolicyParameterNamesTheFieldAndTheParameter) {
  v1::OpenSession open;
  open.set_policy("sliding_window");
  (*open.mutable_policy_params())["recent_size"] = "0";
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("policy_params: "), HasSubstr("'recent_size'")));

  open.mutable_policy_params()->clear();
  (*open.mutable_policy_params())["bogus"] = "1";
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("policy_params: "), HasSubstr("'bogus'")));
}

TEST_F(SpecFromOpenTest, BudgetOutsideZeroToTheMaximumIsRefused) {
  v1::OpenSession open;
  open.set_kv_budget_bytes(5001);
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("kv_budget_bytes: "), HasSubstr("[0, 5000]")));
  open.set_kv_budget_bytes(-1);
  EXPECT_THAT(Refusal(open), StartsWith("kv_budget_bytes: "));
}

TEST_F(SpecFromOpenTest, UnknownOutputNamesTheFieldAndTheModelsOutputs) {
  v1::OpenSession open;
  open.mutable_outputs()->add_names("depth");
  open.mutable_outputs()->add_names("normals");
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("outputs.names: "), HasSubstr("'normals'"),
                                   HasSubstr("world_points")));
}

TEST_F(SpecFromOpenTest, UnknownDtypeNamesTheField) {
  v1::OpenSession open;
  open.mutable_outputs()->set_dtype(static_cast<v1::TensorDtype>(7));
  EXPECT_THAT(Refusal(open), StartsWith("outputs.dtype: "));
}

TEST_F(SpecFromOpenTest, FrameSizeMustHaveBothSidesWithinTheLimits) {
  v1::OpenSession open;
  open.mutable_frame_size()->set_height(480);
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("frame_size: "), HasSubstr("480x0")));
  open.mutable_frame_size()->set_width(641);
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("frame_size: "), HasSubstr("480x640")));
  open.mutable_frame_size()->set_height(481);
  open.mutable_frame_size()->set_width(640);
  EXPECT_THAT(Refusal(open), StartsWith("frame_size: "));
}

TEST_F(SpecFromOpenTest, LabelOver128BytesIsRefused) {
  v1::OpenSession open;
  open.set_label(std::string(129, 'x'));
  EXPECT_THAT(Refusal(open), AllOf(StartsWith("label: "), HasSubstr("129 bytes")));
}

}  // namespace
}  // namespace streamkv::server
