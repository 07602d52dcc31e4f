// The one place where absl::Status becomes grpc::Status (DESIGN.md §7).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace streamkv::server {

// Same code (the two enumerations share their numbering), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace streamkv::server
