// Load driver: N concurrent sessions × M frames against a running streamkv-server over gRPC.
//
//   streamkv-bench-load --server=127.0.0.1:50051 --server_pid=1234 --sessions=16 --frames=100
//
// Reports frames/s, client-observed frame latency p50/p99, the model's share (preprocess, model,
// evict) and the rest ("overhead": decode, encode, scheduling, gRPC, client), time queued behind
// other sessions, and the server's RSS (current and peak, from /proc/<pid>/status) after the
// run. bench/load_test.sh starts a server and runs the table of issue 5.
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/frame_source.h"
#include "client/percentile.h"
#include "client/stream_runner.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "Server address");
ABSL_FLAG(int, server_pid, 0, "Server process id, for its RSS (0: not reported)");
ABSL_FLAG(int, sessions, 4, "Concurrent sessions");
ABSL_FLAG(int, frames, 100, "Frames per session");
ABSL_FLAG(std::string, size, "56x112", "Frame size HxW (raw RGB)");
ABSL_FLAG(int, window, 2, "Frames in flight per session");
ABSL_FLAG(std::string, policy, "sliding_window", "Eviction policy");
ABSL_FLAG(std::string, policy_params, "unit=frames,start_size=1,recent_size=8",
          "Policy parameters name=value,...");
ABSL_FLAG(bool, header, false, "Print the table header first");

namespace streamkv::client {
namespace {

// Replays a few pre-made frames, so the driver's own CPU goes to gRPC rather than to pixels.
class ReplaySource final : public FrameSource {
 public:
  ReplaySource(std::vector<v1::Frame> frames, int64_t count)
      : frames_(std::move(frames)), count_(count) {}
  absl::StatusOr<std::optional<v1::Frame>> Next() override {
    if (next_ == count_) return std::nullopt;
    return frames_[next_++ % frames_.size()];
  }
  std::optional<int64_t> size() const override { return count_; }

 private:
  const std::vector<v1::Frame> frames_;
  const int64_t count_;
  int64_t next_ = 0;
};

// "VmRSS" or "VmHWM" of process `pid` in MiB; -1 when unknown.
double ProcessMemoryMiB(int pid, const std::string& field) {
  std::ifstream status(absl::StrFormat("/proc/%d/status", pid));
  std::string key;
  while (status >> key) {
    if (key == field + ":") {
      double kib = 0;
      status >> kib;
      return kib / 1024;
    }
  }
  return -1;
}

struct Samples {
  std::mutex mu;
  std::vector<double> latency, model, queue, server_overhead;
  int64_t errors = 0;
};

int Run() {
  int64_t height = 0, width = 0;
  if (std::sscanf(absl::GetFlag(FLAGS_size).c_str(), "%ldx%ld", &height, &width) != 2) {
    std::cerr << "--size must be HxW\n";
    return 2;
  }
  std::vector<v1::Frame> frames;
  std::unique_ptr<FrameSource> synthetic =
      SyntheticSource(8, height, width, SyntheticEncoding::kRaw);
  for (int i = 0; i < 8; ++i) frames.push_back(**synthetic->Next());

  v1::OpenSession open;
  open.set_policy(absl::GetFlag(FLAGS_policy));
  if (absl::Status s = SetPolicyParams(absl::GetFlag(FLAGS_policy_params), &open); !s.ok()) {
    std::cerr << "--policy_params: " << s.message() << "\n";
    return 2;
  }
  open.mutable_outputs()->add_names("pose_enc");  // results stay small: the wire is not the test
  open.set_label("streamkv-bench-load");

  ClientOptions options;
  options.address = absl::GetFlag(FLAGS_server);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 1;
  }
  const int sessions = absl::GetFlag(FLAGS_sessions);
  Samples samples;
  std::vector<absl::Status> statuses(sessions);
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int s = 0; s < sessions; ++s) {
    threads.emplace_back([&, s] {
      RunnerOptions runner_options;
      runner_options.open = open;
      runner_options.max_in_flight = absl::GetFlag(FLAGS_window);
      StreamRunner runner(client->get(), runner_options);
      ReplaySource source(frames, absl::GetFlag(FLAGS_frames));
      absl::StatusOr<RunSummary> summary = runner.Run(source, [&](const FrameAnswer& answer) {
        std::lock_guard<std::mutex> lock(samples.mu);
        if (answer.result == nullptr) {
          ++samples.errors;
          return;
        }
        const v1::FrameTimings& t = answer.result->timings();
        const double model = t.preprocess_ms() + t.model_ms() + t.evict_ms();
        samples.latency.push_back(answer.latency_ms);
        samples.model.push_back(model);
        samples.queue.push_back(t.queue_ms());
        samples.server_overhead.push_back(t.total_ms() - t.queue_ms() - model);
      });
      statuses[s] = summary.status();
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (const absl::Status& status : statuses) {
    if (!status.ok()) {
      std::cerr << "a session failed: " << status << "\n";
      return 1;
    }
  }
  std::vector<double> overhead;
  for (size_t i = 0; i < samples.latency.size(); ++i) {
    overhead.push_back(samples.latency[i] - samples.model[i] - samples.queue[i]);
  }
  const int pid = absl::GetFlag(FLAGS_server_pid);
  if (absl::GetFlag(FLAGS_header)) {
    std::printf("| sessions | frames | frames/s | latency p50 ms | latency p99 ms | model p50 ms | "
                "queued p50 ms | overhead p50 ms | server-side overhead p50 ms | errors | "
                "server RSS MiB | server peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|"
                "---|---|---|\n");
  }
  std::printf("| %d | %zu | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %ld | %.0f | %.0f |\n",
              sessions, samples.latency.size(),
              static_cast<double>(samples.latency.size()) / seconds,
              Percentile(samples.latency, 50), Percentile(samples.latency, 99),
              Percentile(samples.model, 50), Percentile(samples.queue, 50),
              Percentile(overhead, 50), Percentile(samples.server_overhead, 50),
              static_cast<long>(samples.errors), pid > 0 ? ProcessMemoryMiB(pid, "VmRSS") : -1,
              pid > 0 ? ProcessMemoryMiB(pid, "VmHWM") : -1);
  return samples.errors == 0 ? 0 : 3;
}

}  // namespace
}  // namespace streamkv::client

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("N concurrent sessions x M frames against a streamkv server.");
  absl::ParseCommandLine(argc, argv);
  return streamkv::client::Run();
}
