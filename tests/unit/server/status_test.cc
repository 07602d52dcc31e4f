#include "server/status.h"

#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace streamkv::server {
namespace {

TEST(ToGrpcStatusTest, KeepsCodeAndMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status status(static_cast<absl::StatusCode>(code), "what went wrong");
    const grpc::Status converted = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(converted.error_code()), code);
    EXPECT_EQ(converted.error_message(), "what went wrong");
  }
}

TEST(ToGrpcStatusTest, OkStaysOk) {
  const grpc::Status converted = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(converted.ok());
  EXPECT_EQ(converted.error_message(), "");
}

}  // namespace
}  // namespace streamkv::server
