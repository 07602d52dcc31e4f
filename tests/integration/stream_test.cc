// The Stream call end to end over loopback: sessions, frames, errors and faults (issue 5's list),
// each followed by a fresh session and KV bytes back at zero.
#include <atomic>
#include <map>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/outputs.h"
#include "client/stream_runner.h"
#include "tests/integration/test_server.h"

namespace streamkv::testing {
namespace {

using ::testing::HasSubstr;

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_ = TestServerOptions(&clock_);
    Customize(options_);
    server_ = StartTestServer(options_);
    ASSERT_NE(server_, nullptr);
    client_ = ConnectTo(*server_);
  }

  // After every test: a fresh session still works, and once every session is gone no KV byte
  // is held or reserved.
  void TearDown() override {
    if (server_ == nullptr || !check_fresh_session_) return;
    // Sessions a test left behind go as if their grace period ended.
    for (const auto& session : server_->sessions().List()) {
      server_->sessions().Remove(session->id(), server::EndReason::kExpired,
                                 grpc::Status::CANCELLED);
    }
    EXPECT_EQ(StreamFreshSession(*client_), 2);
    EXPECT_TRUE(server_->sessions().List().empty());
    // A worker may still be finishing a frame of a freed session; it frees it right after.
    EXPECT_TRUE(
        server_->sessions().budget().AwaitReservedAtMost(0, absl::Now() + absl::Seconds(30)));
    EXPECT_EQ(MetricValue(*server_, "streamkv_kv_cache_used_bytes"), 0);
    EXPECT_EQ(MetricValue(*server_, "streamkv_kv_cache_reserved_bytes"), 0);
  }

  virtual void Customize(server::ServerOptions&) {}

  absl::StatusOr<std::unique_ptr<client::SessionStream>> Open(const v1::OpenSession& open) {
    return client_->Open(open);
  }

  server::ManualClock clock_;
  server::ServerOptions options_;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::Client> client_;
  bool check_fresh_session_ = true;
};

TEST_F(StreamTest, StreamsFramesAndAnswersWithOutputsAndCacheState) {
  v1::OpenSession open = TinyOpen("sliding_window", {{"unit", "frames"},
                                                     {"start_size", "1"},
                                                     {"recent_size", "2"}});
  open.mutable_outputs()->add_names("depth");
  open.mutable_outputs()->add_names("extrinsic");
  open.mutable_outputs()->set_dtype(v1::TENSOR_DTYPE_FLOAT16);
  auto stream = Open(open);
  ASSERT_TRUE(stream.ok()) << stream.status();
  const v1::SessionOpened& opened = (*stream)->opened();
  EXPECT_EQ(opened.session_id().size(), 32u);
  EXPECT_EQ(opened.resume_token().size(), 32u);
  EXPECT_NE(opened.session_id(), opened.resume_token());
  EXPECT_EQ(opened.model(), "stream3r-tiny");
  EXPECT_EQ(opened.policy_params().at("recent_size"), "2");
  EXPECT_EQ(opened.kv_budget_bytes(), options_.default_session_budget_bytes);
  EXPECT_EQ(opened.instance_id(), "test-instance");

  for (uint64_t sequence = 10; sequence < 15; ++sequence) {
    ASSERT_TRUE((*stream)->Send(RawFrame(sequence)));
    const v1::StreamResponse answer = ReadAnswer(**stream);
    ASSERT_TRUE(answer.has_result()) << answer.DebugString();
    const v1::FrameResult& result = answer.result();
    EXPECT_EQ(result.sequence(), sequence);
    EXPECT_EQ(result.frame_index(), sequence - 10);
    ASSERT_EQ(result.outputs_size(), 2);  // in the model's order: extrinsic before depth
    EXPECT_EQ(result.outputs(0).name(), "extrinsic");
    EXPECT_EQ(result.outputs(1).name(), "depth");
    const v1::Tensor& depth = result.outputs(1);
    EXPECT_EQ(depth.dtype(), v1::TENSOR_DTYPE_FLOAT16);
    EXPECT_THAT(depth.shape(), ::testing::ElementsAre(kFrameHeight, kFrameWidth, 1));
    EXPECT_EQ(depth.data().size(), static_cast<size_t>(kFrameHeight * kFrameWidth * 2));
    absl::StatusOr<client::HostTensor> values = client::ToHostTensor(depth);
    ASSERT_TRUE(values.ok());
    EXPECT_GT(*std::min_element(values->values.begin(), values->values.end()), 0.0f);
    // Sink frame + 2 recent frames at most, after this frame's eviction.
    const int64_t frames_kept = std::min<int64_t>(sequence - 9, 3);
    ASSERT_EQ(result.cache().layer_tokens_size(), kTinyLayers);
    for (int64_t tokens : result.cache().layer_tokens()) {
      EXPECT_EQ(tokens, frames_kept * kTinyTokensPerFrame);
    }
    EXPECT_EQ(result.cache().layer_evicted(0), sequence >= 13 ? kTinyTokensPerFrame : 0);
    EXPECT_GT(result.cache().bytes(), 0);
    // The camera trunk keeps one token per kept frame in each of its layers.
    EXPECT_EQ(result.cache().auxiliary_tokens(), frames_kept * kTinyTrunkLayers);
    EXPECT_GT(result.timings().model_ms(), 0);
    EXPECT_GE(result.timings().total_ms(), result.timings().model_ms());
  }
  // Per-layer tokens reach the metrics while the session lives.
  EXPECT_EQ(MetricValue(*server_,
                        "streamkv_cache_tokens{cache=\"backbone\",layer=\"2\",model=\"stream3r-"
                        "tiny\",policy=\"sliding_window\"}"),
            3 * kTinyTokensPerFrame);
  EXPECT_EQ(MetricValue(*server_,
                        "streamkv_frames_processed_total{model=\"stream3r-tiny\",policy=\"sliding_"
                        "window\"}"),
            5);
  ASSERT_TRUE((*stream)->End());
  v1::StreamResponse response;
  ASSERT_TRUE((*stream)->Read(&response));
  ASSERT_TRUE(response.has_ended());
  EXPECT_EQ(response.ended().frames_processed(), 5u);
  EXPECT_FALSE((*stream)->Read(&response));
  EXPECT_TRUE((*stream)->Finish().ok());
  // The worker that answered the last frame may still hold the session for a moment after the
  // call ends; the cache (and its gauges) go with it, then the reservation.
  ASSERT_TRUE(
      server_->sessions().budget().AwaitReservedAtMost(0, absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(MetricValue(*server_,
                        "streamkv_cache_tokens{cache=\"backbone\",layer=\"2\",model=\"stream3r-"
                        "tiny\",policy=\"sliding_window\"}"),
            0);
}

TEST_F(StreamTest, JpegAndPngFramesAreDecoded) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  std::unique_ptr<client::FrameSource> jpegs =
      client::SyntheticSource(2, 84, 112, client::SyntheticEncoding::kJpeg);
  for (uint64_t sequence = 1; sequence <= 2; ++sequence) {
    v1::Frame frame = **jpegs->Next();
    frame.set_sequence(sequence);
    ASSERT_TRUE((*stream)->Send(frame));
    const v1::StreamResponse answer = ReadAnswer(**stream);
    EXPECT_TRUE(answer.has_result()) << answer.DebugString();
    // 84 rows at width 112 are 6 patch rows.
    EXPECT_EQ(answer.result().cache().layer_tokens(0), static_cast<int64_t>(sequence) * (5 + 6 * 8));
  }
}

TEST_F(StreamTest, FrameBeforeOpenFailsThePrecondition) {
  grpc::ClientContext context;
  auto stub = v1::StreamKv::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials()));
  auto call = stub->Stream(&context);
  v1::StreamRequest request;
  *request.mutable_frame() = RawFrame(1);
  call->Write(request);
  call->WritesDone();
  v1::StreamResponse response;
  EXPECT_FALSE(call->Read(&response));
  const grpc::Status status = call->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("open or resume"));
}

struct BadOpen {
  std::string name;
  v1::OpenSession open;
  std::string field;  // the error message names it
};

class BadOpenTest : public StreamTest, public ::testing::WithParamInterface<BadOpen> {};

TEST_P(BadOpenTest, IsInvalidArgumentNamingTheField) {
  auto stream = Open(GetParam().open);
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), absl::StatusCode::kInvalidArgument) << stream.status();
  EXPECT_THAT(std::string(stream.status().message()), HasSubstr(GetParam().field));
  EXPECT_TRUE(server_->sessions().List().empty());
}

std::vector<BadOpen> BadOpens() {
  std::vector<BadOpen> cases;
  auto add = [&](std::string name, std::string field, auto edit) {
    v1::OpenSession open = TinyOpen();
    edit(open);
    cases.push_back({std::move(name), open, std::move(field)});
  };
  add("UnknownModel", "model", [](v1::OpenSession& o) { o.set_model("gpt-9"); });
  add("UnknownPolicy", "policy", [](v1::OpenSession& o) { o.set_policy("lru"); });
  add("UnknownParameter", "bogus", [](v1::OpenSession& o) {
    o.set_policy("h2o");
    (*o.mutable_policy_params())["bogus"] = "1";
  });
  add("OutOfRangeParameter", "ratio", [](v1::OpenSession& o) {
    o.set_policy("global_ratio");
    (*o.mutable_policy_params())["ratio"] = "1.5";
  });
  add("MalformedParameter", "recent_size", [](v1::OpenSession& o) {
    o.set_policy("sliding_window");
    (*o.mutable_policy_params())["recent_size"] = "many";
  });
  add("NegativeBudget", "kv_budget_bytes", [](v1::OpenSession& o) { o.set_kv_budget_bytes(-1); });
  add("BudgetAboveSessionMaximum", "kv_budget_bytes",
      [](v1::OpenSession& o) { o.set_kv_budget_bytes(1LL << 40); });
  add("UnknownOutput", "outputs.names",
      [](v1::OpenSession& o) { o.mutable_outputs()->add_names("normals"); });
  add("UnknownDtype", "outputs.dtype", [](v1::OpenSession& o) {
    o.mutable_outputs()->set_dtype(static_cast<v1::TensorDtype>(7));
  });
  add("HalfAFrameSize", "frame_size", [](v1::OpenSession& o) {
    o.mutable_frame_size()->set_height(56);
  });
  add("FrameTooSmallForTheModel", "frame_size", [](v1::OpenSession& o) {
    o.mutable_frame_size()->set_height(1);
    o.mutable_frame_size()->set_width(1000);
  });
  add("LongLabel", "label", [](v1::OpenSession& o) { o.set_label(std::string(200, 'x')); });
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, BadOpenTest, ::testing::ValuesIn(BadOpens()),
                         [](const auto& info) { return info.param.name; });

TEST_F(StreamTest, BadFramesGetInStreamErrorsAndTheSessionContinues) {
  v1::OpenSession open = TinyOpen();
  open.mutable_frame_size()->set_height(kFrameHeight);
  open.mutable_frame_size()->set_width(kFrameWidth);
  auto stream = Open(open);
  ASSERT_TRUE(stream.ok()) << stream.status();
  struct Case {
    v1::Frame frame;
    std::string message;
  };
  std::vector<Case> cases;
  v1::Frame corrupt;
  corrupt.set_encoded(std::string("\xFF\xD8\xFF\xE0 not really a JPEG", 23));
  cases.push_back({corrupt, "JPEG"});
  v1::Frame wrong_raw = RawFrame(0);
  wrong_raw.mutable_raw()->mutable_rgb()->resize(100);
  cases.push_back({wrong_raw, "needs"});
  cases.push_back({v1::Frame(), "no image"});
  v1::Frame empty;
  empty.set_encoded("");
  cases.push_back({empty, "empty"});
  cases.push_back({RawFrame(0, 84, 112), "opened for 56x112"});
  uint64_t sequence = 0;
  int64_t processed = 0;
  for (Case& c : cases) {
    c.frame.set_sequence(++sequence);
    ASSERT_TRUE((*stream)->Send(c.frame));
    const v1::StreamResponse bad = ReadAnswer(**stream);
    ASSERT_TRUE(bad.has_error()) << c.message;
    EXPECT_EQ(bad.error().sequence(), sequence);
    EXPECT_EQ(bad.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_THAT(bad.error().message(), HasSubstr(c.message));
    // The next good frame goes through, and the cache holds only good frames.
    ASSERT_TRUE((*stream)->Send(RawFrame(++sequence)));
    const v1::StreamResponse good = ReadAnswer(**stream);
    ASSERT_TRUE(good.has_result()) << good.DebugString();
    EXPECT_EQ(good.result().frame_index(), static_cast<uint64_t>(processed));
    EXPECT_EQ(good.result().cache().layer_tokens(0), ++processed * kTinyTokensPerFrame);
  }
  EXPECT_EQ(MetricValue(*server_,
                        "streamkv_frames_failed_total{model=\"stream3r-tiny\",reason=\"invalid_"
                        "input\"}"),
            5);
}

TEST_F(StreamTest, DuplicateAndOutOfOrderSequencesAreRefusedWithoutTouchingTheCache) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(RawFrame(5)));
  ASSERT_TRUE(ReadAnswer(**stream).has_result());
  ASSERT_TRUE((*stream)->Send(RawFrame(5)));
  v1::StreamResponse duplicate = ReadAnswer(**stream);
  ASSERT_TRUE(duplicate.has_error());
  EXPECT_EQ(duplicate.error().code(), static_cast<int>(grpc::StatusCode::ALREADY_EXISTS));
  ASSERT_TRUE((*stream)->Send(RawFrame(3)));
  v1::StreamResponse backwards = ReadAnswer(**stream);
  ASSERT_TRUE(backwards.has_error());
  EXPECT_EQ(backwards.error().code(), static_cast<int>(grpc::StatusCode::OUT_OF_RANGE));
  EXPECT_THAT(backwards.error().message(), HasSubstr("last accepted sequence 5"));
  ASSERT_TRUE((*stream)->Send(RawFrame(9)));  // gaps are fine
  v1::StreamResponse next = ReadAnswer(**stream);
  ASSERT_TRUE(next.has_result());
  EXPECT_EQ(next.result().frame_index(), 1u);
  EXPECT_EQ(next.result().cache().layer_tokens(0), 2 * kTinyTokensPerFrame);
}

class SmallBudgetTest : public StreamTest {
  void Customize(server::ServerOptions& o) override {
    o.kv_budget_bytes = 1 << 20;
    o.default_session_budget_bytes = 400 << 10;
    o.max_session_budget_bytes = 1 << 20;
  }
};

TEST_F(SmallBudgetTest, MoreSessionsThanTheBudgetAllowsAreRefusedSayingWhatIsFree) {
  auto first = Open(TinyOpen());
  auto second = Open(TinyOpen());
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = Open(TinyOpen());
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()),
              HasSubstr(absl::StrCat("only ", (1 << 20) - 2 * (400 << 10), " of")));
  EXPECT_EQ(MetricValue(*server_, "streamkv_sessions_rejected_total{reason=\"budget\"}"), 1);
  // Ending one makes room again.
  ASSERT_TRUE((*first)->End());
  v1::StreamResponse response;
  while ((*first)->Read(&response)) {
  }
  EXPECT_TRUE((*first)->Finish().ok());
  EXPECT_TRUE(Open(TinyOpen()).ok());
}

TEST_F(SmallBudgetTest, AFrameThatWouldExceedTheSessionBudgetIsRefusedAndTheSessionLives) {
  v1::OpenSession open = TinyOpen();
  // Room for two frames of the tiny model under `none` (each adds ~42 KiB: 4 backbone layers of
  // 37 tokens plus the camera trunk's tokens).
  open.set_kv_budget_bytes(100 << 10);
  auto stream = Open(open);
  ASSERT_TRUE(stream.ok());
  int results = 0;
  uint64_t sequence = 0;
  v1::StreamResponse answer;
  do {
    ASSERT_TRUE((*stream)->Send(RawFrame(++sequence)));
    answer = ReadAnswer(**stream);
    results += answer.has_result();
    if (answer.has_result()) {
      EXPECT_LE(answer.result().cache().bytes(), 100 << 10);
    }
  } while (answer.has_result() && sequence < 50);
  ASSERT_TRUE(answer.has_error());
  EXPECT_GE(results, 1);
  EXPECT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(answer.error().message(), HasSubstr("budget of 102400 bytes"));
  absl::StatusOr<v1::SessionInfo> info =
      client_->GetSession((*stream)->opened().session_id());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->frames_processed(), static_cast<uint64_t>(results));
  EXPECT_LE(info->cache().bytes(), 100 << 10);
}

TEST_F(StreamTest, AnOversizeMessageEndsTheStreamWithResourceExhausted) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  v1::Frame huge;
  huge.set_sequence(1);
  huge.set_encoded(std::string(options_.max_message_bytes + 1, 'x'));
  (*stream)->Send(huge);
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
  }
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(StreamTest, CancellingMidFrameDetachesTheSessionAndReapingReturnsItsMemory) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  const std::string id = (*stream)->opened().session_id();
  ASSERT_TRUE((*stream)->Send(RawFrame(1)));
  ASSERT_TRUE(ReadAnswer(**stream).has_result());
  for (uint64_t s = 2; s <= 4; ++s) ASSERT_TRUE((*stream)->Send(RawFrame(s)));
  (*stream)->Cancel();  // while frame 2 is probably running and 3, 4 are queued
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kCancelled);
  stream->reset();
  // The server notices the cancel, drops the queued frames, finishes the running one, and keeps
  // the session for resume; once the grace period passes it is reaped and freed.
  absl::StatusOr<std::shared_ptr<server::Session>> session = server_->sessions().Find(id);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->AwaitQuiet(absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(client_->GetSession(id)->state(), v1::SessionInfo::STATE_DETACHED);
  EXPECT_LE(client_->GetSession(id)->frames_processed(), 2u);  // 3 and 4 were dropped or never read
  session->reset();
  clock_.Advance(options_.sessions.resume_grace);
  EXPECT_EQ(server_->sessions().ReapExpired(), 1);
  EXPECT_EQ(client_->GetSession(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MetricValue(*server_, "streamkv_sessions_reaped_total{reason=\"expired\"}"), 1);
}

TEST_F(StreamTest, ResumeContinuesTheCacheAndReplaysMissedAnswers) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  const v1::SessionOpened opened = (*stream)->opened();
  for (uint64_t s = 1; s <= 3; ++s) {
    ASSERT_TRUE((*stream)->Send(RawFrame(s)));
    ASSERT_TRUE(ReadAnswer(**stream).has_result());
  }
  // Resume on a second stream while the first still looks alive: the first ends ABORTED.
  auto resumed = client_->Resume(opened.session_id(), opened.resume_token(), /*last=*/1);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE((*resumed)->opened().resumed());
  EXPECT_EQ((*resumed)->opened().frames_processed(), 3u);
  EXPECT_EQ((*resumed)->opened().last_processed_sequence(), 3u);
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
  }
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kAborted);
  // Answers after the client's last received one (1) are replayed: 2 and 3.
  EXPECT_EQ(ReadAnswer(**resumed).result().sequence(), 2u);
  EXPECT_EQ(ReadAnswer(**resumed).result().sequence(), 3u);
  ASSERT_TRUE((*resumed)->Send(RawFrame(4)));
  const v1::StreamResponse fourth = ReadAnswer(**resumed);
  ASSERT_TRUE(fourth.has_result());
  EXPECT_EQ(fourth.result().frame_index(), 3u);
  EXPECT_EQ(fourth.result().cache().layer_tokens(0), 4 * kTinyTokensPerFrame);
  EXPECT_EQ(MetricValue(*server_, "streamkv_sessions_resumed_total"), 1);
}

TEST_F(StreamTest, ResumeWithAWrongTokenIsPermissionDenied) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  auto wrong = client_->Resume((*stream)->opened().session_id(), "0123", std::nullopt);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  // The rightful stream is untouched.
  ASSERT_TRUE((*stream)->Send(RawFrame(1)));
  EXPECT_TRUE(ReadAnswer(**stream).has_result());
}

TEST_F(StreamTest, ResumeAfterTheGracePeriodIsNotFound) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  const v1::SessionOpened opened = (*stream)->opened();
  ASSERT_TRUE((*stream)->CloseSend());  // leave without EndSession: the session waits
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
  }
  EXPECT_TRUE((*stream)->Finish().ok());
  clock_.Advance(options_.sessions.resume_grace - absl::Seconds(1));
  EXPECT_EQ(server_->sessions().ReapExpired(), 0);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(server_->sessions().ReapExpired(), 1);
  auto late = client_->Resume(opened.session_id(), opened.resume_token(), std::nullopt);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StreamTest, AnIdleAttachedSessionIsReapedAndItsStreamEnds) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  clock_.Advance(options_.sessions.idle_timeout + absl::Seconds(1));
  EXPECT_EQ(server_->sessions().ReapExpired(), 1);
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
  }
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(StreamTest, CloseSessionEndsTheAttachedStreamAndNeedsTheToken) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  const v1::SessionOpened opened = (*stream)->opened();
  EXPECT_EQ(client_->CloseSession(opened.session_id(), "nope").status().code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE((*stream)->Send(RawFrame(1)));
  ASSERT_TRUE(ReadAnswer(**stream).has_result());
  absl::StatusOr<v1::CloseSessionResponse> closed =
      client_->CloseSession(opened.session_id(), opened.resume_token());
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(closed->frames_processed(), 1u);
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
  }
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(client_->GetSession(opened.session_id()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StreamTest, EndSessionCanDiscardQueuedFrames) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  for (uint64_t s = 1; s <= 6; ++s) ASSERT_TRUE((*stream)->Send(RawFrame(s)));
  ASSERT_TRUE((*stream)->End(/*discard_queued=*/true));
  // Every frame gets exactly one answer, in order: results for those already taken, CANCELLED
  // for the rest; then `ended`.
  uint64_t expected = 1;
  int cancelled = 0;
  bool ended = false;
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
    if (response.has_ended()) {
      ended = true;
      continue;
    }
    EXPECT_EQ(server::AnswerSequence(response), expected++);
    if (response.has_error()) {
      EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::CANCELLED));
      ++cancelled;
    } else {
      EXPECT_EQ(cancelled, 0) << "a result after a cancelled frame";
    }
  }
  EXPECT_TRUE((*stream)->Finish().ok());
  EXPECT_TRUE(ended);
  EXPECT_EQ(expected, 7u);
}

class OneWorkerSmallQueueTest : public StreamTest {
  void Customize(server::ServerOptions& o) override {
    o.workers = 1;
    o.sessions.session_limits.max_queued_frames = 2;
  }
};

TEST_F(OneWorkerSmallQueueTest, AFullQueueStopsReadingAndEveryFrameIsStillAnswered) {
  client::RunnerOptions runner_options;
  runner_options.open = TinyOpen();
  runner_options.max_in_flight = 12;  // far more than the server queues
  client::StreamRunner runner(client_.get(), runner_options);
  std::unique_ptr<client::FrameSource> source = client::SyntheticSource(
      20, kFrameHeight, kFrameWidth, client::SyntheticEncoding::kRaw);
  std::atomic<bool> done{false};
  uint32_t most_queued = 0;
  std::thread watcher([&] {
    while (!done) {
      absl::StatusOr<v1::ListSessionsResponse> list = client_->ListSessions();
      if (list.ok()) {
        for (const auto& s : list->sessions()) most_queued = std::max(most_queued, s.queued_frames());
      }
    }
  });
  std::vector<int64_t> order;
  absl::StatusOr<client::RunSummary> summary =
      runner.Run(*source, [&](const client::FrameAnswer& a) { order.push_back(a.index); });
  done = true;
  watcher.join();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->results, 20);
  ASSERT_EQ(order.size(), 20u);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
  EXPECT_LE(most_queued, 2u);
}

TEST_F(StreamTest, TheRunnerResumesAfterADisconnectWithoutLosingFrames) {
  client::RunnerOptions runner_options;
  runner_options.open = TinyOpen();
  runner_options.max_resumes = 3;
  runner_options.resume_backoff = absl::Milliseconds(10);
  client::StreamRunner runner(client_.get(), runner_options);
  std::unique_ptr<client::FrameSource> source = client::SyntheticSource(
      12, kFrameHeight, kFrameWidth, client::SyntheticEncoding::kRaw);
  std::vector<uint64_t> frame_indices;
  absl::StatusOr<client::RunSummary> summary = runner.Run(*source, [&](const client::FrameAnswer& a) {
    ASSERT_NE(a.result, nullptr) << a.error->message();
    frame_indices.push_back(a.result->frame_index());
    if (a.index == 4) runner.Disconnect();
  });
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->resumes, 1);
  // Every frame went into the cache exactly once, in order; answers lost in the reconnect (if
  // any) are counted, not duplicated.
  EXPECT_EQ(summary->results + summary->lost, 12);
  for (size_t i = 1; i < frame_indices.size(); ++i) {
    EXPECT_GT(frame_indices[i], frame_indices[i - 1]);
  }
  EXPECT_EQ(frame_indices.back(), 11u);
}

class ShutdownTest : public StreamTest {
 protected:
  ShutdownTest() { check_fresh_session_ = false; }
};

TEST_F(ShutdownTest, ShutdownAnswersQueuedFramesThenEndsStreamsUnavailable) {
  auto stream = Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  for (uint64_t s = 1; s <= 4; ++s) ASSERT_TRUE((*stream)->Send(RawFrame(s)));
  ASSERT_TRUE(ReadAnswer(**stream).has_result());
  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(30)); });
  // Frames the server read before the shutdown are answered with results, later ones with
  // UNAVAILABLE; every answer keeps the order.
  uint64_t expected = 2;
  bool refused = false;
  v1::StreamResponse response;
  while ((*stream)->Read(&response)) {
    ASSERT_TRUE(response.has_result() || response.has_error());
    EXPECT_EQ(server::AnswerSequence(response), expected++);
    if (response.has_error()) {
      EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
      refused = true;
    } else {
      EXPECT_FALSE(refused) << "a result after a refused frame";
    }
  }
  shutdown.join();
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(server_->sessions().List().empty());
  EXPECT_EQ(server_->sessions().budget().reserved(), 0);
  EXPECT_EQ(client_->Open(TinyOpen()).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace streamkv::testing
