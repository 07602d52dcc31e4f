// Properties every policy must keep on random streams: order, alignment of metadata with K/V,
// budgets, protection, and exact byte accounting.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cache/policies/layerwise_policy.h"
#include "cache/policy_factory.h"

namespace streamkv::cache {
namespace {

constexpr int64_t kLayers = 3;
constexpr int64_t kHeads = 2;
constexpr int64_t kHeadDim = 4;
constexpr int64_t kFrames = 25;
// One camera, two registers, five patches per frame.
const std::vector<TokenRole> kFrameRoles = {TokenRole::kCamera, TokenRole::kRegister,
                                            TokenRole::kRegister, TokenRole::kPatch,
                                            TokenRole::kPatch, TokenRole::kPatch,
                                            TokenRole::kPatch, TokenRole::kPatch};
const int64_t kTokensPerFrame = static_cast<int64_t>(kFrameRoles.size());

struct PolicyCase {
  std::string name;
  PolicyParams params;
};

std::ostream& operator<<(std::ostream& os, const PolicyCase& c) {
  os << c.name;
  for (const auto& [k, v] : c.params) os << " " << k << "=" << v;
  return os;
}

CacheGeometry Geometry() {
  CacheGeometry g;
  g.num_layers = kLayers;
  g.num_heads = kHeads;
  g.head_dim = kHeadDim;
  g.tokens_per_frame = kTokensPerFrame;
  return g;
}

// Every element of a token's key rows holds its id (frame·P_tok + position); values hold −id.
void AppendFrame(KvCache& cache, int64_t frame) {
  at::Tensor roles = at::empty({kTokensPerFrame}, at::kByte);
  for (int64_t i = 0; i < kTokensPerFrame; ++i) roles[i] = static_cast<int64_t>(kFrameRoles[i]);
  const at::Tensor ids = at::arange(frame * kTokensPerFrame, (frame + 1) * kTokensPerFrame)
                             .to(at::kFloat)
                             .view({1, kTokensPerFrame, 1})
                             .expand({kHeads, kTokensPerFrame, kHeadDim})
                             .contiguous();
  for (int64_t layer = 0; layer < kLayers; ++layer) {
    cache.Append(layer, ids, -ids, FrameTokens{frame, roles});
  }
}

// Random attention of kTokensPerFrame queries: each head's scores sum to the number of queries.
at::Tensor RandomScores(const ScoreRequest& request, int64_t length) {
  at::Tensor per_head = at::rand({kHeads, length}).pow(4);
  per_head = per_head / per_head.sum(1, true) * kTokensPerFrame;
  if (request.reduction == kernels::QueryReduction::kMax) per_head = per_head / kTokensPerFrame;
  return request.per_head ? per_head : per_head.mean(0);
}

// Ids per metadata row, read from the keys, and checked against every other per-token field.
std::vector<std::vector<int64_t>> CheckedIds(const KvCache& cache, int64_t layer) {
  const LayerView view = cache.layer(layer);
  const int64_t rows = view.frame.size(0);
  const int64_t length = view.frame.size(1);
  std::vector<std::vector<int64_t>> ids(rows);
  for (int64_t head = 0; head < kHeads; ++head) {
    const at::Tensor key = view.keys[head];
    EXPECT_TRUE(at::equal(key, key.select(1, 0).unsqueeze(1).expand_as(key)));
    EXPECT_TRUE(at::equal(view.values[head], -key));
    const int64_t row = rows == 1 ? 0 : head;
    const at::Tensor from_metadata =
        (view.frame[row].to(at::kLong) * kTokensPerFrame + view.position[row].to(at::kLong));
    const at::Tensor from_keys = key.select(1, 0).to(at::kLong);
    EXPECT_TRUE(at::equal(from_keys, from_metadata)) << "layer " << layer << " head " << head;
    if (head == row) {
      ids[row].assign(from_keys.data_ptr<int64_t>(), from_keys.data_ptr<int64_t>() + length);
      for (int64_t i = 0; i < length; ++i) {
        const int64_t position = view.position[row][i].item<int64_t>();
        EXPECT_EQ(view.role[row][i].item<int64_t>(),
                  static_cast<int64_t>(kFrameRoles[position]));
      }
    }
  }
  return ids;
}

bool Contains(const std::vector<int64_t>& ids, int64_t id) {
  return std::binary_search(ids.begin(), ids.end(), id);
}

class PolicyPropertiesTest : public ::testing::TestWithParam<PolicyCase> {};

TEST_P(PolicyPropertiesTest, RandomStreamKeepsInvariants) {
  const PolicyCase& c = GetParam();
  at::manual_seed(42);
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> created =
      CreatePolicy(c.name, c.params, Geometry());
  ASSERT_TRUE(created.ok()) << created.status();
  EvictionPolicy& policy = **created;
  KvCache cache(CacheOptionsFor(policy, Geometry(), at::kCPU));
  const ScoreRequest request = policy.score_request();
  const int64_t bytes_per_token = Geometry().BytesPerToken(policy.granularity());

  for (int64_t frame = 0; frame < kFrames; ++frame) {
    AppendFrame(cache, frame);
    std::vector<int64_t> before(kLayers);
    std::vector<int64_t> evictable(kLayers);
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      before[layer] = cache.length(layer);
      if (request.needed) {
        policy.ObserveLayer(frame, layer, RandomScores(request, before[layer]), cache);
        evictable[layer] = before[layer] - cache.layer(layer).score.isinf().sum().item<int64_t>();
      }
    }
    const EvictionOutcome outcome = policy.EndFrame(frame, cache);
    SCOPED_TRACE("frame " + std::to_string(frame));
    ASSERT_EQ(outcome.evicted.size(), static_cast<size_t>(kLayers));

    const CacheSnapshot snapshot = cache.Snapshot();
    int64_t total_tokens = 0;
    int64_t allocated = 0;
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      const int64_t length = cache.length(layer);
      EXPECT_EQ(outcome.evicted[layer], before[layer] - length);
      EXPECT_EQ(snapshot.bytes[layer], length * bytes_per_token);
      total_tokens += length;
      allocated += cache.capacity(layer) * bytes_per_token;

      for (const std::vector<int64_t>& ids : CheckedIds(cache, layer)) {
        ASSERT_EQ(static_cast<int64_t>(ids.size()), length);
        EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()) &&
                    std::adjacent_find(ids.begin(), ids.end()) == ids.end())
            << "order not preserved in layer " << layer;
        EXPECT_LT(ids.back(), (frame + 1) * kTokensPerFrame) << "a token from the future";
        if (c.name == "none") {
          EXPECT_EQ(length, (frame + 1) * kTokensPerFrame);
        }
        if (c.name == "none" || c.name == "sliding_window" || c.name == "h2o") {
          EXPECT_EQ(ids.back(), (frame + 1) * kTokensPerFrame - 1) << "newest token evicted";
        }

        if (c.name == "sliding_window" && c.params.at("unit") == "tokens") {
          const int64_t start = std::stoll(c.params.at("start_size"));
          const int64_t recent = std::stoll(c.params.at("recent_size"));
          EXPECT_LE(length, start + recent);
          for (int64_t id = 0; id < std::min(start, before[layer]); ++id) {
            EXPECT_TRUE(Contains(ids, id)) << "sink token " << id;
          }
        }
        if (c.name == "sliding_window" && c.params.at("unit") == "frames") {
          std::set<int64_t> frames;
          for (int64_t id : ids) frames.insert(id / kTokensPerFrame);
          EXPECT_LE(static_cast<int64_t>(frames.size()),
                    std::stoll(c.params.at("start_size")) + std::stoll(c.params.at("recent_size")));
          EXPECT_EQ(length % kTokensPerFrame, 0) << "frames are kept whole";
        }
        if (c.name == "h2o") {
          const bool ratio = c.params.count("hh_ratio") > 0;
          const int64_t limit =
              ratio ? static_cast<int64_t>(std::floor(std::stod(c.params.at("hh_ratio")) *
                                                      before[layer])) +
                          static_cast<int64_t>(std::floor(
                              std::stod(c.params.at("recent_ratio")) * before[layer]))
                    : std::stoll(c.params.at("heavy_size")) +
                          std::stoll(c.params.at("recent_size"));
          EXPECT_LE(length, std::max(limit, int64_t{1}));
        }
        if (c.name == "global_ratio" || c.name == "layerwise") {
          // Protected: the whole first frame and every frame's camera and register tokens.
          for (int64_t f = 0; f <= frame; ++f) {
            for (int64_t p = 0; p < kTokensPerFrame; ++p) {
              if (f == 0 || IsSpecialRole(kFrameRoles[p])) {
                EXPECT_TRUE(Contains(ids, f * kTokensPerFrame + p)) << "protected token lost";
              }
            }
          }
        }
      }
      if (c.name == "global_ratio") {
        const auto drop = static_cast<int64_t>(
            std::floor(std::stod(c.params.at("ratio")) * evictable[layer]));
        EXPECT_EQ(outcome.evicted[layer], drop);
      }
    }
    if (c.name == "layerwise") {
      const auto& layerwise = dynamic_cast<const LayerwisePolicy&>(policy);
      EXPECT_LE(total_tokens, layerwise.budget_tokens() + outcome.protected_overflow);
    }
    EXPECT_EQ(snapshot.total_tokens, total_tokens);
    EXPECT_EQ(snapshot.total_bytes, total_tokens * bytes_per_token);
    EXPECT_EQ(snapshot.allocated_bytes, allocated);
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPolicies, PolicyPropertiesTest,
    ::testing::Values(
        PolicyCase{"none", {}},
        PolicyCase{"sliding_window", {{"start_size", "3"}, {"recent_size", "20"},
                                      {"unit", "tokens"}}},
        PolicyCase{"sliding_window", {{"start_size", "0"}, {"recent_size", "9"},
                                      {"unit", "tokens"}}},
        PolicyCase{"sliding_window", {{"start_size", "1"}, {"recent_size", "3"},
                                      {"unit", "frames"}}},
        PolicyCase{"h2o", {{"heavy_size", "10"}, {"recent_size", "6"}}},
        PolicyCase{"h2o", {{"heavy_size", "7"}, {"recent_size", "12"},
                           {"granularity", "layer"}, {"normalize_by_lifetime", "true"}}},
        PolicyCase{"h2o", {{"hh_ratio", "0.4"}, {"recent_ratio", "0.2"}}},
        PolicyCase{"global_ratio", {{"ratio", "0.3"}}},
        PolicyCase{"global_ratio", {{"ratio", "0.5"}, {"reduction", "max"}}},
        PolicyCase{"global_ratio", {{"ratio", "0.25"}, {"reduction", "mean"}}},
        PolicyCase{"layerwise", {{"budget_frames", "4"}}},
        PolicyCase{"layerwise", {{"budget_ratio", "0.3"}, {"num_frames", "20"}, {"temp", "0.1"}}},
        PolicyCase{"layerwise", {{"budget_tokens", "40"}}},  // below protection: overflows
        PolicyCase{"layerwise", {{"budget_bytes", "20000"}, {"temp", "5"}}}));

}  // namespace
}  // namespace streamkv::cache
