// Helpers shared by the server unit tests: a sink that records what it is told, frames and
// answers made by hand, and metric scraping.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics.h"
#include "server/session.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

// Records every call it gets. Thread-safe.
class RecordingSink final : public SessionSink {
 public:
  void Attached(std::vector<std::shared_ptr<const v1::StreamResponse>> messages) override {
    absl::MutexLock lock(&mu_);
    attached_.push_back(std::move(messages));
  }
  void FrameDone(std::shared_ptr<const v1::StreamResponse> response) override {
    absl::MutexLock lock(&mu_);
    frames_done_.push_back(std::move(response));
  }
  void QueueSpace() override {
    absl::MutexLock lock(&mu_);
    ++queue_space_;
  }
  void Detached(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    detached_.push_back(status);
  }

  std::vector<grpc::Status> detached() const {
    absl::MutexLock lock(&mu_);
    return detached_;
  }
  size_t calls() const {
    absl::MutexLock lock(&mu_);
    return attached_.size() + frames_done_.size() + static_cast<size_t>(queue_space_) +
           detached_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<std::shared_ptr<const v1::StreamResponse>>> attached_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<const v1::StreamResponse>> frames_done_ ABSL_GUARDED_BY(mu_);
  int queue_space_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<grpc::Status> detached_ ABSL_GUARDED_BY(mu_);
};

inline BuildInfo TestBuild() { return BuildInfo{"v", "t", "cpu"}; }

// A 1 × 1 raw frame.
inline v1::Frame RawFrame(uint64_t sequence) {
  v1::Frame frame;
  frame.set_sequence(sequence);
  v1::RawImage& raw = *frame.mutable_raw();
  raw.set_height(1);
  raw.set_width(1);
  raw.set_rgb(std::string(3, '\x7f'));
  return frame;
}

// A result answering frame `sequence`.
inline std::shared_ptr<const v1::StreamResponse> ResultFor(uint64_t sequence) {
  auto response = std::make_shared<v1::StreamResponse>();
  response->mutable_result()->set_sequence(sequence);
  return response;
}

// The value of `series` (name and labels exactly as exposed) in the registry's text exposition.
inline std::optional<double> SeriesValue(const prometheus::Registry& registry,
                                         const std::string& series) {
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    double value = 0;
    if (absl::StartsWith(line, series + " ") &&
        absl::SimpleAtod(line.substr(series.size() + 1), &value)) {
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace streamkv::server
