#include "server/session_open.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cache/policy_factory.h"

namespace streamkv::server {
namespace {

constexpr size_t kMaxLabelBytes = 128;

absl::StatusOr<const cache::PolicyDescriptor*> FindPolicy(const std::string& name) {
  std::vector<std::string> known;
  for (const cache::PolicyDescriptor* policy : cache::RegisteredPolicies()) {
    if (policy->name == name) return policy;
    known.push_back(policy->name);
  }
  return absl::InvalidArgumentError(absl::StrCat("policy: unknown policy '", name, "' (known: ",
                                                 absl::StrJoin(known, ", "), ")"));
}

}  // namespace

absl::StatusOr<SessionSpec> SpecFromOpen(const v1::OpenSession& open,
                                         const ModelRegistry& models, const OpenLimits& limits) {
  SessionSpec spec;
  absl::StatusOr<const ServedModel*> model = models.Find(open.model());
  if (!model.ok()) return model.status();
  spec.model = *model;

  spec.policy = open.policy().empty() ? "none" : open.policy();
  absl::StatusOr<const cache::PolicyDescriptor*> policy = FindPolicy(spec.policy);
  if (!policy.ok()) return policy.status();
  const cache::PolicyParams given(open.policy_params().begin(), open.policy_params().end());
  if (absl::StatusOr<cache::ParsedParams> parsed =
          cache::ParseParams(spec.policy, (*policy)->params, given);
      !parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("policy_params: ", parsed.status().message()));
  }
  spec.policy_params = given;
  for (const cache::ParamSpec& param : (*policy)->params) {
    if (!param.default_value.empty()) spec.policy_params.emplace(param.name, param.default_value);
  }

  if (open.kv_budget_bytes() < 0 || open.kv_budget_bytes() > limits.max_session_budget_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_budget_bytes: ", open.kv_budget_bytes(), " is outside [0, ",
                     limits.max_session_budget_bytes, "] (0 takes the default of ",
                     limits.default_session_budget_bytes, ")"));
  }
  spec.budget_bytes = open.kv_budget_bytes() == 0 ? limits.default_session_budget_bytes
                                                  : open.kv_budget_bytes();

  const std::vector<std::string> available = spec.model->model->output_names();
  for (const std::string& name : open.outputs().names()) {
    if (std::find(available.begin(), available.end(), name) == available.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "outputs.names: model '", spec.model->name, "' has no output '", name,
          "' (outputs: ", absl::StrJoin(available, ", "), ")"));
    }
  }
  for (const std::string& name : available) {
    const auto& wanted = open.outputs().names();
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), name) != wanted.end()) {
      spec.outputs.push_back(name);
    }
  }
  switch (open.outputs().dtype()) {
    case v1::TENSOR_DTYPE_UNSPECIFIED:
    case v1::TENSOR_DTYPE_FLOAT32: spec.dtype = v1::TENSOR_DTYPE_FLOAT32; break;
    case v1::TENSOR_DTYPE_FLOAT16: spec.dtype = v1::TENSOR_DTYPE_FLOAT16; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("outputs.dtype: unknown dtype ", open.outputs().dtype()));
  }

  const int64_t height = open.frame_size().height();
  const int64_t width = open.frame_size().width();
  if ((height == 0) != (width == 0) || height > limits.image_limits.max_height ||
      width > limits.image_limits.max_width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame_size: ", height, "x", width, " must be both 0 (taken from the first frame) or "
        "both positive and at most ", limits.image_limits.max_height, "x",
        limits.image_limits.max_width));
  }
  spec.frame_height = height;
  spec.frame_width = width;

  if (open.label().size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(absl::StrCat("label: ", open.label().size(),
                                                   " bytes exceed the limit of ", kMaxLabelBytes));
  }
  spec.label = open.label();
  return spec;
}

absl::Status OpenModelStream(const SessionSpec& spec, int64_t height, int64_t width,
                             ServerMetrics* metrics, SessionWork* work) {
  const models::Model& model = *spec.model->model;
  absl::StatusOr<std::unique_ptr<models::StreamState>> stream =
      model.OpenStream({spec.policy, spec.policy_params, height, width});
  if (!stream.ok()) return stream.status();
  work->stream = std::move(*stream);
  work->frame_height = height;
  work->frame_width = width;
  work->cache_usage =
      metrics->NewSessionCacheUsage(spec.model->name, spec.policy, model.cache_names());
  return absl::OkStatus();
}

}  // namespace streamkv::server
