// Turning an OpenSession request into a session's spec and model stream.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "models/io/image.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/session.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

struct OpenLimits {
  int64_t default_session_budget_bytes = 0;
  int64_t max_session_budget_bytes = 0;
  models::ImageLimits image_limits;
};

// Validates `open` against the served models, the registered policies and `limits`, and returns
// the spec of the session it asks for (id and token left empty). InvalidArgument naming the field:
// model, policy, policy_params (the parameter), kv_budget_bytes, outputs.names, outputs.dtype,
// frame_size, label.
absl::StatusOr<SessionSpec> SpecFromOpen(const v1::OpenSession& open,
                                         const ModelRegistry& models, const OpenLimits& limits);

// Opens the session's model stream for frames of height × width into `work`. InvalidArgument
// when the size does not suit the model or the policy's budget does not suit the cache geometry.
absl::Status OpenModelStream(const SessionSpec& spec, int64_t height, int64_t width,
                             ServerMetrics* metrics, SessionWork* work);

}  // namespace streamkv::server
