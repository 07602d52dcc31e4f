#include "server/metrics_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamkv::server {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A socket connected to 127.0.0.1:`port`, or -1.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` and returns everything the endpoint answers until it closes the connection.
std::string Exchange(int port, const std::string& request) {
  const int fd = Connect(port);
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

std::string Request(const std::string& method, const std::string& target) {
  return absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

// The body of an HTTP response (after the blank line).
std::string Body(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus::BuildCounter()
        .Name("test_requests_total")
        .Help("Requests")
        .Register(*registry_)
        .Add({{"kind", "a"}})
        .Increment(3);
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start("127.0.0.1:0", registry_);
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    endpoint_ = *std::move(endpoint);
    ASSERT_GT(endpoint_->port(), 0);
  }

  std::string Exposition() const {
    return prometheus::TextSerializer().Serialize(registry_->Collect());
  }

  const std::shared_ptr<prometheus::Registry> registry_ =
      std::make_shared<prometheus::Registry>();
  std::unique_ptr<MetricsEndpoint> endpoint_;
};

TEST_F(MetricsEndpointTest, GetMetricsAnswersWithTheRegistrysText) {
  const std::string response = Exchange(endpoint_->port(), Request("GET", "/metrics"));
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  const std::string expected = Exposition();
  EXPECT_THAT(response, HasSubstr(absl::StrCat("Content-Length: ", expected.size(), "\r\n")));
  EXPECT_EQ(Body(response), expected);
  EXPECT_THAT(expected, HasSubstr("test_requests_total{kind=\"a\"} 3"));
}

TEST_F(MetricsEndpointTest, QueryStringIsIgnored) {
  const std::string response = Exchange(endpoint_->port(), Request("GET", "/metrics?x=1"));
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(Body(response), Exposition());
}

TEST_F(MetricsEndpointTest, HeadAnswersWithHeadersOnly) {
  const std::string response = Exchange(endpoint_->port(), Request("HEAD", "/metrics"));
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response,
              HasSubstr(absl::StrCat("Content-Length: ", Exposition().size(), "\r\n")));
  EXPECT_THAT(response, EndsWith("\r\n\r\n"));
  EXPECT_EQ(Body(response), "");
}

TEST_F(MetricsEndpointTest, OtherPathsAreNotFound) {
  EXPECT_THAT(Exchange(endpoint_->port(), Request("GET", "/")),
              StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(Exchange(endpoint_->port(), Request("GET", "/metricsx")),
              StartsWith("HTTP/1.1 404 Not Found\r\n"));
}

TEST_F(MetricsEndpointTest, OtherMethodsAreNotAllowed) {
  EXPECT_THAT(Exchange(endpoint_->port(), Request("POST", "/metrics")),
              StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
}

TEST_F(MetricsEndpointTest, AnswersOneConnectionAfterAnother) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Body(Exchange(endpoint_->port(), Request("GET", "/metrics"))), Exposition());
  }
}

TEST_F(MetricsEndpointTest, StopsServingWhenDestroyed) {
  const int port = endpoint_->port();
  endpoint_.reset();
  const int fd = Connect(port);
  EXPECT_EQ(fd, -1);
  if (fd >= 0) close(fd);
}

TEST(MetricsEndpointStartTest, RefusesAnAddressWithoutPort) {
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("localhost", std::make_shared<prometheus::Registry>());
  EXPECT_EQ(endpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(endpoint.status().message(), HasSubstr("'localhost' is not host:port"));
}

}  // namespace
}  // namespace streamkv::server
