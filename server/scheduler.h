// The executor that runs model work off the gRPC threads: round-robin over sessions with queued
// frames, one frame per turn, never two workers on one session.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace streamkv::server {

class Session;

// Worker threads taking turns over ready sessions. Control tasks (opening sessions) go first.
// Thread-safe.
class Scheduler {
 public:
  // Processes one frame of a session; returns true when the session has more frames queued.
  using FrameRunner = std::function<bool(const std::shared_ptr<Session>&)>;

  Scheduler(int workers, FrameRunner run_frame);
  ~Scheduler();  // Stop()

  // Puts `session` at the back of the ready list. The caller guarantees a session is scheduled
  // at most once at a time (Session::Enqueue says when to schedule).
  void Schedule(std::shared_ptr<Session> session);
  // Runs `task` on a worker, before any queued frame.
  void Run(std::function<void()> task);

  // Waits until nothing is queued or running, or until `deadline`; true when idle.
  bool WaitIdle(absl::Time deadline);
  // Finishes the task or frame each worker is running, drops the rest, joins the workers. Later
  // Schedule and Run calls are ignored (shutdown frees the sessions anyway).
  void Stop();

  // Worker threads running (0 after Stop).
  int workers() const {
    absl::MutexLock lock(&stop_mu_);
    return static_cast<int>(threads_.size());
  }

 private:
  void WorkerLoop();

  const FrameRunner run_frame_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Session>> ready_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  mutable absl::Mutex stop_mu_;  // serialises Stop calls
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(stop_mu_);
};

}  // namespace streamkv::server
