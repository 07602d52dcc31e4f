// The server's Prometheus metrics (DESIGN.md §6). Labels are bounded: model, policy, cache,
// layer, stage, reason, state, kind; never a session id.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/strings/string_view.h"

namespace streamkv::server {

// Stages of a frame, timed into streamkv_frame_latency_seconds{stage}.
enum class Stage { kQueue, kDecode, kPreprocess, kModel, kEvict, kEncode, kTotal };
inline constexpr Stage kStages[] = {Stage::kQueue,  Stage::kDecode, Stage::kPreprocess,
                                    Stage::kModel,  Stage::kEvict,  Stage::kEncode,
                                    Stage::kTotal};
absl::string_view StageName(Stage stage);

// Why a frame produced no result: streamkv_frames_failed_total{reason}.
enum class FrameFailure { kInvalidInput, kOverBudget, kSequence, kCancelled, kUnavailable, kInternal };
absl::string_view FrameFailureName(FrameFailure failure);

struct BuildInfo {
  std::string version;
  std::string torch_version;
  std::string device;  // "cpu", "cuda:0"
};

// Live cache figures of one cache of one session: tokens and bytes per layer, bytes allocated.
struct CacheCounts {
  std::vector<int64_t> layer_tokens;
  std::vector<int64_t> layer_bytes;
  int64_t allocated_bytes = 0;
};

// Owns the registry and every metric family. Thread-safe (prometheus-cpp metrics are atomic).
class ServerMetrics {
 public:
  // `models` are the served model names, `policies` the registered policy names: every series
  // that carries them exists from the start, so rates and absent() behave from the first scrape.
  ServerMetrics(const BuildInfo& build, const std::vector<std::string>& models,
                const std::vector<std::string>& policies);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One session's contribution to the per-layer cache gauges and the byte totals, for a fixed
  // (model, policy) and named caches ("backbone" first). Update() replaces the previous counts
  // (each series moves by its delta, so a scrape never sees a session half-counted);
  // destruction removes them, so the gauges return to zero when every session has ended. Used by
  // one thread at a time.
  class SessionCacheUsage {
   public:
    SessionCacheUsage(const SessionCacheUsage&) = delete;
    SessionCacheUsage& operator=(const SessionCacheUsage&) = delete;
    ~SessionCacheUsage();
    // counts[c] for cache_names[c]; evicted[l]: tokens evicted from backbone layer l this frame.
    void Update(const std::vector<CacheCounts>& counts, const std::vector<int64_t>& evicted);

   private:
    friend class ServerMetrics;
    SessionCacheUsage(ServerMetrics* metrics, std::string model, std::string policy,
                      std::vector<std::string> cache_names);
    // Moves the gauges from current_ to `counts`, one delta per series.
    void MoveTo(std::vector<CacheCounts> counts);

    ServerMetrics* const metrics_;
    const std::string model_;
    const std::string policy_;
    const std::vector<std::string> cache_names_;
    std::vector<CacheCounts> current_;
  };
  std::unique_ptr<SessionCacheUsage> NewSessionCacheUsage(const std::string& model,
                                                          const std::string& policy,
                                                          std::vector<std::string> cache_names);

  void SessionOpened(const std::string& model, const std::string& policy);
  // reason: invalid_argument, budget, max_sessions, shutting_down, not_found, permission_denied.
  void SessionRejected(absl::string_view reason);
  void SessionResumed();
  // reason: idle (no frame within the idle timeout) or expired (not resumed within the grace).
  void SessionReaped(absl::string_view reason);
  // reason: end (the client's EndSession), close_rpc, shutdown.
  void SessionClosed(absl::string_view reason);
  void SetSessions(int64_t attached, int64_t detached, int64_t ending);
  void ProtectedOverflow(const std::string& model, const std::string& policy);

  void FrameProcessed(const std::string& model, const std::string& policy);
  void FrameFailed(const std::string& model, FrameFailure failure);
  void ObserveStage(const std::string& model, Stage stage, double seconds);
  void AddQueuedFrames(int64_t delta);

  void SetKvBudget(int64_t budget_bytes, int64_t reserved_bytes);
  void SetGpuMemory(int64_t allocated_bytes, int64_t reserved_bytes, int64_t total_bytes);

 private:
  struct ModelSeries {
    std::map<std::string, prometheus::Counter*> frames_processed;   // by policy
    std::map<std::string, prometheus::Counter*> sessions_opened;    // by policy
    std::map<std::string, prometheus::Counter*> protected_overflow; // by policy
    std::map<FrameFailure, prometheus::Counter*> frames_failed;
    std::map<Stage, prometheus::Histogram*> latency;
  };
  const ModelSeries& Series(const std::string& model) const;
  prometheus::Gauge& LayerGauge(prometheus::Family<prometheus::Gauge>& family,
                                const SessionCacheUsage& usage, size_t cache, size_t layer);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& cache_tokens_;
  prometheus::Family<prometheus::Gauge>& cache_bytes_;
  prometheus::Family<prometheus::Counter>& evicted_tokens_;
  prometheus::Family<prometheus::Counter>& sessions_rejected_;
  prometheus::Family<prometheus::Counter>& sessions_reaped_;
  prometheus::Family<prometheus::Counter>& sessions_closed_;
  prometheus::Family<prometheus::Gauge>& sessions_;
  prometheus::Counter& sessions_resumed_;
  prometheus::Gauge& kv_used_bytes_;
  prometheus::Gauge& kv_allocated_bytes_;
  prometheus::Gauge& kv_reserved_bytes_;
  prometheus::Gauge& kv_budget_bytes_;
  prometheus::Gauge& queued_frames_;
  prometheus::Family<prometheus::Gauge>& gpu_memory_;
  std::map<std::string, ModelSeries> models_;
};

}  // namespace streamkv::server
