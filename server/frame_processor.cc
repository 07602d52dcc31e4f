#include "server/frame_processor.h"

#include <chrono>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/device_memory.h"
#include "server/log.h"
#include "server/model_registry.h"
#include "server/session_open.h"
#include "server/tensor_codec.h"

namespace streamkv::server {
namespace {

using SteadyClock = std::chrono::steady_clock;

double MillisecondsBetween(SteadyClock::time_point start, SteadyClock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

FrameFailure FailureOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return FrameFailure::kInvalidInput;
    case absl::StatusCode::kResourceExhausted: return FrameFailure::kOverBudget;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange: return FrameFailure::kSequence;
    case absl::StatusCode::kCancelled: return FrameFailure::kCancelled;
    case absl::StatusCode::kUnavailable: return FrameFailure::kUnavailable;
    default: return FrameFailure::kInternal;
  }
}

// Live bytes of every cache of the stream, and the most one more frame can add before eviction.
struct CacheBytes {
  int64_t live = 0;
  int64_t next_frame = 0;
};
CacheBytes BytesOf(const models::StreamState& stream) {
  CacheBytes bytes;
  for (const cache::KvCache* cache : stream.caches()) {
    const cache::KvCacheOptions& options = cache->options();
    for (int64_t layer = 0; layer < cache->num_layers(); ++layer) {
      bytes.live += cache->LiveBytes(layer);
    }
    bytes.next_frame += cache->num_layers() * options.geometry.tokens_per_frame *
                        options.geometry.BytesPerToken(options.granularity);
  }
  return bytes;
}

}  // namespace

FrameProcessor::FrameProcessor(FrameProcessorOptions options, ServerMetrics* metrics,
                               Clock* clock)
    : options_(options), metrics_(metrics), clock_(clock) {}

bool FrameProcessor::RunOne(const std::shared_ptr<Session>& session) {
  SessionWork* work = nullptr;
  std::optional<QueuedFrame> frame = session->BeginFrame(&work);
  if (!frame) return false;
  if (frame->origin != nullptr) frame->origin->QueueSpace();

  Answer answer;
  if (!frame->rejection.ok()) {
    answer = Fail(*session, frame->frame.sequence(), frame->rejection);
  } else {
    try {
      answer = Process(*session, *work, *frame);
    } catch (const std::exception& e) {
      answer = Fail(*session, frame->frame.sequence(),
                    absl::InternalError(absl::StrCat("frame failed: ", e.what())));
    }
  }
  const Session::Completion completion =
      session->EndFrame(*frame, answer.response, answer.processed,
                        answer.cache ? &*answer.cache : nullptr, clock_->Now());
  if (completion.deliver_to != nullptr) completion.deliver_to->FrameDone(answer.response);
  if (completion.attached != nullptr) completion.attached->Attached(completion.attach_messages);
  return completion.reschedule;
}

FrameProcessor::Answer FrameProcessor::Fail(const Session& session, uint64_t sequence,
                                            const absl::Status& status) {
  metrics_->FrameFailed(session.spec().model->name, FailureOf(status.code()));
  Answer answer;
  answer.response = std::make_shared<v1::StreamResponse>();
  v1::FrameError& error = *answer.response->mutable_error();
  error.set_sequence(sequence);
  error.set_code(static_cast<int32_t>(status.code()));
  error.set_message(std::string(status.message()));
  return answer;
}

FrameProcessor::Answer FrameProcessor::Process(const Session& session, SessionWork& work,
                                               const QueuedFrame& frame) {
  const SessionSpec& spec = session.spec();
  const std::string& model_name = spec.model->name;
  const uint64_t sequence = frame.frame.sequence();
  const SteadyClock::time_point start = SteadyClock::now();
  v1::FrameTimings timings;
  timings.set_queue_ms(MillisecondsBetween(frame.received, start));

  absl::StatusOr<at::Tensor> image = DecodeFrameImage(frame.frame, options_.image_limits);
  const SteadyClock::time_point decoded = SteadyClock::now();
  timings.set_decode_ms(MillisecondsBetween(start, decoded));
  if (!image.ok()) return Fail(session, sequence, image.status());

  if (work.stream == nullptr) {
    const int64_t height = spec.frame_height > 0 ? spec.frame_height : image->size(1);
    const int64_t width = spec.frame_width > 0 ? spec.frame_width : image->size(2);
    if (absl::Status opened = OpenModelStream(spec, height, width, metrics_, &work);
        !opened.ok()) {
      return Fail(session, sequence, opened);
    }
  }
  const CacheBytes before = BytesOf(*work.stream);
  if (before.live + before.next_frame > spec.budget_bytes) {
    return Fail(session, sequence,
                absl::ResourceExhaustedError(absl::StrCat(
                    "the session's KV cache holds ", before.live, " bytes and a frame adds up to ",
                    before.next_frame, " before eviction, beyond its budget of ",
                    spec.budget_bytes, " bytes; use a bounding eviction policy or a larger "
                    "kv_budget_bytes")));
  }

  const models::Model& model = *spec.model->model;
  absl::StatusOr<models::FrameResult> result = model.ProcessFrame(*work.stream, {*image});
  if (!result.ok()) return Fail(session, sequence, result.status());

  const SteadyClock::time_point encode_start = SteadyClock::now();
  Answer answer;
  answer.processed = true;
  answer.response = std::make_shared<v1::StreamResponse>();
  v1::FrameResult& out = *answer.response->mutable_result();
  out.set_sequence(sequence);
  out.set_frame_index(static_cast<uint64_t>(work.stream->frames_processed() - 1));
  for (const std::string& name : spec.outputs) {
    const at::Tensor value = result->Output(name);
    if (value.defined()) EncodeTensor(name, value, spec.dtype, out.add_outputs());
  }

  // Cache state for the client, the metrics and SessionInfo.
  v1::CacheState& state = *out.mutable_cache();
  std::vector<CacheCounts> counts;
  const std::vector<const cache::KvCache*> caches = work.stream->caches();
  for (size_t c = 0; c < caches.size(); ++c) {
    const cache::CacheSnapshot snapshot = caches[c]->Snapshot();
    counts.push_back({snapshot.tokens, snapshot.bytes, snapshot.allocated_bytes});
    state.set_bytes(state.bytes() + snapshot.total_bytes);
    if (c == 0) {
      for (int64_t tokens : snapshot.tokens) state.add_layer_tokens(tokens);
    } else {
      state.set_auxiliary_tokens(state.auxiliary_tokens() + snapshot.total_tokens);
    }
  }
  for (int64_t evicted : result->eviction.evicted) state.add_layer_evicted(evicted);
  state.set_budget_bytes(spec.budget_bytes);
  state.set_protected_overflow_tokens(result->eviction.protected_overflow);
  work.cache_usage->Update(counts, result->eviction.evicted);
  answer.cache = state;
  if (result->eviction.protected_overflow > 0) {
    metrics_->ProtectedOverflow(model_name, spec.policy);
    if (!std::exchange(work.protected_overflow_logged, true)) {
      LogWarning("session ", spec.id, ": policy ", spec.policy, " keeps ",
                 result->eviction.protected_overflow,
                 " protected tokens beyond its budget (logged once per session)");
    }
  }

  const SteadyClock::time_point end = SteadyClock::now();
  timings.set_preprocess_ms(result->timings.preprocess_ms);
  timings.set_model_ms(result->timings.model_ms);
  timings.set_evict_ms(result->timings.evict_ms);
  timings.set_encode_ms(MillisecondsBetween(encode_start, end));
  timings.set_total_ms(MillisecondsBetween(frame.received, end));
  *out.mutable_timings() = timings;

  metrics_->FrameProcessed(model_name, spec.policy);
  const std::pair<Stage, double> stages[] = {
      {Stage::kQueue, timings.queue_ms()},         {Stage::kDecode, timings.decode_ms()},
      {Stage::kPreprocess, timings.preprocess_ms()}, {Stage::kModel, timings.model_ms()},
      {Stage::kEvict, timings.evict_ms()},         {Stage::kEncode, timings.encode_ms()},
      {Stage::kTotal, timings.total_ms()}};
  for (const auto& [stage, ms] : stages) metrics_->ObserveStage(model_name, stage, ms / 1000);
  PublishGpuMemory(model.device());
  return answer;
}

void FrameProcessor::PublishGpuMemory(c10::Device device) {
  if (std::optional<DeviceMemory> memory = QueryDeviceMemory(device)) {
    metrics_->SetGpuMemory(memory->allocated_bytes, memory->reserved_bytes, memory->total_bytes);
  }
}

}  // namespace streamkv::server
