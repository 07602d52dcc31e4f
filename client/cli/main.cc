// streamkv-client: streams frames to a streamkv server and saves what comes back.
//
//   streamkv-client --server=localhost:50051 --input=frames/ --policy=layerwise
//                   --policy_params=budget_frames=16 --out=out/run
//   streamkv-client --input=synthetic --frames=200 --size=168x224
//
// Writes OUT/frame_NNNNNN/<output>.npy (as streamkv-infer), OUT/trajectory.tum, OUT/points.ply
// and OUT/cache_tokens.csv; prints per-frame latency and per-layer cached tokens.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/frame_source.h"
#include "client/outputs.h"
#include "client/percentile.h"
#include "client/stream_runner.h"

ABSL_FLAG(std::string, server, "localhost:50051", "Server address host:port");
ABSL_FLAG(std::string, input, "synthetic",
          "A folder of JPEG/PNG frames (name order), or 'synthetic' for a generated sequence");
ABSL_FLAG(int64_t, frames, 60, "Synthetic frames to send");
ABSL_FLAG(std::string, size, "168x224", "Synthetic frame size HxW");
ABSL_FLAG(std::string, synthetic_format, "jpeg", "Synthetic frames as jpeg or raw RGB");
ABSL_FLAG(std::string, model, "", "Model name (empty: the server's default)");
ABSL_FLAG(std::string, policy, "none", "Eviction policy");
ABSL_FLAG(std::string, policy_params, "", "Policy parameters name=value,name=value");
ABSL_FLAG(int64_t, kv_budget_bytes, 0, "Session KV budget in bytes (0: the server's default)");
ABSL_FLAG(std::string, outputs, "", "Comma-separated outputs to fetch (empty: all)");
ABSL_FLAG(std::string, dtype, "f32", "Output dtype: f32 or f16");
ABSL_FLAG(std::string, out, "out/client", "Output folder; empty saves nothing");
ABSL_FLAG(std::string, save, "npy,tum,ply,csv", "What to save: any of npy, tum, ply, csv");
ABSL_FLAG(double, ply_conf_percentile, 50, "Per frame, drop points below this confidence percentile");
ABSL_FLAG(int, window, 4, "Frames in flight (sent, not yet answered)");
ABSL_FLAG(int, resume_attempts, 3, "Reconnect-and-resume attempts after a broken stream");
ABSL_FLAG(int64_t, disconnect_after, 0,
          "Demo of resume: break the stream once after this many answers (0: never)");
ABSL_FLAG(bool, keep_session, false, "Leave the session open on the server (no EndSession)");
ABSL_FLAG(std::string, label, "streamkv-client", "Session label shown by ListSessions");
ABSL_FLAG(std::string, token_file, "", "File with the server's bearer token");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificates: connect with TLS");
ABSL_FLAG(bool, quiet, false, "No per-frame lines (progress and summary only)");
ABSL_FLAG(bool, describe, false, "Print the server's description and exit");

namespace streamkv::client {
namespace {

int Fail(absl::string_view message) {
  std::cerr << "streamkv-client: " << message << "\n";
  return 1;
}

absl::StatusOr<std::unique_ptr<FrameSource>> MakeSource() {
  const std::string input = absl::GetFlag(FLAGS_input);
  if (input != "synthetic") return ImageFolderSource(input);
  std::vector<std::string> sides = absl::StrSplit(absl::GetFlag(FLAGS_size), 'x');
  int64_t height = 0, width = 0;
  if (sides.size() != 2 || !absl::SimpleAtoi(sides[0], &height) ||
      !absl::SimpleAtoi(sides[1], &width) || height <= 0 || width <= 0) {
    return absl::InvalidArgumentError("--size must be HxW, e.g. 168x224");
  }
  const std::string format = absl::GetFlag(FLAGS_synthetic_format);
  if (format != "jpeg" && format != "raw") {
    return absl::InvalidArgumentError("--synthetic_format must be jpeg or raw");
  }
  return SyntheticSource(absl::GetFlag(FLAGS_frames), height, width,
                         format == "jpeg" ? SyntheticEncoding::kJpeg : SyntheticEncoding::kRaw);
}

absl::StatusOr<v1::OpenSession> MakeOpen() {
  v1::OpenSession open;
  open.set_model(absl::GetFlag(FLAGS_model));
  open.set_policy(absl::GetFlag(FLAGS_policy));
  if (absl::Status s = SetPolicyParams(absl::GetFlag(FLAGS_policy_params), &open); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--policy_params: ", s.message()));
  }
  open.set_kv_budget_bytes(absl::GetFlag(FLAGS_kv_budget_bytes));
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_outputs), ',', absl::SkipWhitespace())) {
    open.mutable_outputs()->add_names(std::string(name));
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype != "f32" && dtype != "f16") return absl::InvalidArgumentError("--dtype: f32 or f16");
  open.mutable_outputs()->set_dtype(dtype == "f16" ? v1::TENSOR_DTYPE_FLOAT16
                                                   : v1::TENSOR_DTYPE_FLOAT32);
  open.set_label(absl::GetFlag(FLAGS_label));
  return open;
}

void PrintDescription(const v1::ServerDescription& d) {
  std::printf("streamkv %s on %s (instance %s)\n", d.version().c_str(), d.device().c_str(),
              d.instance_id().c_str());
  for (const v1::ModelDescription& m : d.models()) {
    std::printf("model %s%s: family %s, %lld cached layers (%s), width %lld, outputs %s\n",
                m.name().c_str(), m.name() == d.default_model() ? " (default)" : "",
                m.family().c_str(), static_cast<long long>(m.cached_layers()),
                m.cache_dtype().c_str(), static_cast<long long>(m.image_width()),
                absl::StrJoin(m.output_names(), ", ").c_str());
  }
  for (const v1::PolicyDescription& p : d.policies()) {
    std::printf("policy %s: %s\n", p.name().c_str(), p.summary().c_str());
    for (const v1::ParamDescription& param : p.params()) {
      std::printf("  %s (%s, default '%s'): %s\n", param.name().c_str(), param.type().c_str(),
                  param.default_value().c_str(), param.help().c_str());
    }
  }
  const v1::Budgets& b = d.budgets();
  std::printf("KV budget %lld bytes, %lld reserved, %lld in use; sessions get %lld by default\n",
              static_cast<long long>(b.kv_budget_bytes()),
              static_cast<long long>(b.kv_reserved_bytes()),
              static_cast<long long>(b.kv_in_use_bytes()),
              static_cast<long long>(b.default_session_budget_bytes()));
}

int Run() {
  ClientOptions options;
  options.address = absl::GetFlag(FLAGS_server);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    std::ifstream in(path);
    std::stringstream token;
    token << in.rdbuf();
    options.bearer_token = std::string(absl::StripAsciiWhitespace(token.str()));
    if (!in || options.bearer_token.empty()) return Fail("--token_file: cannot read a token");
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
  if (!client.ok()) return Fail(client.status().message());
  if (absl::GetFlag(FLAGS_describe)) {
    absl::StatusOr<v1::ServerDescription> description = (*client)->Describe();
    if (!description.ok()) return Fail(description.status().ToString());
    PrintDescription(*description);
    return 0;
  }

  absl::StatusOr<std::unique_ptr<FrameSource>> source = MakeSource();
  if (!source.ok()) return Fail(source.status().message());
  absl::StatusOr<v1::OpenSession> open = MakeOpen();
  if (!open.ok()) return Fail(open.status().message());

  std::unique_ptr<ResultWriter> writer;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty()) {
    const std::string save = absl::GetFlag(FLAGS_save);
    const std::vector<std::string> kinds = absl::StrSplit(save, ',', absl::SkipWhitespace());
    auto wants = [&](const char* kind) {
      return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
    };
    ResultWriterOptions writer_options;
    writer_options.dir = out;
    writer_options.npy = wants("npy");
    writer_options.trajectory = wants("tum");
    writer_options.point_cloud = wants("ply");
    writer_options.tokens_csv = wants("csv");
    writer_options.ply_conf_percentile = absl::GetFlag(FLAGS_ply_conf_percentile);
    absl::StatusOr<std::unique_ptr<ResultWriter>> created = ResultWriter::Create(writer_options);
    if (!created.ok()) return Fail(created.status().message());
    writer = std::move(*created);
  }

  RunnerOptions runner_options;
  runner_options.open = *open;
  runner_options.max_in_flight = std::max(1, absl::GetFlag(FLAGS_window));
  runner_options.max_resumes = absl::GetFlag(FLAGS_resume_attempts);
  runner_options.end_session = !absl::GetFlag(FLAGS_keep_session);
  StreamRunner runner(client->get(), runner_options);

  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const std::optional<int64_t> total = (*source)->size();
  const int64_t disconnect_after = absl::GetFlag(FLAGS_disconnect_after);
  std::vector<double> latencies;
  absl::Status write_error;
  const absl::Time start = absl::Now();
  int64_t answered = 0;
  absl::StatusOr<RunSummary> summary = runner.Run(**source, [&](const FrameAnswer& answer) {
    ++answered;
    latencies.push_back(answer.latency_ms);
    if (answer.error != nullptr) {
      std::printf("frame %lld: error %d: %s\n", static_cast<long long>(answer.index),
                  answer.error->code(), answer.error->message().c_str());
    } else {
      const v1::FrameResult& r = *answer.result;
      if (!quiet) {
        std::printf("frame %lld: %.1f ms (server %.1f, model %.1f, evict %.2f), cache %.2f MiB, "
                    "tokens per layer [%s]\n",
                    static_cast<long long>(answer.index), answer.latency_ms,
                    r.timings().total_ms(), r.timings().model_ms(), r.timings().evict_ms(),
                    static_cast<double>(r.cache().bytes()) / (1 << 20),
                    absl::StrJoin(r.cache().layer_tokens(), " ").c_str());
      }
      if (writer != nullptr && write_error.ok()) write_error = writer->Add(answer.index, r);
    }
    if (tty) {
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      std::fprintf(stderr, "\r%lld%s frames, %.1f frames/s   ", static_cast<long long>(answered),
                   total ? absl::StrCat("/", *total).c_str() : "",
                   static_cast<double>(answered) / std::max(seconds, 1e-9));
    }
    if (disconnect_after > 0 && answered == disconnect_after) {
      std::fprintf(stderr, "\n(breaking the stream to demonstrate resume)\n");
      runner.Disconnect();
    }
  });
  if (tty) std::fputc('\n', stderr);
  if (!summary.ok()) return Fail(summary.status().ToString());
  if (!write_error.ok()) return Fail(write_error.message());

  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("session %s on %s: %lld frames sent, %lld results, %lld errors, %lld lost, "
              "%lld resumes\n",
              summary->opened.session_id().c_str(), summary->opened.instance_id().c_str(),
              static_cast<long long>(summary->frames_sent),
              static_cast<long long>(summary->results), static_cast<long long>(summary->errors),
              static_cast<long long>(summary->lost), static_cast<long long>(summary->resumes));
  std::printf("%.1f frames/s; latency p50 %.1f ms, p99 %.1f ms\n",
              static_cast<double>(answered) / std::max(seconds, 1e-9), Percentile(latencies, 50),
              Percentile(latencies, 99));
  if (runner_options.end_session == false) {
    std::printf("session kept open: resume token %s\n", summary->opened.resume_token().c_str());
  }
  if (writer != nullptr) {
    absl::StatusOr<std::vector<std::string>> written = writer->Finish();
    if (!written.ok()) return Fail(written.status().message());
    std::printf("outputs written: %s\n", absl::StrJoin(*written, ", ").c_str());
  }
  return summary->errors == 0 ? 0 : 3;
}

}  // namespace
}  // namespace streamkv::client

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Streams frames to a streamkv server and saves the results.");
  absl::ParseCommandLine(argc, argv);
  return streamkv::client::Run();
}
