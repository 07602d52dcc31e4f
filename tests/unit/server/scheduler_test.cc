#include "server/scheduler.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/kv_budget.h"
#include "server/session.h"
#include "tests/unit/server/test_util.h"

namespace streamkv::server {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class SchedulerTest : public ::testing::Test {
 protected:
  std::shared_ptr<Session> NewSession(const std::string& id,
                                      KvBudget::Reservation reservation = {}) {
    SessionSpec spec;
    spec.id = id;
    Session::Limits limits;
    limits.max_queued_frames = 1000;
    auto session = std::make_shared<Session>(std::move(spec), std::move(reservation),
                                             SessionWork(), v1::SessionOpened(), limits,
                                             &metrics_, absl::Now());
    session->Attach(sink_, std::nullopt, absl::Now());  // sessions take frames from their stream
    return session;
  }

  // Enqueues `frames` frames numbered from `first`; true when the caller must schedule.
  bool Enqueue(Session& session, uint64_t first, int frames) {
    bool schedule = false;
    for (int i = 0; i < frames; ++i) {
      schedule |=
          session.Enqueue(sink_, RawFrame(first + i), absl::OkStatus(), absl::Now()).schedule;
    }
    return schedule;
  }

  // Runs one frame as the frame processor does, noting "<session id>:<sequence>".
  Scheduler::FrameRunner RecordingRunner() {
    return [this](const std::shared_ptr<Session>& session) {
      SessionWork* work = nullptr;
      std::optional<QueuedFrame> frame = session->BeginFrame(&work);
      if (!frame) return false;
      {
        absl::MutexLock lock(&mu_);
        ran_.push_back(absl::StrCat(session->id(), ":", frame->frame.sequence()));
      }
      return session->EndFrame(*frame, ResultFor(frame->frame.sequence()), true, nullptr,
                               absl::Now())
          .reschedule;
    };
  }

  std::vector<std::string> ran() {
    absl::MutexLock lock(&mu_);
    return ran_;
  }
  void Note(const std::string& what) {
    absl::MutexLock lock(&mu_);
    ran_.push_back(what);
  }

  ServerMetrics metrics_{TestBuild(), {"m"}, {"none"}};
  const std::shared_ptr<RecordingSink> sink_ = std::make_shared<RecordingSink>();
  absl::Mutex mu_;
  std::vector<std::string> ran_ ABSL_GUARDED_BY(mu_);
};

TEST_F(SchedulerTest, ServesReadySessionsRoundRobinOneFrameEach) {
  Scheduler scheduler(1, RecordingRunner());
  absl::Notification started, release;
  scheduler.Run([&] {
    started.Notify();
    release.WaitForNotification();
  });
  started.WaitForNotification();  // the worker is held until both sessions are ready
  std::shared_ptr<Session> a = NewSession("A");
  std::shared_ptr<Session> b = NewSession("B");
  ASSERT_TRUE(Enqueue(*a, 1, 3));
  ASSERT_TRUE(Enqueue(*b, 1, 3));
  scheduler.Schedule(a);
  scheduler.Schedule(b);
  release.Notify();
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  EXPECT_THAT(ran(), ElementsAre("A:1", "B:1", "A:2", "B:2", "A:3", "B:3"));
}

TEST_F(SchedulerTest, TasksGoBeforeQueuedFrames) {
  Scheduler scheduler(1, RecordingRunner());
  absl::Notification started, release;
  scheduler.Run([&] {
    started.Notify();
    release.WaitForNotification();
  });
  started.WaitForNotification();
  std::shared_ptr<Session> a = NewSession("A");
  ASSERT_TRUE(Enqueue(*a, 1, 2));
  scheduler.Schedule(a);
  scheduler.Run([this] { Note("task 1"); });
  scheduler.Run([this] { Note("task 2"); });
  release.Notify();
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  EXPECT_THAT(ran(), ElementsAre("task 1", "task 2", "A:1", "A:2"));
}

TEST_F(SchedulerTest, NeverRunsOneSessionOnTwoWorkersAtOnce) {
  constexpr int kSessions = 3;
  constexpr int kFrames = 200;
  std::vector<std::shared_ptr<Session>> sessions;
  for (int i = 0; i < kSessions; ++i) sessions.push_back(NewSession(absl::StrCat(i)));
  std::atomic<int> busy[kSessions] = {};
  std::atomic<int> overlaps{0};
  std::atomic<int> out_of_order{0};
  std::vector<uint64_t> last(kSessions, 0);  // each written only by the worker holding it busy
  Scheduler scheduler(4, [&](const std::shared_ptr<Session>& session) {
    const int index = std::stoi(session->id());
    SessionWork* work = nullptr;
    std::optional<QueuedFrame> frame = session->BeginFrame(&work);
    if (!frame) return false;
    if (busy[index].fetch_add(1) != 0) ++overlaps;
    if (frame->frame.sequence() != last[index] + 1) ++out_of_order;
    last[index] = frame->frame.sequence();
    busy[index].fetch_sub(1);
    return session->EndFrame(*frame, ResultFor(frame->frame.sequence()), true, nullptr,
                             absl::Now())
        .reschedule;
  });
  // Producers enqueue while workers run, scheduling when the session says so.
  std::vector<std::thread> producers;
  for (int i = 0; i < kSessions; ++i) {
    producers.emplace_back([&, i] {
      for (int f = 1; f <= kFrames; ++f) {
        if (Enqueue(*sessions[i], f, 1)) scheduler.Schedule(sessions[i]);
      }
    });
  }
  for (std::thread& producer : producers) producer.join();
  ASSERT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(out_of_order.load(), 0);
  for (const std::shared_ptr<Session>& session : sessions) {
    EXPECT_EQ(session->frames_processed(), static_cast<uint64_t>(kFrames));
  }
}

TEST_F(SchedulerTest, WaitIdleIsTrueOnceDrainedAndFalseAtAPastDeadlineBefore) {
  Scheduler scheduler(2, RecordingRunner());
  EXPECT_TRUE(scheduler.WaitIdle(absl::InfinitePast()));
  absl::Notification release;
  scheduler.Run([&] { release.WaitForNotification(); });
  EXPECT_FALSE(scheduler.WaitIdle(absl::Now() - absl::Seconds(1)));
  release.Notify();
  EXPECT_TRUE(scheduler.WaitIdle(absl::InfiniteFuture()));
}

TEST_F(SchedulerTest, StopFinishesTheRunningTaskAndDropsTheRest) {
  KvBudget budget(100);
  Scheduler scheduler(1, RecordingRunner());
  absl::Notification started;
  std::atomic<bool> finished{false};
  // Reserved before the task starts waiting, so the task cannot see the budget empty too early.
  std::shared_ptr<Session> a = NewSession("A", *budget.Reserve(10));
  // The running task lasts until Stop drops the queued session: its reservation then returns.
  scheduler.Run([&] {
    started.Notify();
    budget.AwaitReservedAtMost(0, absl::InfiniteFuture());
    finished = true;
  });
  started.WaitForNotification();
  ASSERT_TRUE(Enqueue(*a, 1, 1));
  scheduler.Schedule(std::move(a));
  scheduler.Run([this] { Note("dropped task"); });

  scheduler.Stop();
  EXPECT_TRUE(finished);
  EXPECT_EQ(scheduler.workers(), 0);
  EXPECT_THAT(ran(), IsEmpty());
  EXPECT_EQ(budget.reserved(), 0);

  scheduler.Run([this] { Note("after stop"); });  // refused
  EXPECT_TRUE(scheduler.WaitIdle(absl::InfinitePast()));
  scheduler.Stop();  // a second Stop is harmless
  EXPECT_THAT(ran(), IsEmpty());
}

TEST_F(SchedulerTest, ReportsItsWorkers) {
  Scheduler scheduler(3, RecordingRunner());
  EXPECT_EQ(scheduler.workers(), 3);
}

}  // namespace
}  // namespace streamkv::server
