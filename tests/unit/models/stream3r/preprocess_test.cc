#include "models/stream3r/preprocess.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::models::stream3r {
namespace {

TEST(PreprocessTest, GeometryFollowsVggtCropMode) {
  // 640×480 → 518 × round(480·518/640/14)·14 = 518 × round(27.75)·14 = 518 × 392.
  PreprocessGeometry g = PreprocessGeometryFor(480, 640, 518, 14);
  EXPECT_EQ(g.resized_height, 392);
  EXPECT_EQ(g.height, 392);
  EXPECT_EQ(g.crop_top, 0);
  // Portrait 1280×720 (H×W): round(1280·518/720/14) = round(65.78) = 66 → 924 rows, cropped to
  // the middle 518: top = (924 − 518) / 2 = 203.
  g = PreprocessGeometryFor(1280, 720, 518, 14);
  EXPECT_EQ(g.resized_height, 924);
  EXPECT_EQ(g.height, 518);
  EXPECT_EQ(g.crop_top, 203);
  // Halves round to even: 7·518/518/14 = 0.5 → 0 patches → rejected; 21 rows → 1.5 → 2.
  EXPECT_THROW(PreprocessGeometryFor(7, 518, 518, 14), c10::Error);
  EXPECT_EQ(PreprocessGeometryFor(21, 518, 518, 14).resized_height, 28);
}

TEST(PreprocessTest, ResizesCropsAndScalesToUnitRange) {
  at::Tensor image = at::full({3, 1280, 720}, 255, at::kByte);
  image.narrow(1, 0, 640).fill_(0);  // top half black, bottom half white
  const at::Tensor x = PreprocessFrame(image, 518, 14);
  EXPECT_EQ(x.sizes(), (at::IntArrayRef{3, 518, 518}));
  EXPECT_EQ(x.scalar_type(), at::kFloat);
  EXPECT_GE(x.min().item<float>(), 0.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  // The crop keeps the middle: black rows above the centre, white below, a blend at the edge.
  EXPECT_NEAR(x[0][0][100].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(x[0][517][100].item<float>(), 1.0f, 1e-6);
  EXPECT_NEAR(x[1][258][7].item<float>() + x[1][259][7].item<float>(), 1.0f, 0.2f);
}

TEST(PreprocessTest, FramesAlreadyAtSizeAreUnchanged) {
  at::manual_seed(0);
  const at::Tensor image = at::rand({3, 28, 518});
  EXPECT_TRUE(at::equal(PreprocessFrame(image, 518, 14), image));
}

TEST(PreprocessTest, RejectsMalformedFrames) {
  EXPECT_THROW(PreprocessFrame(at::zeros({4, 28, 28}), 518, 14), c10::Error);
  EXPECT_THROW(PreprocessFrame(at::zeros({3, 28, 28}, at::kDouble), 518, 14), c10::Error);
  EXPECT_THROW(PreprocessFrame(at::zeros({3, 0, 28}, at::kByte), 518, 14), c10::Error);
}

}  // namespace
}  // namespace streamkv::models::stream3r
