// The server as infrastructure sees it: health, reflection, bearer tokens, introspection RPCs,
// and resuming through the instance address a session was opened on.
#include <memory>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "client/stream_runner.h"
#include "health_client.grpc.pb.h"
#include "reflection_client.pb.h"
#include "tests/integration/test_server.h"

namespace streamkv::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

std::shared_ptr<grpc::Channel> ChannelTo(const server::Server& server) {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port()),
                             grpc::InsecureChannelCredentials());
}

class ServicesTest : public ::testing::Test {
 protected:
  void Start(const std::string& bearer_token = "") {
    options_ = TestServerOptions(&clock_);
    options_.bearer_token = bearer_token;
    server_ = StartTestServer(options_);
    ASSERT_NE(server_, nullptr);
  }

  server::ManualClock clock_;
  server::ServerOptions options_;
  std::unique_ptr<server::Server> server_;
};

HealthStatus::ServingStatus Check(grpc::health::v1::Health::Stub& health,
                                  const std::string& service, grpc::Status* status) {
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthStatus response;
  *status = health.Check(&context, request, &response);
  return response.status();
}

TEST_F(ServicesTest, HealthReportsServingForTheServerAndItsService) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(ChannelTo(*server_));
  grpc::Status status;
  EXPECT_EQ(Check(*health, "", &status), HealthStatus::SERVING);
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(Check(*health, "streamkv.v1.StreamKv", &status), HealthStatus::SERVING);
  Check(*health, "no.such.Service", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServicesTest, HealthTurnsNotServingAsSoonAsShutdownBegins) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(ChannelTo(*server_));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  auto watch = health->Watch(&context, request);
  HealthStatus update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthStatus::SERVING);
  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(5)); });
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthStatus::NOT_SERVING);
  context.TryCancel();
  watch->Finish().IgnoreError();
  shutdown.join();
}

TEST_F(ServicesTest, ReflectionListsTheServices) {
  Start();
  grpc::GenericStub stub(ChannelTo(*server_));
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  // Each step of the generic call completes on the queue with its tag.
  auto step = [&](int tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(static_cast<intptr_t>(tag)));
    return ok;
  };
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  reflection::ListServicesRequest request;
  request.set_list_services("*");
  const std::string bytes = request.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string received;
  for (const grpc::Slice& s : slices) received.append(reinterpret_cast<const char*>(s.begin()), s.size());
  reflection::ListServicesResponse response;
  ASSERT_TRUE(response.ParseFromString(received));
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_THAT(names, Contains("streamkv.v1.StreamKv"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ServicesTest, ABearerTokenGuardsEveryStreamkvCallButNotHealth) {
  Start("s3cret");
  auto anonymous = ConnectTo(*server_);
  EXPECT_EQ(anonymous->Describe().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->ListSessions().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->Open(TinyOpen()).status().code(), absl::StatusCode::kUnauthenticated);
  auto wrong = ConnectTo(*server_, "guess");
  EXPECT_EQ(wrong->Describe().status().code(), absl::StatusCode::kUnauthenticated);
  auto trusted = ConnectTo(*server_, "s3cret");
  EXPECT_TRUE(trusted->Describe().ok());
  EXPECT_EQ(StreamFreshSession(*trusted), 2);
  auto health = grpc::health::v1::Health::NewStub(ChannelTo(*server_));
  grpc::Status status;
  EXPECT_EQ(Check(*health, "", &status), HealthStatus::SERVING);
}

TEST_F(ServicesTest, DescribeServerPublishesModelsPoliciesBudgetsAndLimits) {
  Start();
  auto client = ConnectTo(*server_);
  absl::StatusOr<v1::ServerDescription> d = client->Describe();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->default_model(), "stream3r-tiny");
  ASSERT_EQ(d->models_size(), 1);
  EXPECT_EQ(d->models(0).family(), "stream3r");
  EXPECT_EQ(d->models(0).cached_layers(), kTinyLayers);
  EXPECT_EQ(d->models(0).image_width(), kFrameWidth);
  EXPECT_THAT(d->models(0).output_names(), Contains("world_points"));
  std::vector<std::string> policies;
  for (const v1::PolicyDescription& p : d->policies()) policies.push_back(p.name());
  EXPECT_THAT(policies, ::testing::ElementsAre("none", "sliding_window", "h2o", "global_ratio",
                                               "layerwise"));
  const v1::PolicyDescription& window = d->policies(1);
  bool found = false;
  for (const v1::ParamDescription& param : window.params()) {
    if (param.name() != "recent_size") continue;
    found = true;
    EXPECT_EQ(param.type(), "int");
    EXPECT_EQ(param.default_value(), "512");
    EXPECT_FALSE(param.help().empty());
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(d->budgets().kv_budget_bytes(), options_.kv_budget_bytes);
  EXPECT_EQ(d->budgets().kv_reserved_bytes(), 0);
  EXPECT_EQ(d->limits().max_message_bytes(), options_.max_message_bytes);
  EXPECT_EQ(d->limits().resume_grace_seconds(), 30);
  EXPECT_EQ(d->instance_id(), "test-instance");

  auto stream = client->Open(TinyOpen());
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(RawFrame(1)));
  ASSERT_TRUE(ReadAnswer(**stream).has_result());
  d = client->Describe();
  EXPECT_EQ(d->budgets().kv_reserved_bytes(), options_.default_session_budget_bytes);
  EXPECT_GT(d->budgets().kv_in_use_bytes(), 0);
}

TEST_F(ServicesTest, SessionsCanBeListedAndInspected) {
  Start();
  auto client = ConnectTo(*server_);
  v1::OpenSession open = TinyOpen("h2o", {{"heavy_size", "8"}, {"recent_size", "16"}});
  open.set_label("camera-7");
  auto stream = client->Open(open);
  ASSERT_TRUE(stream.ok());
  for (uint64_t s = 1; s <= 2; ++s) {
    ASSERT_TRUE((*stream)->Send(RawFrame(s)));
    ASSERT_TRUE(ReadAnswer(**stream).has_result());
  }
  absl::StatusOr<v1::ListSessionsResponse> list = client->ListSessions();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->sessions_size(), 1);
  const v1::SessionInfo& info = list->sessions(0);
  EXPECT_EQ(info.session_id(), (*stream)->opened().session_id());
  EXPECT_EQ(info.state(), v1::SessionInfo::STATE_ATTACHED);
  EXPECT_EQ(info.label(), "camera-7");
  EXPECT_EQ(info.policy(), "h2o");
  EXPECT_EQ(info.policy_params().at("heavy_size"), "8");
  EXPECT_EQ(info.frames_processed(), 2u);
  EXPECT_EQ(info.last_processed_sequence(), 2u);
  EXPECT_EQ(info.cache().layer_tokens(0), 8 + 16);
  EXPECT_EQ(client->GetSession("feed").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServicesTest, AResumeGoesToTheInstanceAddressTheSessionWasOpenedOn) {
  options_ = TestServerOptions(&clock_);
  server_ = StartTestServer(options_);
  ASSERT_NE(server_, nullptr);
  // Restart with the advertised address now that the port is known: the port stays free for a
  // moment after the first server is gone.
  const int port = server_->port();
  server_.reset();
  options_.listen_address = absl::StrCat("127.0.0.1:", port);
  options_.sessions.instance_address = absl::StrCat("127.0.0.1:", port);
  server_ = StartTestServer(options_);
  ASSERT_NE(server_, nullptr);
  // The client reaches the replica through a front (a load balancer) that dies after the open.
  TcpForwarder front(server_->port());
  client::ClientOptions client_options;
  client_options.address = absl::StrCat("127.0.0.1:", front.port());
  auto client = client::Client::Connect(client_options);
  ASSERT_TRUE(client.ok());
  client::RunnerOptions runner_options;
  runner_options.open = TinyOpen();
  runner_options.max_resumes = 2;
  runner_options.resume_backoff = absl::Milliseconds(10);
  client::StreamRunner runner(client->get(), runner_options);
  auto source = client::SyntheticSource(6, kFrameHeight, kFrameWidth,
                                        client::SyntheticEncoding::kRaw);
  int answers = 0;
  absl::StatusOr<client::RunSummary> summary = runner.Run(*source, [&](const client::FrameAnswer&) {
    if (++answers == 2) front.Close();  // the stream through the front breaks here
  });
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->opened.instance_address(), options_.sessions.instance_address);
  EXPECT_EQ(summary->resumes, 1);
  EXPECT_EQ(summary->results + summary->lost, 6);
}

}  // namespace
}  // namespace streamkv::testing
