#include "server/status.h"

#include <string>

namespace streamkv::server {

static_assert(static_cast<int>(absl::StatusCode::kResourceExhausted) ==
                  static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED) &&
              static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                  static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace streamkv::server
