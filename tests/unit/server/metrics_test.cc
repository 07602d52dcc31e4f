#include "server/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "tests/unit/server/test_util.h"

namespace streamkv::server {
namespace {

// The series of streamkv_cache_<what>{cache,layer,model="m",policy="none"}.
std::string LayerSeries(const std::string& what, const std::string& cache, int layer) {
  return absl::StrCat("streamkv_cache_", what, "{cache=\"", cache, "\",layer=\"", layer,
                      "\",model=\"m\",policy=\"none\"}");
}

std::string EvictedSeries(int layer) {
  return absl::StrCat("streamkv_cache_evicted_tokens_total{layer=\"", layer,
                      "\",model=\"m\",policy=\"none\"}");
}

class SessionCacheUsageTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerMetrics::SessionCacheUsage> NewUsage() {
    return metrics_.NewSessionCacheUsage("m", "none", {"backbone", "camera_trunk"});
  }
  std::optional<double> Metric(const std::string& series) const {
    return SeriesValue(*metrics_.registry(), series);
  }

  ServerMetrics metrics_{TestBuild(), {"m"}, {"none"}};
};

TEST_F(SessionCacheUsageTest, UpdatePublishesPerLayerTokensAndBytes) {
  auto usage = NewUsage();
  usage->Update({{{10, 20}, {100, 200}, 1000}, {{5}, {50}, 500}}, {0, 0});
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 0)), 10);
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 1)), 20);
  EXPECT_EQ(Metric(LayerSeries("tokens", "camera_trunk", 0)), 5);
  EXPECT_EQ(Metric(LayerSeries("bytes", "backbone", 0)), 100);
  EXPECT_EQ(Metric(LayerSeries("bytes", "backbone", 1)), 200);
  EXPECT_EQ(Metric(LayerSeries("bytes", "camera_trunk", 0)), 50);
  EXPECT_EQ(Metric("streamkv_kv_cache_used_bytes"), 350);
  EXPECT_EQ(Metric("streamkv_kv_cache_allocated_bytes"), 1500);
}

TEST_F(SessionCacheUsageTest, UpdateReplacesThePreviousCounts) {
  auto usage = NewUsage();
  usage->Update({{{10, 20}, {100, 200}, 1000}, {{5}, {50}, 500}}, {});
  usage->Update({{{4, 30}, {40, 300}, 1000}, {{}, {}, 0}}, {});
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 0)), 4);
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 1)), 30);
  EXPECT_EQ(Metric(LayerSeries("tokens", "camera_trunk", 0)), 0);
  EXPECT_EQ(Metric(LayerSeries("bytes", "camera_trunk", 0)), 0);
  EXPECT_EQ(Metric("streamkv_kv_cache_used_bytes"), 340);
  EXPECT_EQ(Metric("streamkv_kv_cache_allocated_bytes"), 1000);
}

TEST_F(SessionCacheUsageTest, EvictedTokensAccumulatePerBackboneLayer) {
  auto usage = NewUsage();
  usage->Update({{{10, 20}, {100, 200}, 0}}, {0, 3});
  usage->Update({{{10, 20}, {100, 200}, 0}}, {2, 3});
  EXPECT_EQ(Metric(EvictedSeries(0)), 2);
  EXPECT_EQ(Metric(EvictedSeries(1)), 6);
}

TEST_F(SessionCacheUsageTest, SessionsAddUpAndDestructionTakesEachOneBack) {
  auto first = NewUsage();
  auto second = NewUsage();
  first->Update({{{10}, {100}, 1000}, {{5}, {50}, 500}}, {});
  second->Update({{{7}, {70}, 700}}, {});
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 0)), 17);
  EXPECT_EQ(Metric("streamkv_kv_cache_used_bytes"), 220);
  EXPECT_EQ(Metric("streamkv_kv_cache_allocated_bytes"), 2200);

  first.reset();
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 0)), 7);
  EXPECT_EQ(Metric(LayerSeries("tokens", "camera_trunk", 0)), 0);
  EXPECT_EQ(Metric("streamkv_kv_cache_used_bytes"), 70);

  second.reset();
  EXPECT_EQ(Metric(LayerSeries("tokens", "backbone", 0)), 0);
  EXPECT_EQ(Metric(LayerSeries("bytes", "backbone", 0)), 0);
  EXPECT_EQ(Metric("streamkv_kv_cache_used_bytes"), 0);
  EXPECT_EQ(Metric("streamkv_kv_cache_allocated_bytes"), 0);
}

TEST(ServerMetricsTest, LabelledSeriesExistBeforeAnythingHappens) {
  const ServerMetrics metrics(TestBuild(), {"m"}, {"none"});
  const prometheus::Registry& registry = *metrics.registry();
  EXPECT_EQ(SeriesValue(registry, R"(streamkv_build_info{device="cpu",torch_version="t",)"
                                  R"(version="v"})"),
            1);
  EXPECT_EQ(SeriesValue(registry, R"(streamkv_sessions_opened_total{model="m",policy="none"})"),
            0);
  EXPECT_EQ(SeriesValue(registry, R"(streamkv_frames_failed_total{model="m",reason="internal"})"),
            0);
  EXPECT_EQ(SeriesValue(registry, R"(streamkv_sessions_reaped_total{reason="expired"})"), 0);
  EXPECT_EQ(SeriesValue(registry, R"(streamkv_sessions{state="ending"})"), 0);
}

TEST(ServerMetricsTest, EverySeriesPassesPromtool) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not installed";
  }
  ServerMetrics metrics(TestBuild(), {"m"}, {"none"});
  auto usage = metrics.NewSessionCacheUsage("m", "none", {"backbone"});
  usage->Update({{{10}, {100}, 1000}}, {3});
  metrics.SessionOpened("m", "none");
  metrics.SessionRejected("budget");
  metrics.SessionResumed();
  metrics.SessionReaped("idle");
  metrics.SessionClosed("end");
  metrics.SetSessions(1, 2, 3);
  metrics.ProtectedOverflow("m", "none");
  metrics.FrameProcessed("m", "none");
  metrics.FrameFailed("m", FrameFailure::kSequence);
  metrics.ObserveStage("m", Stage::kModel, 0.02);
  metrics.AddQueuedFrames(2);
  metrics.SetKvBudget(1 << 20, 1 << 10);
  metrics.SetGpuMemory(1, 2, 3);

  const std::string base = absl::StrCat(::testing::TempDir(), "streamkv_metrics_", getpid());
  {
    std::ofstream out(base + ".txt");
    out << prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
  }
  const int rc = std::system(
      absl::StrCat("promtool check metrics < ", base, ".txt > ", base, ".out 2>&1").c_str());
  std::ifstream report(base + ".out");
  const std::string problems{std::istreambuf_iterator<char>(report), {}};
  EXPECT_EQ(rc, 0) << problems;
  EXPECT_EQ(problems, "");
  std::remove((base + ".txt").c_str());
  std::remove((base + ".out").c_str());
}

}  // namespace
}  // namespace streamkv::server
