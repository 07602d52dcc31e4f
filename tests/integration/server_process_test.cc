// streamkv-server as a process: it starts on the built-in model with no flags but ports, and
// on SIGTERM while a client streams it ends the stream with UNAVAILABLE and exits 0.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/stream_runner.h"
#include "tests/integration/test_server.h"

extern char** environ;

namespace streamkv::testing {
namespace {

using ::testing::HasSubstr;

// The server binary with its stderr on a pipe this test reads line by line.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> flags) {
    int pipe_fds[2];
    EXPECT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    std::vector<std::string> args = {STREAMKV_SERVER_BINARY};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    log_fd_ = pipe_fds[0];
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(log_fd_);
  }

  // Reads log lines until one contains `text` (returned) or the log ends or `timeout` passes.
  std::string AwaitLine(const std::string& text, int timeout_ms = 60000) {
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        log_ += line + "\n";
        if (line.find(text) != std::string::npos) return line;
        continue;
      }
      pollfd fd = {log_fd_, POLLIN, 0};
      if (poll(&fd, 1, timeout_ms) <= 0) return "";
      char chunk[4096];
      const ssize_t n = read(log_fd_, chunk, sizeof(chunk));
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Waits for the process to exit; its exit code, or -1 when killed by a signal.
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void Signal(int signal) { kill(pid_, signal); }
  const std::string& log() const { return log_; }

 private:
  pid_t pid_ = -1;
  int log_fd_ = -1;
  std::string buffer_;
  std::string log_;
};

// The port in a line "... serving gRPC on port N, ...".
int GrpcPort(const std::string& line) {
  const std::string marker = "serving gRPC on port ";
  const size_t at = line.find(marker);
  int port = 0;
  if (at == std::string::npos) return 0;
  const std::string rest = line.substr(at + marker.size());
  EXPECT_TRUE(absl::SimpleAtoi(rest.substr(0, rest.find(',')), &port)) << line;
  return port;
}

TEST(ServerProcessTest, SigtermWhileStreamingEndsTheStreamUnavailableAndExitsZero) {
  ServerProcess server({"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                        "--drain_timeout=5s"});
  const std::string banner = server.AwaitLine("serving gRPC on port");
  ASSERT_FALSE(banner.empty()) << server.log();
  EXPECT_THAT(server.log(), HasSubstr("built-in tiny random-weight STream3R"));
  const int port = GrpcPort(banner);
  ASSERT_GT(port, 0);

  client::ClientOptions options;
  options.address = absl::StrCat("127.0.0.1:", port);
  auto client = client::Client::Connect(options);
  ASSERT_TRUE(client.ok());
  client::RunnerOptions runner_options;
  runner_options.open = TinyOpen("sliding_window", {{"unit", "frames"}, {"recent_size", "4"}});
  client::StreamRunner runner(client->get(), runner_options);
  // Far more frames than the test waits for: the stream is still going when SIGTERM arrives.
  auto source = client::SyntheticSource(100000, kFrameHeight, kFrameWidth,
                                        client::SyntheticEncoding::kRaw);
  int results = 0;
  absl::StatusOr<client::RunSummary> summary = runner.Run(*source, [&](const client::FrameAnswer& a) {
    if (a.result != nullptr && ++results == 3) server.Signal(SIGTERM);
  });
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnavailable) << summary.status();
  EXPECT_GE(results, 3);
  EXPECT_EQ(server.Wait(), 0) << server.log();
  server.AwaitLine("no more output");  // collect the rest of the log
  EXPECT_THAT(server.log(), HasSubstr("received Terminated"));
  EXPECT_THAT(server.log(), HasSubstr("shut down"));
}

TEST(ServerProcessTest, ABadFlagIsReportedAndTheServerExitsNonZero) {
  ServerProcess server({"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                        "--device=tpu"});
  EXPECT_NE(server.Wait(), 0);
  server.AwaitLine("no more output");
  EXPECT_THAT(server.log(), HasSubstr("--device: unknown device 'tpu'"));
}

}  // namespace
}  // namespace streamkv::testing
