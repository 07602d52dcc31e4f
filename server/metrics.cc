#include "server/metrics.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace streamkv::server {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;

// Frame stages take from well under a millisecond (decoding a small PNG) to tens of seconds (a
// full-size model on CPU).
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = new Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *buckets;
}

constexpr FrameFailure kFailures[] = {FrameFailure::kInvalidInput, FrameFailure::kOverBudget,
                                      FrameFailure::kSequence,     FrameFailure::kCancelled,
                                      FrameFailure::kUnavailable,  FrameFailure::kInternal};

}  // namespace

absl::string_view StageName(Stage stage) {
  switch (stage) {
    case Stage::kQueue: return "queue";
    case Stage::kDecode: return "decode";
    case Stage::kPreprocess: return "preprocess";
    case Stage::kModel: return "model";
    case Stage::kEvict: return "evict";
    case Stage::kEncode: return "encode";
    case Stage::kTotal: return "total";
  }
  return "unknown";
}

absl::string_view FrameFailureName(FrameFailure failure) {
  switch (failure) {
    case FrameFailure::kInvalidInput: return "invalid_input";
    case FrameFailure::kOverBudget: return "over_budget";
    case FrameFailure::kSequence: return "sequence";
    case FrameFailure::kCancelled: return "cancelled";
    case FrameFailure::kUnavailable: return "unavailable";
    case FrameFailure::kInternal: return "internal";
  }
  return "unknown";
}

ServerMetrics::ServerMetrics(const BuildInfo& build, const std::vector<std::string>& models,
                             const std::vector<std::string>& policies)
    : registry_(std::make_shared<prometheus::Registry>()),
      cache_tokens_(prometheus::BuildGauge()
                        .Name("streamkv_cache_tokens")
                        .Help("Tokens held in KV caches, summed over sessions, per cached layer")
                        .Register(*registry_)),
      cache_bytes_(prometheus::BuildGauge()
                       .Name("streamkv_cache_bytes")
                       .Help("Bytes of keys, values and token metadata held in KV caches, summed "
                             "over sessions, per cached layer")
                       .Register(*registry_)),
      evicted_tokens_(prometheus::BuildCounter()
                          .Name("streamkv_cache_evicted_tokens_total")
                          .Help("Tokens evicted from backbone KV caches, per layer")
                          .Register(*registry_)),
      sessions_rejected_(prometheus::BuildCounter()
                             .Name("streamkv_sessions_rejected_total")
                             .Help("Session opens and resumes refused, by reason")
                             .Register(*registry_)),
      sessions_reaped_(prometheus::BuildCounter()
                           .Name("streamkv_sessions_reaped_total")
                           .Help("Sessions freed by the server: idle past the idle timeout, or "
                                 "expired without resume")
                           .Register(*registry_)),
      sessions_closed_(prometheus::BuildCounter()
                           .Name("streamkv_sessions_closed_total")
                           .Help("Sessions ended by the client (end, close_rpc) or by shutdown")
                           .Register(*registry_)),
      sessions_(prometheus::BuildGauge()
                    .Name("streamkv_sessions")
                    .Help("Live sessions by state")
                    .Register(*registry_)),
      sessions_resumed_(prometheus::BuildCounter()
                            .Name("streamkv_sessions_resumed_total")
                            .Help("Sessions resumed on a new stream")
                            .Register(*registry_)
                            .Add({})),
      kv_used_bytes_(prometheus::BuildGauge()
                         .Name("streamkv_kv_cache_used_bytes")
                         .Help("Bytes live in every session's KV caches")
                         .Register(*registry_)
                         .Add({})),
      kv_allocated_bytes_(prometheus::BuildGauge()
                              .Name("streamkv_kv_cache_allocated_bytes")
                              .Help("Bytes allocated by every session's KV caches (capacity)")
                              .Register(*registry_)
                              .Add({})),
      kv_reserved_bytes_(prometheus::BuildGauge()
                             .Name("streamkv_kv_cache_reserved_bytes")
                             .Help("Bytes of the KV budget reserved by admitted sessions")
                             .Register(*registry_)
                             .Add({})),
      kv_budget_bytes_(prometheus::BuildGauge()
                           .Name("streamkv_kv_cache_budget_bytes")
                           .Help("The server's KV cache budget")
                           .Register(*registry_)
                           .Add({})),
      queued_frames_(prometheus::BuildGauge()
                         .Name("streamkv_queued_frames")
                         .Help("Frames received and waiting for the model, all sessions")
                         .Register(*registry_)
                         .Add({})),
      gpu_memory_(prometheus::BuildGauge()
                      .Name("streamkv_gpu_memory_bytes")
                      .Help("GPU memory of the model device: allocated and reserved by the "
                            "caching allocator, and the device total")
                      .Register(*registry_)) {
  prometheus::BuildGauge()
      .Name("streamkv_build_info")
      .Help("Version and build of the server; always 1")
      .Register(*registry_)
      .Add({{"version", build.version}, {"torch_version", build.torch_version},
            {"device", build.device}})
      .Set(1);
  for (const char* state : {"attached", "detached", "ending"}) sessions_.Add({{"state", state}});
  for (const char* reason : {"invalid_argument", "budget", "max_sessions", "shutting_down",
                             "not_found", "permission_denied"}) {
    sessions_rejected_.Add({{"reason", reason}});
  }
  for (const char* reason : {"idle", "expired"}) sessions_reaped_.Add({{"reason", reason}});
  for (const char* reason : {"end", "close_rpc", "shutdown"}) sessions_closed_.Add({{"reason", reason}});
  auto& failed = prometheus::BuildCounter()
                     .Name("streamkv_frames_failed_total")
                     .Help("Frames answered with an error instead of a result, by reason")
                     .Register(*registry_);
  auto& processed = prometheus::BuildCounter()
                        .Name("streamkv_frames_processed_total")
                        .Help("Frames the model processed")
                        .Register(*registry_);
  auto& opened = prometheus::BuildCounter()
                     .Name("streamkv_sessions_opened_total")
                     .Help("Sessions admitted")
                     .Register(*registry_);
  auto& overflow = prometheus::BuildCounter()
                       .Name("streamkv_protected_overflow_frames_total")
                       .Help("Frames after which protected tokens alone exceeded the policy's "
                             "budget (the policy keeps them)")
                       .Register(*registry_);
  auto& latency = prometheus::BuildHistogram()
                      .Name("streamkv_frame_latency_seconds")
                      .Help("Server-side frame latency by stage")
                      .Register(*registry_);
  for (const std::string& model : models) {
    ModelSeries& series = models_[model];
    for (const std::string& policy : policies) {
      const prometheus::Labels labels = {{"model", model}, {"policy", policy}};
      series.frames_processed[policy] = &processed.Add(labels);
      series.sessions_opened[policy] = &opened.Add(labels);
      series.protected_overflow[policy] = &overflow.Add(labels);
    }
    for (FrameFailure failure : kFailures) {
      series.frames_failed[failure] =
          &failed.Add({{"model", model}, {"reason", std::string(FrameFailureName(failure))}});
    }
    for (Stage stage : kStages) {
      series.latency[stage] = &latency.Add(
          {{"model", model}, {"stage", std::string(StageName(stage))}}, LatencyBuckets());
    }
  }
}

const ServerMetrics::ModelSeries& ServerMetrics::Series(const std::string& model) const {
  return models_.at(model);
}

std::unique_ptr<ServerMetrics::SessionCacheUsage> ServerMetrics::NewSessionCacheUsage(
    const std::string& model, const std::string& policy, std::vector<std::string> cache_names) {
  return std::unique_ptr<SessionCacheUsage>(
      new SessionCacheUsage(this, model, policy, std::move(cache_names)));
}

ServerMetrics::SessionCacheUsage::SessionCacheUsage(ServerMetrics* metrics, std::string model,
                                                    std::string policy,
                                                    std::vector<std::string> cache_names)
    : metrics_(metrics),
      model_(std::move(model)),
      policy_(std::move(policy)),
      cache_names_(std::move(cache_names)),
      current_(cache_names_.size()) {}

ServerMetrics::SessionCacheUsage::~SessionCacheUsage() {
  MoveTo(std::vector<CacheCounts>(cache_names_.size()));
}

void ServerMetrics::SessionCacheUsage::Update(const std::vector<CacheCounts>& counts,
                                              const std::vector<int64_t>& evicted) {
  MoveTo(counts);
  for (size_t layer = 0; layer < evicted.size(); ++layer) {
    if (evicted[layer] == 0) continue;
    metrics_->evicted_tokens_
        .Add({{"model", model_}, {"policy", policy_}, {"layer", absl::StrCat(layer)}})
        .Increment(static_cast<double>(evicted[layer]));
  }
}

void ServerMetrics::SessionCacheUsage::MoveTo(std::vector<CacheCounts> counts) {
  counts.resize(cache_names_.size());
  // Element i of `v`, 0 past its end: caches gain layers only once, at their first frame.
  auto at = [](const std::vector<int64_t>& v, size_t i) { return i < v.size() ? v[i] : 0; };
  for (size_t c = 0; c < counts.size(); ++c) {
    const CacheCounts& from = current_[c];
    const CacheCounts& to = counts[c];
    const size_t layers = std::max(from.layer_tokens.size(), to.layer_tokens.size());
    for (size_t layer = 0; layer < layers; ++layer) {
      const double tokens = static_cast<double>(at(to.layer_tokens, layer) -
                                                at(from.layer_tokens, layer));
      const double bytes =
          static_cast<double>(at(to.layer_bytes, layer) - at(from.layer_bytes, layer));
      if (tokens != 0) metrics_->LayerGauge(metrics_->cache_tokens_, *this, c, layer).Increment(tokens);
      if (bytes != 0) metrics_->LayerGauge(metrics_->cache_bytes_, *this, c, layer).Increment(bytes);
      metrics_->kv_used_bytes_.Increment(bytes);
    }
    metrics_->kv_allocated_bytes_.Increment(
        static_cast<double>(to.allocated_bytes - from.allocated_bytes));
  }
  current_ = std::move(counts);
}

prometheus::Gauge& ServerMetrics::LayerGauge(prometheus::Family<prometheus::Gauge>& family,
                                             const SessionCacheUsage& usage, size_t cache,
                                             size_t layer) {
  return family.Add({{"model", usage.model_},
                     {"policy", usage.policy_},
                     {"cache", usage.cache_names_[cache]},
                     {"layer", absl::StrCat(layer)}});
}

void ServerMetrics::SessionOpened(const std::string& model, const std::string& policy) {
  Series(model).sessions_opened.at(policy)->Increment();
}

void ServerMetrics::SessionRejected(absl::string_view reason) {
  sessions_rejected_.Add({{"reason", std::string(reason)}}).Increment();
}

void ServerMetrics::SessionResumed() { sessions_resumed_.Increment(); }

void ServerMetrics::SessionReaped(absl::string_view reason) {
  sessions_reaped_.Add({{"reason", std::string(reason)}}).Increment();
}

void ServerMetrics::SessionClosed(absl::string_view reason) {
  sessions_closed_.Add({{"reason", std::string(reason)}}).Increment();
}

void ServerMetrics::SetSessions(int64_t attached, int64_t detached, int64_t ending) {
  sessions_.Add({{"state", "attached"}}).Set(static_cast<double>(attached));
  sessions_.Add({{"state", "detached"}}).Set(static_cast<double>(detached));
  sessions_.Add({{"state", "ending"}}).Set(static_cast<double>(ending));
}

void ServerMetrics::ProtectedOverflow(const std::string& model, const std::string& policy) {
  Series(model).protected_overflow.at(policy)->Increment();
}

void ServerMetrics::FrameProcessed(const std::string& model, const std::string& policy) {
  Series(model).frames_processed.at(policy)->Increment();
}

void ServerMetrics::FrameFailed(const std::string& model, FrameFailure failure) {
  Series(model).frames_failed.at(failure)->Increment();
}

void ServerMetrics::ObserveStage(const std::string& model, Stage stage, double seconds) {
  Series(model).latency.at(stage)->Observe(seconds);
}

void ServerMetrics::AddQueuedFrames(int64_t delta) {
  queued_frames_.Increment(static_cast<double>(delta));
}

void ServerMetrics::SetKvBudget(int64_t budget_bytes, int64_t reserved_bytes) {
  kv_budget_bytes_.Set(static_cast<double>(budget_bytes));
  kv_reserved_bytes_.Set(static_cast<double>(reserved_bytes));
}

void ServerMetrics::SetGpuMemory(int64_t allocated_bytes, int64_t reserved_bytes,
                                 int64_t total_bytes) {
  gpu_memory_.Add({{"kind", "allocated"}}).Set(static_cast<double>(allocated_bytes));
  gpu_memory_.Add({{"kind", "reserved"}}).Set(static_cast<double>(reserved_bytes));
  gpu_memory_.Add({{"kind", "total"}}).Set(static_cast<double>(total_bytes));
}

}  // namespace streamkv::server
