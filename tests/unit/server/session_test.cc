#include "server/session.h"

#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/unit/server/test_util.h"

namespace streamkv::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

Session::Limits Limits(int64_t max_queued_frames, int64_t replay_frames) {
  Session::Limits limits;
  limits.max_queued_frames = max_queued_frames;
  limits.replay_frames = replay_frames;
  return limits;
}

class SessionTest : public ::testing::Test {
 protected:
  std::unique_ptr<Session> NewSession(Session::Limits limits = {}) {
    SessionSpec spec;
    spec.id = "session-1";
    spec.label = "my label";
    spec.policy = "none";
    spec.policy_params = {{"recent_size", "8"}};
    spec.budget_bytes = 4096;
    v1::SessionOpened opened;
    opened.set_session_id("session-1");
    opened.set_resume_token("token-1");
    opened.set_model("m");
    opened.set_policy("none");
    return std::make_unique<Session>(std::move(spec), KvBudget::Reservation(), SessionWork(),
                                     std::move(opened), limits, &metrics_, start_);
  }

  // A session whose stream is a_ (frames are only taken from the attached stream).
  std::unique_ptr<Session> NewAttachedSession(Session::Limits limits = {}) {
    std::unique_ptr<Session> session = NewSession(limits);
    session->Attach(a_, std::nullopt, start_);
    return session;
  }

  Session::EnqueueResult Enqueue(Session& session, uint64_t sequence,
                                 absl::Status refusal = absl::OkStatus()) {
    return session.Enqueue(a_, RawFrame(sequence), std::move(refusal), start_);
  }

  // The next queued frame (the worker then holds the session busy).
  std::optional<QueuedFrame> Begin(Session& session) {
    SessionWork* work = nullptr;
    std::optional<QueuedFrame> frame = session.BeginFrame(&work);
    EXPECT_EQ(frame.has_value(), work != nullptr);
    return frame;
  }

  // Ends `frame` with a result when it was accepted (counted as processed), else its error.
  Session::Completion End(Session& session, const QueuedFrame& frame, absl::Time now) {
    if (!frame.rejection.ok()) {
      auto error = std::make_shared<v1::StreamResponse>();
      error->mutable_error()->set_sequence(frame.frame.sequence());
      error->mutable_error()->set_code(static_cast<int32_t>(frame.rejection.code()));
      return session.EndFrame(frame, std::move(error), /*processed=*/false, nullptr, now);
    }
    return session.EndFrame(frame, ResultFor(frame.frame.sequence()), /*processed=*/true,
                            nullptr, now);
  }

  // Runs every queued frame; the sequences of their answers.
  std::vector<uint64_t> Drain(Session& session) {
    std::vector<uint64_t> sequences;
    while (std::optional<QueuedFrame> frame = Begin(session)) {
      sequences.push_back(frame->frame.sequence());
      End(session, *frame, start_);
    }
    return sequences;
  }

  // The sequences of the frame answers among attach messages (the first is `opened`).
  static std::vector<uint64_t> AnswerSequences(
      const std::vector<std::shared_ptr<const v1::StreamResponse>>& messages) {
    std::vector<uint64_t> sequences;
    for (size_t i = 1; i < messages.size(); ++i) sequences.push_back(AnswerSequence(*messages[i]));
    return sequences;
  }

  ServerMetrics metrics_{TestBuild(), {"m"}, {"none"}};
  const absl::Time start_ = absl::FromUnixSeconds(1700000000);
  const std::shared_ptr<RecordingSink> a_ = std::make_shared<RecordingSink>();
  const std::shared_ptr<RecordingSink> b_ = std::make_shared<RecordingSink>();
};

TEST_F(SessionTest, AcceptsAnyFirstSequenceAndGaps) {
  auto session = NewAttachedSession();
  Enqueue(*session, 1000);
  Enqueue(*session, 1001);
  Enqueue(*session, 5000);
  for (uint64_t expected : {1000u, 1001u, 5000u}) {
    std::optional<QueuedFrame> frame = Begin(*session);
    ASSERT_TRUE(frame.has_value());
    EXPECT_EQ(frame->frame.sequence(), expected);
    EXPECT_TRUE(frame->rejection.ok()) << frame->rejection;
    EXPECT_EQ(frame->origin, a_);
    EXPECT_TRUE(frame->frame.has_raw());
    End(*session, *frame, start_);
  }
}

TEST_F(SessionTest, RepeatedSequenceIsRejectedAsAlreadyExists) {
  auto session = NewAttachedSession();
  Enqueue(*session, 5);
  Enqueue(*session, 5);
  ASSERT_TRUE(Begin(*session).has_value());
  std::optional<QueuedFrame> repeated = Begin(*session);
  ASSERT_TRUE(repeated.has_value());
  EXPECT_EQ(repeated->rejection.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(repeated->rejection.message(), HasSubstr("sequence 5 was already received"));
  // Only the sequence is needed to answer a rejected frame.
  EXPECT_EQ(repeated->frame.image_case(), v1::Frame::IMAGE_NOT_SET);
}

TEST_F(SessionTest, SmallerSequenceIsOutOfRangeNamingTheLastAccepted) {
  auto session = NewAttachedSession();
  Enqueue(*session, 10);
  Enqueue(*session, 7);
  Enqueue(*session, 11);
  ASSERT_TRUE(Begin(*session).has_value());
  std::optional<QueuedFrame> smaller = Begin(*session);
  ASSERT_TRUE(smaller.has_value());
  EXPECT_EQ(smaller->rejection.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(smaller->rejection.message(),
              HasSubstr("sequence 7 is not after the last accepted sequence 10"));
  std::optional<QueuedFrame> next = Begin(*session);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->rejection.ok()) << next->rejection;
}

TEST_F(SessionTest, RefusalPassedInWinsAndDoesNotConsumeTheSequence) {
  auto session = NewAttachedSession();
  Enqueue(*session, 5);
  Enqueue(*session, 5, absl::UnavailableError("shutting down"));
  Enqueue(*session, 6, absl::UnavailableError("shutting down"));
  Enqueue(*session, 6);
  ASSERT_TRUE(Begin(*session).has_value());
  std::optional<QueuedFrame> repeated = Begin(*session);
  ASSERT_TRUE(repeated.has_value());
  EXPECT_EQ(repeated->rejection, absl::UnavailableError("shutting down"));
  std::optional<QueuedFrame> refused = Begin(*session);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->rejection.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(refused->frame.image_case(), v1::Frame::IMAGE_NOT_SET);
  std::optional<QueuedFrame> resent = Begin(*session);
  ASSERT_TRUE(resent.has_value());
  EXPECT_TRUE(resent->rejection.ok()) << resent->rejection;
}

TEST_F(SessionTest, ScheduleIsAskedOnceUntilTheWorkerRunsOutOfFrames) {
  auto session = NewAttachedSession();
  EXPECT_TRUE(Enqueue(*session, 1).schedule);
  EXPECT_FALSE(Enqueue(*session, 2).schedule);
  std::optional<QueuedFrame> first = Begin(*session);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(End(*session, *first, start_).reschedule);
  EXPECT_FALSE(Enqueue(*session, 3).schedule);  // still scheduled
  std::optional<QueuedFrame> second = Begin(*session);
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(End(*session, *second, start_).reschedule);
  std::optional<QueuedFrame> third = Begin(*session);
  ASSERT_TRUE(third.has_value());
  EXPECT_FALSE(End(*session, *third, start_).reschedule);
  EXPECT_TRUE(Enqueue(*session, 4).schedule);
}

TEST_F(SessionTest, BeginFrameOnAnEmptyQueueEndsTheScheduledTurn) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  EXPECT_TRUE(Enqueue(*session, 1).schedule);
  ASSERT_TRUE(session->Detach(a_.get(), start_));  // drops frame 1; the session stays scheduled
  EXPECT_FALSE(Begin(*session).has_value());
  session->Attach(a_, std::nullopt, start_);
  EXPECT_TRUE(Enqueue(*session, 2).schedule);
}

TEST_F(SessionTest, QueueIsFullAtMaxQueuedFrames) {
  auto session = NewAttachedSession(Limits(3, 4));
  EXPECT_FALSE(Enqueue(*session, 1).queue_full);
  EXPECT_FALSE(Enqueue(*session, 2).queue_full);
  EXPECT_TRUE(Enqueue(*session, 3).queue_full);
  ASSERT_TRUE(Begin(*session).has_value());
  EXPECT_TRUE(Enqueue(*session, 4).queue_full);  // three queued again
  EXPECT_EQ(SeriesValue(*metrics_.registry(), "streamkv_queued_frames"), 3);
}

TEST_F(SessionTest, ProcessedFramesCountAndSetTheLastProcessedSequence) {
  auto session = NewAttachedSession();
  Enqueue(*session, 7);
  Enqueue(*session, 7);
  EXPECT_THAT(Drain(*session), ElementsAre(7, 7));
  EXPECT_EQ(session->frames_processed(), 1u);  // the rejected repeat does not count
  const v1::SessionInfo info = session->Info();
  EXPECT_EQ(info.frames_processed(), 1u);
  ASSERT_TRUE(info.has_last_processed_sequence());
  EXPECT_EQ(info.last_processed_sequence(), 7u);
}

TEST_F(SessionTest, AnswerGoesToTheOriginSinkOnlyWhileItIsAttached) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  std::optional<QueuedFrame> from_a = Begin(*session);
  ASSERT_TRUE(from_a.has_value());
  EXPECT_EQ(End(*session, *from_a, start_).deliver_to, a_);

  Enqueue(*session, 3);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  ASSERT_TRUE(session->Detach(a_.get(), start_));
  EXPECT_EQ(End(*session, *running, start_).deliver_to, nullptr);
}

TEST_F(SessionTest, FirstAttachIsImmediateAndNotAResume) {
  auto session = NewSession();
  Session::AttachResult attached = session->Attach(a_, 0, start_);
  EXPECT_EQ(attached.previous, nullptr);
  EXPECT_FALSE(attached.deferred);
  ASSERT_EQ(attached.messages.size(), 1u);
  const v1::SessionOpened& opened = attached.messages[0]->opened();
  EXPECT_EQ(opened.session_id(), "session-1");
  EXPECT_EQ(opened.resume_token(), "token-1");
  EXPECT_EQ(opened.model(), "m");
  EXPECT_FALSE(opened.resumed());
  EXPECT_EQ(opened.frames_processed(), 0u);
  EXPECT_FALSE(opened.has_last_processed_sequence());
  EXPECT_EQ(session->state(), Session::State::kAttached);
}

TEST_F(SessionTest, ResumeReplaysTheKeptAnswersAfterTheLastReceived) {
  auto session = NewSession(Limits(8, 2));
  session->Attach(a_, std::nullopt, start_);
  for (uint64_t sequence : {1, 2, 3, 4}) Enqueue(*session, sequence);
  Drain(*session);

  Session::AttachResult resumed = session->Attach(b_, 1, start_);
  EXPECT_EQ(resumed.previous, a_);
  ASSERT_FALSE(resumed.messages.empty());
  const v1::SessionOpened& opened = resumed.messages[0]->opened();
  EXPECT_TRUE(opened.resumed());
  EXPECT_EQ(opened.frames_processed(), 4u);
  EXPECT_EQ(opened.last_processed_sequence(), 4u);
  EXPECT_THAT(AnswerSequences(resumed.messages), ElementsAre(3, 4));  // 1 and 2 aged out

  EXPECT_THAT(AnswerSequences(session->Attach(a_, 3, start_).messages), ElementsAre(4));
  EXPECT_THAT(AnswerSequences(session->Attach(b_, 4, start_).messages), ElementsAre());
  EXPECT_THAT(AnswerSequences(session->Attach(a_, std::nullopt, start_).messages),
              ElementsAre());
}

TEST_F(SessionTest, ReplayKeepsRejectionsToo) {
  auto session = NewSession(Limits(8, 4));
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  Enqueue(*session, 1);
  Drain(*session);
  Session::AttachResult resumed = session->Attach(b_, 0, start_);
  ASSERT_EQ(resumed.messages.size(), 3u);
  EXPECT_TRUE(resumed.messages[1]->has_result());
  EXPECT_EQ(resumed.messages[2]->error().code(),
            static_cast<int32_t>(absl::StatusCode::kAlreadyExists));
}

TEST_F(SessionTest, NoReplayWhenReplayFramesIsZero) {
  auto session = NewSession(Limits(8, 0));
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  Drain(*session);
  EXPECT_THAT(AnswerSequences(session->Attach(b_, 0, start_).messages), ElementsAre());
}

TEST_F(SessionTest, AttachReturnsThePreviousSinkAndDropsItsQueuedFrames) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  Enqueue(*session, 2);
  EXPECT_EQ(session->Attach(b_, std::nullopt, start_).previous, a_);
  EXPECT_FALSE(Begin(*session).has_value());
  EXPECT_EQ(session->Info().queued_frames(), 0u);
  EXPECT_EQ(SeriesValue(*metrics_.registry(), "streamkv_queued_frames"), 0);
}

TEST_F(SessionTest, AttachWhileBusyCompletesWhenTheFrameEnds) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());

  Session::AttachResult attached = session->Attach(b_, 0, start_);
  EXPECT_TRUE(attached.deferred);
  EXPECT_EQ(attached.previous, a_);
  EXPECT_TRUE(attached.messages.empty());
  EXPECT_EQ(session->state(), Session::State::kAttached);

  Session::Completion completion = End(*session, *running, start_);
  EXPECT_EQ(completion.deliver_to, nullptr);  // a was replaced
  EXPECT_EQ(completion.attached, b_);
  ASSERT_EQ(completion.attach_messages.size(), 2u);
  const v1::SessionOpened& opened = completion.attach_messages[0]->opened();
  EXPECT_TRUE(opened.resumed());
  EXPECT_EQ(opened.last_processed_sequence(), 1u);
  EXPECT_EQ(AnswerSequence(*completion.attach_messages[1]), 1u);

  session->Enqueue(b_, RawFrame(2), absl::OkStatus(), start_);
  std::optional<QueuedFrame> next = Begin(*session);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->rejection.ok()) << next->rejection;
  EXPECT_EQ(End(*session, *next, start_).deliver_to, b_);
}

TEST_F(SessionTest, AttachWhileBusyReplacesAPendingAttachment) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  session->Attach(b_, std::nullopt, start_);
  const auto c = std::make_shared<RecordingSink>();
  EXPECT_EQ(session->Attach(c, std::nullopt, start_).previous, b_);
  EXPECT_EQ(End(*session, *running, start_).attached, c);
}

TEST_F(SessionTest, ResumeAcceptsFramesAfterTheLastProcessedOne) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  for (uint64_t sequence : {1, 2, 3}) Enqueue(*session, sequence);
  std::optional<QueuedFrame> first = Begin(*session);
  ASSERT_TRUE(first.has_value());
  End(*session, *first, start_);

  session->Attach(b_, 1, start_);  // frames 2 and 3 are dropped, so the client resends them
  session->Enqueue(b_, RawFrame(1), absl::OkStatus(), start_);
  session->Enqueue(b_, RawFrame(2), absl::OkStatus(), start_);
  std::optional<QueuedFrame> repeated = Begin(*session);
  ASSERT_TRUE(repeated.has_value());
  EXPECT_EQ(repeated->rejection.code(), absl::StatusCode::kAlreadyExists);
  std::optional<QueuedFrame> resent = Begin(*session);
  ASSERT_TRUE(resent.has_value());
  EXPECT_TRUE(resent->rejection.ok()) << resent->rejection;
}

TEST_F(SessionTest, ResumeBeforeAnyProcessedFrameAcceptsAnySequence) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 50);
  session->Attach(b_, std::nullopt, start_);
  session->Enqueue(b_, RawFrame(3), absl::OkStatus(), start_);
  std::optional<QueuedFrame> frame = Begin(*session);
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(frame->frame.sequence(), 3u);
  EXPECT_TRUE(frame->rejection.ok()) << frame->rejection;
}

TEST_F(SessionTest, DetachDropsQueuedFramesAndAwaitsResume) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  Enqueue(*session, 2);
  EXPECT_FALSE(session->Detach(b_.get(), start_));
  EXPECT_EQ(session->Info().queued_frames(), 2u);
  EXPECT_TRUE(session->Detach(a_.get(), start_));
  EXPECT_EQ(session->state(), Session::State::kDetached);
  EXPECT_FALSE(Begin(*session).has_value());
  EXPECT_FALSE(session->Detach(a_.get(), start_));
}

TEST_F(SessionTest, DetachCancelsAPendingAttachment) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  session->Attach(b_, std::nullopt, start_);
  EXPECT_TRUE(session->Detach(b_.get(), start_));
  EXPECT_EQ(session->state(), Session::State::kDetached);
  Session::Completion completion = End(*session, *running, start_);
  EXPECT_EQ(completion.attached, nullptr);
  EXPECT_TRUE(completion.attach_messages.empty());
}

TEST_F(SessionTest, DetachForeverHandsBackTheSinkAndRefusesLaterFrames) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  EXPECT_THAT(session->DetachForever(), ElementsAre(a_));
  EXPECT_EQ(session->state(), Session::State::kDetached);
  EXPECT_FALSE(Begin(*session).has_value());  // frame 1 was dropped

  EXPECT_TRUE(Enqueue(*session, 2).dropped);
  EXPECT_FALSE(Begin(*session).has_value());
  EXPECT_TRUE(session->Attach(b_, std::nullopt, start_).closed);
  EXPECT_EQ(session->state(), Session::State::kDetached);
}

TEST_F(SessionTest, FramesFromAStreamThatLostTheSessionAreDroppedWithoutTakingTheirSequence) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  session->Attach(b_, std::nullopt, start_);  // resumed elsewhere; a_ is about to be ended
  EXPECT_TRUE(session->Enqueue(a_, RawFrame(1), absl::OkStatus(), start_).dropped);
  EXPECT_FALSE(Begin(*session).has_value());
  // The new stream sends the same number: it is the first the session accepts.
  const Session::EnqueueResult queued =
      session->Enqueue(b_, RawFrame(1), absl::OkStatus(), start_);
  EXPECT_FALSE(queued.dropped);
  std::optional<QueuedFrame> frame = Begin(*session);
  ASSERT_TRUE(frame.has_value());
  EXPECT_TRUE(frame->rejection.ok());
}

TEST_F(SessionTest, DetachForeverHandsBackAPendingAttachment) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  session->Attach(b_, std::nullopt, start_);
  EXPECT_THAT(session->DetachForever(), ElementsAre(b_));
  EXPECT_EQ(End(*session, *running, start_).attached, nullptr);
}

TEST_F(SessionTest, RejectQueuedTurnsQueuedFramesIntoRejections) {
  auto session = NewAttachedSession();
  Enqueue(*session, 1);
  Enqueue(*session, 1);
  Enqueue(*session, 2);
  session->RejectQueued(absl::CancelledError("discarded"));
  std::vector<absl::StatusCode> codes;
  while (std::optional<QueuedFrame> frame = Begin(*session)) {
    codes.push_back(frame->rejection.code());
    EXPECT_EQ(frame->frame.image_case(), v1::Frame::IMAGE_NOT_SET);
    End(*session, *frame, start_);
  }
  // A frame already refused keeps its own error.
  EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kCancelled, absl::StatusCode::kAlreadyExists,
                                 absl::StatusCode::kCancelled));
  EXPECT_EQ(session->frames_processed(), 0u);
}

TEST_F(SessionTest, AttachedSessionIsIdleAfterTheIdleTimeoutSinceItsLastActivity) {
  const absl::Duration idle = absl::Minutes(10);
  const absl::Duration grace = absl::Seconds(60);
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  EXPECT_EQ(session->CheckExpiry(start_ + idle - absl::Nanoseconds(1), idle, grace),
            Session::Expiry::kNone);
  EXPECT_EQ(session->CheckExpiry(start_ + idle, idle, grace), Session::Expiry::kIdle);

  const absl::Time later = start_ + absl::Minutes(5);
  session->Enqueue(a_, RawFrame(1), absl::OkStatus(), later);
  std::optional<QueuedFrame> frame = Begin(*session);
  ASSERT_TRUE(frame.has_value());
  End(*session, *frame, later);
  EXPECT_EQ(session->CheckExpiry(start_ + idle, idle, grace), Session::Expiry::kNone);
  EXPECT_EQ(session->CheckExpiry(later + idle, idle, grace), Session::Expiry::kIdle);
}

TEST_F(SessionTest, DetachedSessionExpiresAfterTheGraceSinceItWasDetached) {
  const absl::Duration idle = absl::Minutes(10);
  const absl::Duration grace = absl::Seconds(60);
  auto session = NewSession();
  EXPECT_EQ(session->CheckExpiry(start_ + grace, idle, grace), Session::Expiry::kExpired);
  session->Attach(a_, std::nullopt, start_);
  const absl::Time detached = start_ + absl::Minutes(3);
  session->Detach(a_.get(), detached);
  EXPECT_EQ(session->CheckExpiry(detached + grace - absl::Nanoseconds(1), idle, grace),
            Session::Expiry::kNone);
  EXPECT_EQ(session->CheckExpiry(detached + grace, idle, grace), Session::Expiry::kExpired);
}

TEST_F(SessionTest, SessionWithQueuedOrRunningFramesNeverExpires) {
  const absl::Duration idle = absl::Minutes(10);
  const absl::Duration grace = absl::Seconds(60);
  const absl::Time far = start_ + absl::Hours(100);
  auto session = NewAttachedSession();
  Enqueue(*session, 1);
  EXPECT_EQ(session->CheckExpiry(far, idle, grace), Session::Expiry::kNone);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(session->CheckExpiry(far, idle, grace), Session::Expiry::kNone);
  End(*session, *running, start_);
  EXPECT_EQ(session->CheckExpiry(far, idle, grace), Session::Expiry::kIdle);
}

TEST_F(SessionTest, ClosedSessionIsNotReportedExpired) {
  auto session = NewSession();
  session->DetachForever();
  EXPECT_EQ(session->CheckExpiry(start_ + absl::Hours(100), absl::Minutes(1), absl::Minutes(1)),
            Session::Expiry::kNone);
}

TEST_F(SessionTest, AwaitQuietIsTrueAtOnceWithoutStreamOrFrames) {
  auto session = NewSession();
  EXPECT_TRUE(session->AwaitQuiet(absl::InfinitePast()));
}

TEST_F(SessionTest, AwaitQuietIsFalseAtAPastDeadlineWhileAttachedOrBusy) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  EXPECT_FALSE(session->AwaitQuiet(absl::Now() - absl::Seconds(1)));
  Enqueue(*session, 1);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  session->Detach(a_.get(), start_);
  EXPECT_FALSE(session->AwaitQuiet(absl::InfinitePast()));
  End(*session, *running, start_);
  EXPECT_TRUE(session->AwaitQuiet(absl::InfinitePast()));
}

TEST_F(SessionTest, AwaitQuietWakesWhenTheStreamDetaches) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  std::thread detacher([&] { session->Detach(a_.get(), start_); });
  EXPECT_TRUE(session->AwaitQuiet(absl::InfiniteFuture()));
  detacher.join();
}

TEST_F(SessionTest, StateFollowsAttachEndingAndDetach) {
  auto session = NewSession();
  EXPECT_EQ(session->state(), Session::State::kDetached);
  session->Attach(a_, std::nullopt, start_);
  EXPECT_EQ(session->state(), Session::State::kAttached);
  session->MarkEnding();
  EXPECT_EQ(session->state(), Session::State::kEnding);
  EXPECT_EQ(session->Info().state(), v1::SessionInfo::STATE_ENDING);
  session->Detach(a_.get(), start_);
  EXPECT_EQ(session->state(), Session::State::kDetached);
  session->Attach(b_, std::nullopt, start_);
  EXPECT_EQ(session->state(), Session::State::kAttached);  // ending went with the stream
}

TEST_F(SessionTest, InfoDescribesTheSession) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  v1::CacheState cache;
  cache.add_layer_tokens(12);
  cache.set_bytes(300);
  cache.set_budget_bytes(4096);
  const absl::Time later = start_ + absl::Seconds(2);
  Enqueue(*session, 9);
  std::optional<QueuedFrame> frame = Begin(*session);
  ASSERT_TRUE(frame.has_value());
  session->EndFrame(*frame, ResultFor(9), true, &cache, later);
  session->Enqueue(a_, RawFrame(10), absl::OkStatus(), later + absl::Seconds(1));

  const v1::SessionInfo info = session->Info();
  EXPECT_EQ(info.session_id(), "session-1");
  EXPECT_EQ(info.state(), v1::SessionInfo::STATE_ATTACHED);
  EXPECT_EQ(info.model(), "m");
  EXPECT_EQ(info.policy(), "none");
  EXPECT_THAT(info.policy_params(), UnorderedElementsAre(Pair("recent_size", "8")));
  EXPECT_EQ(info.label(), "my label");
  EXPECT_EQ(info.frames_processed(), 1u);
  EXPECT_EQ(info.last_processed_sequence(), 9u);
  EXPECT_EQ(info.queued_frames(), 1u);
  EXPECT_THAT(info.cache().layer_tokens(), ElementsAre(12));
  EXPECT_EQ(info.cache().bytes(), 300);
  EXPECT_EQ(info.opened_unix_ms(), absl::ToUnixMillis(start_));
  EXPECT_EQ(info.last_activity_unix_ms(), absl::ToUnixMillis(later + absl::Seconds(1)));
}

TEST_F(SessionTest, InfoBeforeAnyFrameCarriesTheBudget) {
  auto session = NewSession();
  const v1::SessionInfo info = session->Info();
  EXPECT_EQ(info.state(), v1::SessionInfo::STATE_DETACHED);
  EXPECT_EQ(info.cache().budget_bytes(), 4096);
  EXPECT_FALSE(info.has_last_processed_sequence());
}

// The caller hands messages to sinks, outside the session's lock.
TEST_F(SessionTest, NeverCallsItsSinks) {
  auto session = NewSession();
  session->Attach(a_, std::nullopt, start_);
  Enqueue(*session, 1);
  Enqueue(*session, 2);
  std::optional<QueuedFrame> running = Begin(*session);
  ASSERT_TRUE(running.has_value());
  session->Attach(b_, 0, start_);
  End(*session, *running, start_);
  session->RejectQueued(absl::CancelledError("discarded"));
  session->DetachForever();
  EXPECT_EQ(a_->calls(), 0u);
  EXPECT_EQ(b_->calls(), 0u);
}

TEST_F(SessionTest, DestructionTakesItsQueuedFramesOffTheGauge) {
  auto session = NewAttachedSession();
  Enqueue(*session, 1);
  Enqueue(*session, 2);
  EXPECT_EQ(SeriesValue(*metrics_.registry(), "streamkv_queued_frames"), 2);
  session.reset();
  EXPECT_EQ(SeriesValue(*metrics_.registry(), "streamkv_queued_frames"), 0);
}

}  // namespace
}  // namespace streamkv::server
