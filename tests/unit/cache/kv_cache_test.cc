#include "cache/kv_cache.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::cache {
namespace {

using ::testing::ElementsAre;

CacheGeometry SmallGeometry() {
  CacheGeometry g;
  g.num_layers = 2;
  g.num_heads = 3;
  g.head_dim = 4;
  g.tokens_per_frame = 5;
  return g;
}

// Keys hold 1000·head + id and values −(1000·head + id) in every element of a token's rows.
at::Tensor TokenRows(int64_t heads, int64_t head_dim, int64_t first_id, int64_t count, int sign) {
  at::Tensor ids = at::arange(first_id, first_id + count).unsqueeze(0) +
                   1000 * at::arange(heads).unsqueeze(1);
  return (sign * ids).unsqueeze(-1).expand({heads, count, head_dim}).to(at::kFloat).contiguous();
}

FrameTokens Frame(int64_t index, int64_t count) {
  at::Tensor roles = at::full({count}, static_cast<int64_t>(TokenRole::kPatch), at::kByte);
  roles[0] = static_cast<int64_t>(TokenRole::kCamera);
  return FrameTokens{index, roles};
}

void AppendFrame(KvCache& cache, int64_t layer, int64_t frame, int64_t count) {
  const CacheGeometry& g = cache.options().geometry;
  const int64_t first = frame * 100;
  cache.Append(layer, TokenRows(g.num_heads, g.head_dim, first, count, 1),
               TokenRows(g.num_heads, g.head_dim, first, count, -1), Frame(frame, count));
}

std::vector<int64_t> KeyIds(const KvCache& cache, int64_t layer, int64_t head) {
  const at::Tensor keys = cache.layer(layer).keys[head].select(1, 0) - 1000 * head;
  const at::Tensor ids = keys.to(at::kLong);
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

TEST(KvCacheTest, AppendWritesKeysValuesAndMetadata) {
  KvCache cache({SmallGeometry()});
  AppendFrame(cache, 0, /*frame=*/0, 3);
  AppendFrame(cache, 0, /*frame=*/1, 2);
  EXPECT_EQ(cache.length(0), 5);
  EXPECT_EQ(cache.length(1), 0);
  EXPECT_THAT(KeyIds(cache, 0, 2), ElementsAre(0, 1, 2, 100, 101));
  const LayerView view = cache.layer(0);
  EXPECT_TRUE(at::equal(view.values, -view.keys));
  EXPECT_TRUE(at::equal(view.frame, at::tensor({0, 0, 0, 1, 1}, at::kInt).view({1, 5})));
  EXPECT_TRUE(at::equal(view.position, at::tensor({0, 1, 2, 0, 1}, at::kInt).view({1, 5})));
  EXPECT_TRUE(at::equal(view.role, at::tensor({0, 2, 2, 0, 2}, at::kByte).view({1, 5})));
  EXPECT_TRUE(at::equal(view.score, at::zeros({1, 5})));
  EXPECT_TRUE(at::equal(view.exposure, at::zeros({1, 5}, at::kInt)));
}

TEST(KvCacheTest, AFrameAppendedInPartsContinuesItsPositions) {
  KvCache cache({SmallGeometry()});
  AppendFrame(cache, 1, /*frame=*/4, 2);
  AppendFrame(cache, 1, /*frame=*/4, 3);
  EXPECT_TRUE(at::equal(cache.layer(1).position, at::arange(5, at::kInt).view({1, 5})));
}

TEST(KvCacheTest, GrowthIsGeometricAndKeepsContents) {
  KvCacheOptions options{SmallGeometry()};
  options.growth_factor = 2.0;
  KvCache cache(options);
  std::vector<int64_t> capacities;
  for (int64_t frame = 0; frame < 20; ++frame) {
    AppendFrame(cache, 0, frame, 5);
    if (capacities.empty() || capacities.back() != cache.capacity(0)) {
      capacities.push_back(cache.capacity(0));
    }
  }
  // 100 tokens in 5-token appends reallocate only when full, doubling: 5, 10, 20, 40, 80, 160.
  EXPECT_THAT(capacities, ElementsAre(5, 10, 20, 40, 80, 160));
  std::vector<int64_t> expected;
  for (int64_t frame = 0; frame < 20; ++frame) {
    for (int64_t i = 0; i < 5; ++i) expected.push_back(frame * 100 + i);
  }
  EXPECT_EQ(KeyIds(cache, 0, 1), expected);
}

TEST(KvCacheTest, ReservedCapacityAvoidsReallocation) {
  KvCacheOptions options{SmallGeometry()};
  options.initial_capacity = 12;
  KvCache cache(options);
  AppendFrame(cache, 0, 0, 4);
  const void* storage = cache.layer(0).keys.data_ptr();
  for (int64_t frame = 1; frame < 3; ++frame) AppendFrame(cache, 0, frame, 4);
  EXPECT_EQ(cache.capacity(0), 12);
  EXPECT_EQ(cache.layer(0).keys.data_ptr(), storage);
}

TEST(KvCacheTest, CompactKeepsListedTokensInOrderWithTheirMetadata) {
  KvCache cache({SmallGeometry()});
  for (int64_t frame = 0; frame < 3; ++frame) AppendFrame(cache, 0, frame, 3);
  cache.layer(0).score.copy_(at::arange(9, at::kFloat).view({1, 9}));
  cache.Compact(0, at::tensor({1, 3, 4, 8}, at::kLong));
  EXPECT_EQ(cache.length(0), 4);
  for (int64_t head = 0; head < 3; ++head) {
    EXPECT_THAT(KeyIds(cache, 0, head), ElementsAre(1, 100, 101, 202));
  }
  const LayerView view = cache.layer(0);
  EXPECT_TRUE(at::equal(view.values, -view.keys));
  EXPECT_TRUE(at::equal(view.frame, at::tensor({0, 1, 1, 2}, at::kInt).view({1, 4})));
  EXPECT_TRUE(at::equal(view.position, at::tensor({1, 0, 1, 2}, at::kInt).view({1, 4})));
  EXPECT_TRUE(at::equal(view.score, at::tensor({1.f, 3.f, 4.f, 8.f}).view({1, 4})));
  // Appending after a compaction lands right after the survivors.
  AppendFrame(cache, 0, 3, 2);
  EXPECT_THAT(KeyIds(cache, 0, 0), ElementsAre(1, 100, 101, 202, 300, 301));
}

TEST(KvCacheTest, PerHeadCompactionKeepsDifferentTokensPerHead) {
  KvCacheOptions options{SmallGeometry()};
  options.granularity = Granularity::kHead;
  KvCache cache(options);
  AppendFrame(cache, 1, 0, 4);
  EXPECT_EQ(cache.metadata_rows(), 3);
  cache.Compact(1, at::tensor({0, 1, 1, 3, 2, 3}, at::kLong).view({3, 2}));
  EXPECT_THAT(KeyIds(cache, 1, 0), ElementsAre(0, 1));
  EXPECT_THAT(KeyIds(cache, 1, 1), ElementsAre(1, 3));
  EXPECT_THAT(KeyIds(cache, 1, 2), ElementsAre(2, 3));
  EXPECT_TRUE(at::equal(cache.layer(1).position,
                        at::tensor({0, 1, 1, 3, 2, 3}, at::kInt).view({3, 2})));
}

TEST(KvCacheTest, PerHeadKeepListsNeedAPerHeadCache) {
  KvCache cache({SmallGeometry()});
  AppendFrame(cache, 0, 0, 4);
  EXPECT_THROW(cache.Compact(0, at::zeros({3, 1}, at::kLong)), c10::Error);
}

TEST(KvCacheTest, ByteAccountingIsExact) {
  for (Granularity granularity : {Granularity::kLayer, Granularity::kHead}) {
    KvCacheOptions options{SmallGeometry()};
    options.granularity = granularity;
    KvCache cache(options);
    AppendFrame(cache, 0, 0, 5);
    AppendFrame(cache, 0, 1, 5);
    AppendFrame(cache, 1, 0, 5);
    const at::Tensor keep = at::arange(7, at::kLong);
    cache.Compact(0, granularity == Granularity::kHead ? keep.expand({3, 7}).contiguous() : keep);
    const CacheSnapshot snapshot = cache.Snapshot();
    const int64_t rows = cache.metadata_rows();
    // K and V: 2·H·D float32 per token; metadata: 17 bytes per token per metadata row.
    const int64_t per_token = 2 * 3 * 4 * 4 + rows * 17;
    EXPECT_THAT(snapshot.tokens, ElementsAre(7, 5));
    EXPECT_THAT(snapshot.bytes, ElementsAre(7 * per_token, 5 * per_token));
    EXPECT_EQ(snapshot.total_tokens, 12);
    EXPECT_EQ(snapshot.total_bytes, 12 * per_token);
    EXPECT_EQ(cache.options().geometry.BytesPerToken(granularity), per_token);
    // Everything the layers allocated, measured from the tensors themselves.
    int64_t held = 0;
    for (int64_t layer = 0; layer < 2; ++layer) {
      held += cache.capacity(layer) * per_token;
    }
    EXPECT_EQ(snapshot.allocated_bytes, held);
  }
}

TEST(KvCacheTest, RejectsMalformedAppends) {
  KvCache cache({SmallGeometry()});
  const at::Tensor wrong_heads = at::zeros({2, 3, 4});
  EXPECT_THROW(cache.Append(0, wrong_heads, wrong_heads, Frame(0, 3)), c10::Error);
  const at::Tensor keys = at::zeros({3, 3, 4});
  EXPECT_THROW(cache.Append(0, keys, at::zeros({3, 2, 4}), Frame(0, 3)), c10::Error);
  EXPECT_THROW(cache.Append(0, keys, keys, Frame(0, 2)), c10::Error);
  EXPECT_THROW(cache.Append(5, keys, keys, Frame(0, 3)), c10::Error);
  cache.Append(0, keys, keys, Frame(4, 3));
  EXPECT_THROW(cache.Append(0, keys, keys, Frame(3, 3)), c10::Error);
  EXPECT_EQ(cache.length(0), 3);
}

}  // namespace
}  // namespace streamkv::cache
