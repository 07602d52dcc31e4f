#include "server/scheduler.h"

#include <utility>

namespace streamkv::server {

Scheduler::Scheduler(int workers, FrameRunner run_frame) : run_frame_(std::move(run_frame)) {
  absl::MutexLock lock(&stop_mu_);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Schedule(std::shared_ptr<Session> session) {
  absl::MutexLock lock(&mu_);
  if (!stopping_) ready_.push_back(std::move(session));
}

void Scheduler::Run(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (!stopping_) tasks_.push_back(std::move(task));
}

bool Scheduler::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return tasks_.empty() && ready_.empty() && running_ == 0;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void Scheduler::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    tasks_.clear();
    ready_.clear();
  }
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void Scheduler::WorkerLoop() {
  while (true) {
    std::function<void()> task;
    std::shared_ptr<Session> session;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || !tasks_.empty() || !ready_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (stopping_) return;
      if (!tasks_.empty()) {
        task = std::move(tasks_.front());
        tasks_.pop_front();
      } else {
        session = std::move(ready_.front());
        ready_.pop_front();
      }
      ++running_;
    }
    bool more = false;
    if (task) {
      task();
    } else {
      more = run_frame_(session);
    }
    absl::MutexLock lock(&mu_);
    --running_;
    if (more && !stopping_) ready_.push_back(std::move(session));
  }
}

}  // namespace streamkv::server
