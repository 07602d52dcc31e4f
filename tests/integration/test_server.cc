#include "tests/integration/test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace streamkv::testing {

server::ServerOptions TestServerOptions(server::ManualClock* clock) {
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.workers = 2;
  options.kv_budget_bytes = 64LL << 20;
  options.default_session_budget_bytes = 16LL << 20;
  options.max_session_budget_bytes = 64LL << 20;
  options.max_message_bytes = 1 << 20;
  options.reap_interval = absl::ZeroDuration();
  options.clock = clock;
  options.sessions.idle_timeout = absl::Minutes(5);
  options.sessions.resume_grace = absl::Seconds(30);
  options.sessions.instance_id = "test-instance";
  options.build = {"test", "test", "cpu"};
  return options;
}

std::unique_ptr<server::Server> StartTestServer(const server::ServerOptions& options) {
  server::ModelRegistry models;
  absl::StatusOr<std::unique_ptr<server::ServedModel>> tiny =
      server::LoadBuiltinTinyStream3r("stream3r-tiny", {});
  EXPECT_TRUE(tiny.ok()) << tiny.status();
  if (!tiny.ok()) return nullptr;
  models.Add(std::move(*tiny));
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::Start(options, std::move(models));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<client::Client> ConnectTo(const server::Server& server,
                                          const std::string& bearer_token) {
  client::ClientOptions options;
  options.address = absl::StrCat("127.0.0.1:", server.port());
  options.bearer_token = bearer_token;
  absl::StatusOr<std::unique_ptr<client::Client>> client = client::Client::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

v1::Frame RawFrame(uint64_t sequence, int64_t height, int64_t width) {
  std::unique_ptr<client::FrameSource> source =
      client::SyntheticSource(1, height, width, client::SyntheticEncoding::kRaw);
  v1::Frame frame = **source->Next();
  frame.set_sequence(sequence);
  return frame;
}

v1::OpenSession TinyOpen(const std::string& policy, std::map<std::string, std::string> params) {
  v1::OpenSession open;
  open.set_policy(policy);
  open.mutable_policy_params()->insert(params.begin(), params.end());
  return open;
}

v1::StreamResponse ReadAnswer(client::SessionStream& stream) {
  v1::StreamResponse response;
  while (stream.Read(&response)) {
    if (response.has_result() || response.has_error()) return response;
  }
  ADD_FAILURE() << "the stream ended before an answer: " << stream.Finish();
  return response;
}

int StreamFreshSession(client::Client& client, int frames) {
  absl::StatusOr<std::unique_ptr<client::SessionStream>> stream = client.Open(TinyOpen());
  EXPECT_TRUE(stream.ok()) << stream.status();
  if (!stream.ok()) return 0;
  int results = 0;
  for (int i = 1; i <= frames; ++i) {
    EXPECT_TRUE((*stream)->Send(RawFrame(i)));
    results += ReadAnswer(**stream).has_result();
  }
  EXPECT_TRUE((*stream)->End());
  v1::StreamResponse response;
  bool ended = false;
  while ((*stream)->Read(&response)) ended |= response.has_ended();
  EXPECT_TRUE(ended);
  EXPECT_TRUE((*stream)->Finish().ok());
  return results;
}

std::string ScrapeMetrics(const server::Server& server) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server.metrics_port()));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  std::string text;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
    char buffer[4096];
    for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) text.append(buffer, n);
  }
  close(fd);
  const size_t body = text.find("\r\n\r\n");
  EXPECT_NE(body, std::string::npos) << "no HTTP answer from the metrics endpoint";
  return body == std::string::npos ? "" : text.substr(body + 4);
}

double MetricValue(const server::Server& server, const std::string& series) {
  const std::string text = ScrapeMetrics(server);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = NAN;
      EXPECT_TRUE(absl::SimpleAtod(line.substr(series.size() + 1), &value)) << line;
      return value;
    }
  }
  return NAN;
}

}  // namespace streamkv::testing
