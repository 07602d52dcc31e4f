#include "server/session_manager.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "server/model_registry.h"
#include "tests/unit/server/test_util.h"

namespace streamkv::server {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::Truly;
using ::testing::UnorderedElementsAre;

bool IsLowerHex(char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); }

class SessionManagerTest : public ::testing::Test {
 protected:
  SessionManagerTest() {
    model_.name = "m";
    options_.max_sessions = 3;
    options_.idle_timeout = absl::Minutes(10);
    options_.resume_grace = absl::Seconds(60);
    options_.session_limits.max_queued_frames = 5;
    options_.instance_id = "instance-7";
    options_.instance_address = "10.0.0.7:50051";
  }

  SessionManager& manager() {
    if (!manager_) manager_.emplace(options_, &budget_, &metrics_, &clock_);
    return *manager_;
  }

  absl::StatusOr<std::shared_ptr<Session>> Admit(int64_t budget_bytes) {
    SessionSpec spec;
    spec.model = &model_;
    spec.policy = "none";
    spec.budget_bytes = budget_bytes;
    return manager().Admit(std::move(spec), SessionWork());
  }

  std::optional<double> Metric(const std::string& series) const {
    return SeriesValue(*metrics_.registry(), series);
  }

  ManualClock clock_;
  ServerMetrics metrics_{TestBuild(), {"m"}, {"none"}};
  KvBudget budget_{1000};
  ServedModel model_;
  SessionManagerOptions options_;
  std::optional<SessionManager> manager_;
};

TEST_F(SessionManagerTest, AdmitsWithDistinctRandomHexIdsAndTokens) {
  absl::StatusOr<std::shared_ptr<Session>> first = Admit(100);
  absl::StatusOr<std::shared_ptr<Session>> second = Admit(100);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  for (const std::shared_ptr<Session>& session : {*first, *second}) {
    EXPECT_THAT(session->id(), SizeIs(32));
    EXPECT_THAT(session->id(), Each(Truly(IsLowerHex)));
    EXPECT_THAT(session->spec().resume_token, SizeIs(32));
    EXPECT_THAT(session->spec().resume_token, Each(Truly(IsLowerHex)));
    EXPECT_NE(session->id(), session->spec().resume_token);
  }
  EXPECT_NE((*first)->id(), (*second)->id());
  EXPECT_NE((*first)->spec().resume_token, (*second)->spec().resume_token);
  EXPECT_EQ(budget_.reserved(), 200);
  EXPECT_EQ(Metric(R"(streamkv_sessions_opened_total{model="m",policy="none"})"), 2);
}

TEST_F(SessionManagerTest, OpenedMessageCarriesTheSessionAndTheServer) {
  absl::StatusOr<std::shared_ptr<Session>> session = Admit(300);
  ASSERT_TRUE(session.ok()) << session.status();
  const auto sink = std::make_shared<RecordingSink>();
  Session::AttachResult attached = (*session)->Attach(sink, std::nullopt, clock_.Now());
  ASSERT_THAT(attached.messages, SizeIs(1));
  const v1::SessionOpened& opened = attached.messages[0]->opened();
  EXPECT_EQ(opened.session_id(), (*session)->id());
  EXPECT_EQ(opened.resume_token(), (*session)->spec().resume_token);
  EXPECT_EQ(opened.model(), "m");
  EXPECT_EQ(opened.policy(), "none");
  EXPECT_EQ(opened.kv_budget_bytes(), 300);
  EXPECT_EQ(opened.max_queued_frames(), 5u);
  EXPECT_EQ(opened.instance_id(), "instance-7");
  EXPECT_EQ(opened.instance_address(), "10.0.0.7:50051");
}

TEST_F(SessionManagerTest, RefusesPastMaxSessions) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Admit(10).ok());
  absl::StatusOr<std::shared_ptr<Session>> refused = Admit(10);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("maximum of 3 sessions"));
  EXPECT_EQ(budget_.reserved(), 30);
  EXPECT_EQ(Metric(R"(streamkv_sessions_rejected_total{reason="max_sessions"})"), 1);
}

TEST_F(SessionManagerTest, RefusesWhatTheBudgetCannotHoldSayingWhatIsFree) {
  ASSERT_TRUE(Admit(600).ok());
  absl::StatusOr<std::shared_ptr<Session>> refused = Admit(500);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("only 400"));
  EXPECT_THAT(manager().List(), SizeIs(1));
  EXPECT_EQ(budget_.reserved(), 600);
  EXPECT_EQ(Metric(R"(streamkv_sessions_rejected_total{reason="budget"})"), 1);
}

TEST_F(SessionManagerTest, StopAdmittingRefusesWithUnavailable) {
  EXPECT_TRUE(manager().admitting());
  manager().StopAdmitting();
  EXPECT_FALSE(manager().admitting());
  absl::StatusOr<std::shared_ptr<Session>> refused = Admit(10);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(budget_.reserved(), 0);
  EXPECT_EQ(Metric(R"(streamkv_sessions_rejected_total{reason="shutting_down"})"), 1);
}

TEST_F(SessionManagerTest, FindAuthorizedChecksIdThenToken) {
  absl::StatusOr<std::shared_ptr<Session>> session = Admit(10);
  ASSERT_TRUE(session.ok());
  const std::string id = (*session)->id();
  const std::string token = (*session)->spec().resume_token;

  absl::StatusOr<std::shared_ptr<Session>> unknown = manager().FindAuthorized("nope", token);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("'nope'"));

  std::string wrong = token;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  EXPECT_EQ(manager().FindAuthorized(id, wrong).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(manager().FindAuthorized(id, token.substr(1)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(manager().FindAuthorized(id, "").status().code(),
            absl::StatusCode::kPermissionDenied);

  absl::StatusOr<std::shared_ptr<Session>> found = manager().FindAuthorized(id, token);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, *session);
}

TEST_F(SessionManagerTest, RemoveEndsTheAttachedStreamAndFreesTheBudget) {
  absl::StatusOr<std::shared_ptr<Session>> admitted = Admit(300);
  ASSERT_TRUE(admitted.ok());
  std::shared_ptr<Session> session = *std::move(admitted);
  const std::string id = session->id();
  const auto sink = std::make_shared<RecordingSink>();
  session->Attach(sink, std::nullopt, clock_.Now());

  ASSERT_TRUE(manager().Remove(id, EndReason::kCloseRpc,
                               grpc::Status(grpc::StatusCode::ABORTED, "closed")));
  ASSERT_THAT(sink->detached(), SizeIs(1));
  EXPECT_EQ(sink->detached()[0].error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(sink->detached()[0].error_message(), "closed");
  EXPECT_EQ(manager().Find(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Metric(R"(streamkv_sessions_closed_total{reason="close_rpc"})"), 1);

  // The share goes back with the last reference (a worker may still hold the session).
  EXPECT_EQ(budget_.reserved(), 300);
  session.reset();
  EXPECT_EQ(budget_.reserved(), 0);
  EXPECT_FALSE(manager().Remove(id, EndReason::kCloseRpc, grpc::Status::OK));
}

TEST_F(SessionManagerTest, RemoveWithoutOtherReferencesFreesTheBudgetAtOnce) {
  absl::StatusOr<std::shared_ptr<Session>> admitted = Admit(300);
  ASSERT_TRUE(admitted.ok());
  const std::string id = (*admitted)->id();
  admitted->reset();  // only the manager holds the session
  EXPECT_EQ(budget_.reserved(), 300);
  ASSERT_TRUE(manager().Remove(id, EndReason::kShutdown, grpc::Status::CANCELLED));
  EXPECT_EQ(budget_.reserved(), 0);
  EXPECT_EQ(Metric(R"(streamkv_sessions_closed_total{reason="shutdown"})"), 1);
}

TEST_F(SessionManagerTest, RemoveOfAnUnknownIdIsFalse) {
  EXPECT_FALSE(manager().Remove("unknown", EndReason::kEnd, grpc::Status::OK));
  EXPECT_EQ(Metric(R"(streamkv_sessions_closed_total{reason="end"})"), 0);
}

TEST_F(SessionManagerTest, ReapsAnIdleAttachedSessionAfterTheIdleTimeout) {
  absl::StatusOr<std::shared_ptr<Session>> session = Admit(100);
  ASSERT_TRUE(session.ok());
  const auto sink = std::make_shared<RecordingSink>();
  (*session)->Attach(sink, std::nullopt, clock_.Now());
  session->reset();  // only the manager holds the session

  clock_.Advance(absl::Minutes(10) - absl::Seconds(1));
  EXPECT_EQ(manager().ReapExpired(), 0);
  EXPECT_THAT(manager().List(), SizeIs(1));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(manager().ReapExpired(), 1);
  EXPECT_THAT(manager().List(), SizeIs(0));
  ASSERT_THAT(sink->detached(), SizeIs(1));
  EXPECT_EQ(sink->detached()[0].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(sink->detached()[0].error_message(), HasSubstr("idle for more than 10m"));
  EXPECT_EQ(budget_.reserved(), 0);
  EXPECT_EQ(Metric(R"(streamkv_sessions_reaped_total{reason="idle"})"), 1);
  EXPECT_EQ(Metric(R"(streamkv_sessions_reaped_total{reason="expired"})"), 0);
}

TEST_F(SessionManagerTest, ReapsADetachedSessionAfterTheResumeGrace) {
  absl::StatusOr<std::shared_ptr<Session>> session = Admit(100);
  ASSERT_TRUE(session.ok());
  const auto sink = std::make_shared<RecordingSink>();
  (*session)->Attach(sink, std::nullopt, clock_.Now());
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE((*session)->Detach(sink.get(), clock_.Now()));
  session->reset();  // only the manager holds the session

  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(manager().ReapExpired(), 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(manager().ReapExpired(), 1);
  EXPECT_THAT(manager().List(), SizeIs(0));
  EXPECT_THAT(sink->detached(), SizeIs(0));  // it had left already
  EXPECT_EQ(budget_.reserved(), 0);
  EXPECT_EQ(Metric(R"(streamkv_sessions_reaped_total{reason="expired"})"), 1);
  EXPECT_EQ(Metric(R"(streamkv_sessions_reaped_total{reason="idle"})"), 0);
}

TEST_F(SessionManagerTest, ReapsOnlyTheSessionsDue) {
  absl::StatusOr<std::shared_ptr<Session>> old_one = Admit(100);
  ASSERT_TRUE(old_one.ok());
  clock_.Advance(absl::Seconds(30));
  absl::StatusOr<std::shared_ptr<Session>> young = Admit(100);
  ASSERT_TRUE(young.ok());
  clock_.Advance(absl::Seconds(30));
  EXPECT_EQ(manager().ReapExpired(), 1);
  EXPECT_THAT(manager().List(), ElementsAre(*young));
}

TEST_F(SessionManagerTest, PublishesSessionCountsByState) {
  absl::StatusOr<std::shared_ptr<Session>> attached = Admit(10);
  absl::StatusOr<std::shared_ptr<Session>> ending = Admit(10);
  absl::StatusOr<std::shared_ptr<Session>> detached = Admit(10);
  ASSERT_TRUE(attached.ok() && ending.ok() && detached.ok());
  (*attached)->Attach(std::make_shared<RecordingSink>(), std::nullopt, clock_.Now());
  (*ending)->Attach(std::make_shared<RecordingSink>(), std::nullopt, clock_.Now());
  (*ending)->MarkEnding();
  EXPECT_THAT(manager().List(), UnorderedElementsAre(*attached, *ending, *detached));

  manager().PublishSessionCounts();
  EXPECT_EQ(Metric(R"(streamkv_sessions{state="attached"})"), 1);
  EXPECT_EQ(Metric(R"(streamkv_sessions{state="ending"})"), 1);
  EXPECT_EQ(Metric(R"(streamkv_sessions{state="detached"})"), 1);

  manager().Remove((*ending)->id(), EndReason::kEnd, grpc::Status::OK);  // republishes
  EXPECT_EQ(Metric(R"(streamkv_sessions{state="ending"})"), 0);
  EXPECT_EQ(Metric(R"(streamkv_sessions_closed_total{reason="end"})"), 1);
}

TEST(RandomHexIdTest, IsThirtyTwoHexDigitsAndDiffersEachCall) {
  const std::string a = RandomHexId();
  EXPECT_THAT(a, SizeIs(32));
  EXPECT_THAT(a, Each(Truly(IsLowerHex)));
  EXPECT_NE(a, RandomHexId());
}

}  // namespace
}  // namespace streamkv::server
