#include "client/stream_runner.h"

#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace streamkv::client {
namespace {

// Statuses after which the session probably still lives on the server.
bool Resumable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kResourceExhausted:  // an oversize message ends the stream only
      return true;
    default:
      return false;
  }
}

}  // namespace

StreamRunner::StreamRunner(Client* client, RunnerOptions options)
    : client_(client), options_(std::move(options)) {}

void StreamRunner::Disconnect() {
  absl::MutexLock lock(&mu_);
  if (current_ != nullptr) current_->Cancel();
}

absl::StatusOr<RunSummary> StreamRunner::Run(
    FrameSource& source, const std::function<void(const FrameAnswer&)>& on_answer) {
  absl::StatusOr<std::unique_ptr<SessionStream>> stream = client_->Open(options_.open);
  if (!stream.ok()) return stream.status();
  RunSummary summary;
  summary.opened = (*stream)->opened();
  // A resumed session must reach the instance that holds its cache.
  std::unique_ptr<Client> instance_client;
  Client* resume_client = client_;
  if (!summary.opened.instance_address().empty() &&
      summary.opened.instance_address() != client_->options().address) {
    absl::StatusOr<std::unique_ptr<Client>> direct =
        client_->WithAddress(summary.opened.instance_address());
    if (direct.ok()) {
      instance_client = std::move(*direct);
      resume_client = instance_client.get();
    }
  }
  while (true) {
    bool ended = false;
    const absl::Status status = RunAttempt(**stream, source, on_answer, summary, ended);
    {
      absl::MutexLock lock(&pending_mu_);
      if (!source_error_.ok()) return source_error_;
    }
    if (status.ok()) return summary;
    if (!Resumable(status) || summary.resumes >= options_.max_resumes) return status;
    // Reconnect with backoff until a resume succeeds or the attempts run out.
    while (true) {
      ++summary.resumes;
      absl::SleepFor(options_.resume_backoff);
      stream = resume_client->Resume(summary.opened.session_id(), summary.opened.resume_token(),
                                     last_received_);
      if (stream.ok()) break;
      if (!Resumable(stream.status()) || summary.resumes >= options_.max_resumes) {
        return stream.status();
      }
    }
  }
}

absl::Status StreamRunner::RunAttempt(SessionStream& stream, FrameSource& source,
                                      const std::function<void(const FrameAnswer&)>& on_answer,
                                      RunSummary& summary, bool& ended) {
  {
    absl::MutexLock lock(&mu_);
    current_ = &stream;
  }
  // Frames the server has not processed are sent (again); processed ones are answered by
  // replay or counted lost.
  const std::optional<uint64_t> processed =
      stream.opened().has_last_processed_sequence()
          ? std::optional<uint64_t>(stream.opened().last_processed_sequence())
          : std::nullopt;
  bool stop = false;  // guarded by pending_mu_
  std::thread writer([&] {
    std::vector<v1::Frame> resend;
    {
      absl::MutexLock lock(&pending_mu_);
      for (Pending& p : pending_) {
        if (processed && p.frame.sequence() <= *processed) continue;
        p.sent_at = absl::Now();
        resend.push_back(p.frame);
      }
    }
    for (const v1::Frame& frame : resend) {
      if (!stream.Send(frame)) return;
    }
    while (true) {
      v1::Frame frame;
      {
        absl::MutexLock lock(&pending_mu_);
        auto room = [&]() ABSL_SHARED_LOCKS_REQUIRED(pending_mu_) {
          return stop || static_cast<int>(pending_.size()) < options_.max_in_flight;
        };
        pending_mu_.Await(absl::Condition(&room));
        if (stop) return;
        if (!source_done_) {
          absl::StatusOr<std::optional<v1::Frame>> next = source.Next();
          if (!next.ok()) {
            source_error_ = next.status();
            source_done_ = true;
          } else if (!next->has_value()) {
            source_done_ = true;
          } else {
            frame = std::move(**next);
            frame.set_sequence(static_cast<uint64_t>(next_index_ + 1));
            pending_.push_back({next_index_++, frame, absl::Now()});
            ++summary.frames_sent;
          }
        }
        if (source_done_) break;
      }
      if (!stream.Send(frame)) return;
    }
    if (options_.end_session) {
      stream.End();
    } else {
      stream.CloseSend();
    }
  });

  v1::StreamResponse response;
  while (stream.Read(&response)) {
    if (response.has_ended()) {
      ended = true;
      continue;
    }
    if (!response.has_result() && !response.has_error()) continue;
    const uint64_t sequence =
        response.has_result() ? response.result().sequence() : response.error().sequence();
    last_received_ = sequence;
    FrameAnswer answer;
    answer.sequence = sequence;
    answer.result = response.has_result() ? &response.result() : nullptr;
    answer.error = response.has_error() ? &response.error() : nullptr;
    bool known = false;
    {
      absl::MutexLock lock(&pending_mu_);
      // Answers come in order: earlier frames still pending were processed but their answers
      // were lost in a reconnect.
      while (!pending_.empty() && pending_.front().frame.sequence() < sequence) {
        pending_.pop_front();
        ++summary.lost;
      }
      if (!pending_.empty() && pending_.front().frame.sequence() == sequence) {
        answer.index = pending_.front().index;
        answer.latency_ms = absl::ToDoubleMilliseconds(absl::Now() - pending_.front().sent_at);
        pending_.pop_front();
        known = true;
      }
    }
    if (!known) continue;  // e.g. the error for a frame resent after it was processed
    ++(answer.result != nullptr ? summary.results : summary.errors);
    on_answer(answer);
  }
  {
    absl::MutexLock lock(&pending_mu_);
    stop = true;
  }
  writer.join();
  {
    absl::MutexLock lock(&mu_);
    current_ = nullptr;
  }
  absl::Status status = stream.Finish();
  if (status.ok() && options_.end_session && !ended) {
    return absl::UnavailableError("the stream ended before the session did");
  }
  return status;
}

}  // namespace streamkv::client
