// streamkv-server: serves streaming visual transformers over gRPC with per-session KV caches.
//
//   streamkv-server                                  # the built-in tiny model on CPU
//   streamkv-server --model_dir=/models/stream3r --device=cuda --kv_budget=60GiB
//
// SIGTERM or SIGINT: stop admitting, answer queued frames for up to --drain_timeout, end streams
// with UNAVAILABLE, exit 0.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/byte_size.h"
#include "server/device_memory.h"
#include "server/log.h"
#include "server/server.h"

using streamkv::server::ByteSize;

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address (port 0: any free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "Prometheus /metrics listen address; empty disables the endpoint");
ABSL_FLAG(std::string, model_dir, "",
          "STream3R model folder (config.json + model.safetensors); empty serves the built-in "
          "tiny random-weight model");
ABSL_FLAG(std::string, config, "",
          "STream3R JSON config (default: <model_dir>/config.json)");
ABSL_FLAG(std::string, weights, "",
          "STream3R safetensors weights (default: <model_dir>/model.safetensors)");
ABSL_FLAG(std::string, model_name, "",
          "Name clients open the model by (default: stream3r, or stream3r-tiny for the built-in)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N]");
ABSL_FLAG(std::string, backbone_dtype, "auto",
          "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16");
ABSL_FLAG(int, workers, 0,
          "Model worker threads; 0: 2 on CUDA, min(cores, 4) on CPU (cores as the cgroup allows)");
ABSL_FLAG(int, intra_op_threads, 0, "ATen intra-op threads per worker; 0 keeps ATen's default");
ABSL_FLAG(ByteSize, kv_budget, ByteSize{0},
          "KV cache bytes for all sessions together; 0: 80% of free GPU memory after loading on "
          "CUDA, 25% of memory (physical, or the cgroup's limit when lower) on CPU");
ABSL_FLAG(ByteSize, session_budget, ByteSize{0},
          "KV budget of a session that asks for none; 0: min(2GiB, --kv_budget / 8)");
ABSL_FLAG(ByteSize, max_session_budget, ByteSize{0},
          "Largest KV budget one session may ask for; 0: --kv_budget");
ABSL_FLAG(int, max_sessions, 64, "Sessions held at once (attached or awaiting resume)");
ABSL_FLAG(int, max_queued_frames, 8, "Frames queued per session before the stream stops reading");
ABSL_FLAG(int, replay_frames, 4, "Answers kept per session for replay on resume");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Minutes(10),
          "Free an attached session that sends no frame for this long");
ABSL_FLAG(absl::Duration, resume_grace, absl::Seconds(60),
          "Free a disconnected session not resumed within this");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "On SIGTERM, how long queued frames are still answered");
ABSL_FLAG(ByteSize, max_message, ByteSize{64 << 20}, "Largest request message");
ABSL_FLAG(int, max_image_side, 8192, "Largest frame width or height in pixels");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain; with --tls_key enables TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, bearer_token_file, "",
          "File holding a token every streamkv call must present as 'authorization: Bearer "
          "<token>' (health and reflection stay open)");
ABSL_FLAG(std::string, instance_id, "",
          "This instance's identity in SessionOpened (default: $POD_NAME, else the host name)");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port clients reconnect to for resume (default: $POD_IP with the listen port)");
ABSL_FLAG(std::string, port_file, "",
          "Once serving, write 'grpc_port=N' and 'metrics_port=M' lines to this file");

namespace streamkv::server {
namespace {

int Fail(absl::string_view message) {
  LogError(message);
  return 1;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

std::string HostName() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
}

absl::StatusOr<c10::ScalarType> BackboneDtype(const std::string& text, c10::Device device) {
  if (text == "auto") return device.is_cuda() ? c10::kBFloat16 : c10::kFloat;
  if (text == "float32") return c10::kFloat;
  if (text == "bfloat16") return c10::kBFloat16;
  if (text == "float16") return c10::kHalf;
  return absl::InvalidArgumentError(absl::StrCat("--backbone_dtype: unknown dtype '", text, "'"));
}

// Writes `text` to `path` through a temporary file, so readers never see half of it.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  std::ofstream(temporary) << text;
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", error.message()));
  return absl::OkStatus();
}

int Run(const sigset_t& signals) {
  ModelPlacement placement;
  try {
    placement.device = c10::Device(absl::GetFlag(FLAGS_device));
  } catch (const c10::Error&) {
    return Fail(absl::StrCat("--device: unknown device '", absl::GetFlag(FLAGS_device), "'"));
  }
  absl::StatusOr<c10::ScalarType> dtype =
      BackboneDtype(absl::GetFlag(FLAGS_backbone_dtype), placement.device);
  if (!dtype.ok()) return Fail(dtype.status().message());
  placement.backbone_dtype = *dtype;
  if (absl::GetFlag(FLAGS_intra_op_threads) > 0) {
    at::set_num_threads(absl::GetFlag(FLAGS_intra_op_threads));
  }

  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  std::string config = absl::GetFlag(FLAGS_config);
  std::string weights = absl::GetFlag(FLAGS_weights);
  if (config.empty() && !model_dir.empty()) config = model_dir + "/config.json";
  if (weights.empty() && !model_dir.empty()) weights = model_dir + "/model.safetensors";
  if (config.empty() != weights.empty()) {
    return Fail("--config and --weights go together (or give --model_dir)");
  }
  std::string model_name = absl::GetFlag(FLAGS_model_name);
  absl::StatusOr<std::unique_ptr<ServedModel>> model;
  if (weights.empty()) {
    if (model_name.empty()) model_name = "stream3r-tiny";
    LogInfo("no model flags: serving the built-in tiny random-weight STream3R as '", model_name,
            "' (for trying the server out; its predictions are meaningless)");
    model = LoadBuiltinTinyStream3r(model_name, placement);
  } else {
    if (model_name.empty()) model_name = "stream3r";
    LogInfo("loading ", weights, " (config ", config, ") as '", model_name, "' on ",
            placement.device.str());
    model = LoadStream3r(config, weights, model_name, placement);
  }
  if (!model.ok()) return Fail(model.status().message());
  ModelRegistry models;
  models.Add(std::move(*model));

  ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_listen);
  const int cores = AvailableCores();
  options.workers = absl::GetFlag(FLAGS_workers) > 0 ? absl::GetFlag(FLAGS_workers)
                    : placement.device.is_cuda()     ? 2
                                                     : std::min(cores, 4);
  int64_t kv_budget = absl::GetFlag(FLAGS_kv_budget).bytes;
  if (kv_budget == 0) {
    const std::optional<DeviceMemory> gpu = QueryDeviceMemory(placement.device);
    kv_budget = gpu ? gpu->free_bytes / 10 * 8 : AvailableMemoryBytes() / 4;
  }
  options.kv_budget_bytes = kv_budget;
  options.max_session_budget_bytes = absl::GetFlag(FLAGS_max_session_budget).bytes > 0
                                         ? absl::GetFlag(FLAGS_max_session_budget).bytes
                                         : kv_budget;
  options.default_session_budget_bytes =
      absl::GetFlag(FLAGS_session_budget).bytes > 0
          ? absl::GetFlag(FLAGS_session_budget).bytes
          : std::min<int64_t>({int64_t{2} << 30, kv_budget / 8, options.max_session_budget_bytes});
  options.sessions.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.sessions.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.sessions.resume_grace = absl::GetFlag(FLAGS_resume_grace);
  options.sessions.session_limits.max_queued_frames = absl::GetFlag(FLAGS_max_queued_frames);
  options.sessions.session_limits.replay_frames = absl::GetFlag(FLAGS_replay_frames);
  options.image_limits.max_width = absl::GetFlag(FLAGS_max_image_side);
  options.image_limits.max_height = absl::GetFlag(FLAGS_max_image_side);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message).bytes;
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  if (const std::string path = absl::GetFlag(FLAGS_bearer_token_file); !path.empty()) {
    std::ifstream in(path);
    std::stringstream token;
    token << in.rdbuf();
    options.bearer_token = std::string(absl::StripAsciiWhitespace(token.str()));
    if (!in || options.bearer_token.empty()) {
      return Fail(absl::StrCat("--bearer_token_file: cannot read a token from ", path));
    }
  }
  options.build = {PROJECT_VERSION, TORCH_VERSION, placement.device.str()};
  options.sessions.instance_id = absl::GetFlag(FLAGS_instance_id);
  if (options.sessions.instance_id.empty()) {
    options.sessions.instance_id = EnvOr("POD_NAME", HostName());
  }

  options.sessions.instance_address = absl::GetFlag(FLAGS_advertise_address);
  if (options.sessions.instance_address.empty() && std::getenv("POD_IP") != nullptr) {
    const std::string& listen = options.listen_address;
    options.sessions.instance_address =
        absl::StrCat(std::getenv("POD_IP"), listen.substr(listen.rfind(':')));
  }

  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options, std::move(models));
  if (!server.ok()) return Fail(server.status().message());
  LogInfo("serving gRPC on port ", (*server)->port(), ", metrics on port ",
          (*server)->metrics_port(), "; ", options.workers, " worker(s), KV budget ",
          options.kv_budget_bytes, " bytes (sessions: ", options.default_session_budget_bytes,
          " by default, at most ", options.max_session_budget_bytes, ")");
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    if (absl::Status s = WriteFileAtomically(
            path, absl::StrCat("grpc_port=", (*server)->port(), "\nmetrics_port=",
                               (*server)->metrics_port(), "\n"));
        !s.ok()) {
      return Fail(s.message());
    }
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo("received ", strsignal(signal_number));
  (*server)->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  return 0;
}

}  // namespace
}  // namespace streamkv::server

int main(int argc, char** argv) {
  // Every thread inherits this mask, so SIGTERM/SIGINT reach only the sigwait in Run.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::SetProgramUsageMessage(
      "Serves streaming visual transformers over gRPC with per-session KV caches.");
  absl::ParseCommandLine(argc, argv);
  return streamkv::server::Run(signals);
}
