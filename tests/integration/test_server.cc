#include "tests/integration/test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
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

namespace {

int ListenOnLoopback(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  socklen_t length = sizeof(address);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(listen(fd, 16), 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  *port = ntohs(address.sin_port);
  return fd;
}

}  // namespace

TcpForwarder::TcpForwarder(int target_port) : target_port_(target_port) {
  listen_fd_ = ListenOnLoopback(&port_);
  threads_.emplace_back([this] { AcceptLoop(); });
}

TcpForwarder::~TcpForwarder() {
  Close();
  for (std::thread& thread : threads_) thread.join();
  for (int fd : sockets_) close(fd);
}

void TcpForwarder::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  for (int fd : sockets_) shutdown(fd, SHUT_RDWR);
}

void TcpForwarder::AcceptLoop() {
  while (true) {
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    std::lock_guard<std::mutex> lock(mu_);
    if (client < 0 || closed_) {
      if (client >= 0) close(client);
      close(listen_fd_);
      return;
    }
    const int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(target_port_));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(upstream, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(client);
      close(upstream);
      continue;
    }
    sockets_.push_back(client);
    sockets_.push_back(upstream);
    threads_.emplace_back([this, client, upstream] { Pump(client, upstream); });
  }
}

void TcpForwarder::Pump(int client, int upstream) {
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  char buffer[65536];
  while (poll(fds, 2, -1) > 0) {
    bool open = true;
    for (int i = 0; i < 2 && open; ++i) {
      if (fds[i].revents == 0) continue;
      const ssize_t n = recv(fds[i].fd, buffer, sizeof(buffer), 0);
      open = n > 0 && send(fds[1 - i].fd, buffer, static_cast<size_t>(n), MSG_NOSIGNAL) == n;
    }
    if (!open) break;
  }
  shutdown(client, SHUT_RDWR);
  shutdown(upstream, SHUT_RDWR);
}

}  // namespace streamkv::testing
