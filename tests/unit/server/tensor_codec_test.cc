#include "server/tensor_codec.h"

#include <turbojpeg.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace streamkv::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A grey JPEG of height × width.
std::string Jpeg(int height, int width) {
  const std::vector<unsigned char> rgb(static_cast<size_t>(height * width * 3), 128);
  tjhandle handle = tjInitCompress();
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(handle, rgb.data(), width, 0, height, TJPF_RGB, &buffer, &size,
                        TJSAMP_444, 90, 0),
            0);
  std::string jpeg(reinterpret_cast<const char*>(buffer), size);
  tjFree(buffer);
  tjDestroy(handle);
  return jpeg;
}

v1::Frame RawFrame(uint32_t height, uint32_t width, std::string rgb) {
  v1::Frame frame;
  frame.mutable_raw()->set_height(height);
  frame.mutable_raw()->set_width(width);
  frame.mutable_raw()->set_rgb(std::move(rgb));
  return frame;
}

v1::Frame EncodedFrame(std::string bytes) {
  v1::Frame frame;
  frame.set_encoded(std::move(bytes));
  return frame;
}

// The InvalidArgument message `frame` is refused with.
std::string Refusal(const v1::Frame& frame, const models::ImageLimits& limits = {}) {
  absl::StatusOr<at::Tensor> image = DecodeFrameImage(frame, limits);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  return std::string(image.status().message());
}

TEST(DecodeFrameImageTest, RawPixelsBecomeChannelsFirst) {
  constexpr int kHeight = 2, kWidth = 3;
  std::string rgb(kHeight * kWidth * 3, '\0');
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<char>(i);
  absl::StatusOr<at::Tensor> image;
  {
    const v1::Frame frame = RawFrame(kHeight, kWidth, rgb);
    image = DecodeFrameImage(frame, {});
  }  // the tensor owns its pixels
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->scalar_type(), at::kByte);
  EXPECT_THAT(image->sizes(), ElementsAre(3, kHeight, kWidth));
  EXPECT_TRUE(image->is_contiguous());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < kHeight; ++y) {
      for (int x = 0; x < kWidth; ++x) {
        EXPECT_EQ((*image)[c][y][x].item<uint8_t>(), (y * kWidth + x) * 3 + c);
      }
    }
  }
}

TEST(DecodeFrameImageTest, RawBufferOfTheWrongLengthIsRefused) {
  EXPECT_THAT(Refusal(RawFrame(2, 3, std::string(17, 'x'))),
              HasSubstr("frame.raw.rgb has 17 bytes but 2x3 RGB needs 18"));
}

TEST(DecodeFrameImageTest, RawImageWithoutPixelsIsRefused) {
  EXPECT_THAT(Refusal(RawFrame(0, 3, "")), HasSubstr("frame.raw is 0x3"));
  EXPECT_THAT(Refusal(RawFrame(3, 0, "")), HasSubstr("frame.raw is 3x0"));
}

TEST(DecodeFrameImageTest, RawImageBeyondTheLimitsIsRefused) {
  models::ImageLimits limits;
  limits.max_height = 4;
  limits.max_width = 4;
  EXPECT_THAT(Refusal(RawFrame(5, 2, std::string(30, 'x')), limits),
              HasSubstr("frame.raw is 5x2; both sides must be in [1, 4] x [1, 4]"));
  EXPECT_THAT(Refusal(RawFrame(2, 5, std::string(30, 'x')), limits), HasSubstr("2x5"));
}

TEST(DecodeFrameImageTest, FrameWithoutImageIsRefused) {
  EXPECT_THAT(Refusal(v1::Frame()), HasSubstr("frame has no image"));
}

TEST(DecodeFrameImageTest, EmptyEncodedBytesAreRefused) {
  EXPECT_THAT(Refusal(EncodedFrame("")), HasSubstr("frame.encoded is empty"));
}

TEST(DecodeFrameImageTest, CorruptOrUnknownEncodedBytesAreRefused) {
  EXPECT_THAT(Refusal(EncodedFrame("GIF89a, not supported")), HasSubstr("neither JPEG nor PNG"));
  EXPECT_THAT(Refusal(EncodedFrame(std::string("\xff\xd8\xff\x00garbage", 11))),
              HasSubstr("corrupt JPEG"));
  EXPECT_THAT(Refusal(EncodedFrame(std::string("\x89PNG\r\n\x1a\ngarbage"))),
              HasSubstr("corrupt PNG"));
}

TEST(DecodeFrameImageTest, DecodesAJpegToItsSize) {
  absl::StatusOr<at::Tensor> image = DecodeFrameImage(EncodedFrame(Jpeg(6, 10)), {});
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->scalar_type(), at::kByte);
  EXPECT_THAT(image->sizes(), ElementsAre(3, 6, 10));
}

TEST(DecodeFrameImageTest, JpegBeyondTheLimitsIsRefused) {
  models::ImageLimits limits;
  limits.max_height = 4;
  limits.max_width = 100;
  EXPECT_THAT(Refusal(EncodedFrame(Jpeg(6, 10)), limits), HasSubstr("larger than the limit"));
}

TEST(EncodeTensorTest, Float32BytesAreTheValues) {
  const at::Tensor tensor = at::tensor({1.5f, -2.0f, 0.25f, 3.0f, 0.0f, -7.5f}).reshape({2, 3});
  v1::Tensor out;
  EncodeTensor("depth", tensor, v1::TENSOR_DTYPE_FLOAT32, &out);
  EXPECT_EQ(out.name(), "depth");
  EXPECT_EQ(out.dtype(), v1::TENSOR_DTYPE_FLOAT32);
  EXPECT_THAT(out.shape(), ElementsAre(2, 3));
  ASSERT_EQ(out.data().size(), 6 * sizeof(float));
  std::vector<float> values(6);
  std::memcpy(values.data(), out.data().data(), out.data().size());
  EXPECT_THAT(values, ElementsAre(1.5f, -2.0f, 0.25f, 3.0f, 0.0f, -7.5f));
}

TEST(EncodeTensorTest, Float16BytesAreTheHalfPrecisionValues) {
  const at::Tensor tensor = at::tensor({1.5, -2.0, 0.25, 65504.0}, at::kDouble);
  v1::Tensor out;
  EncodeTensor("conf", tensor, v1::TENSOR_DTYPE_FLOAT16, &out);
  EXPECT_EQ(out.dtype(), v1::TENSOR_DTYPE_FLOAT16);
  EXPECT_THAT(out.shape(), ElementsAre(4));
  ASSERT_EQ(out.data().size(), 4 * sizeof(uint16_t));
  std::vector<uint16_t> bits(4);
  std::memcpy(bits.data(), out.data().data(), out.data().size());
  EXPECT_THAT(bits, ElementsAre(0x3E00, 0xC000, 0x3400, 0x7BFF));
}

TEST(EncodeTensorTest, NonContiguousInputIsWrittenInRowMajorOrder) {
  const at::Tensor tensor = at::arange(6, at::kFloat).reshape({2, 3}).t();  // [3, 2]
  ASSERT_FALSE(tensor.is_contiguous());
  v1::Tensor out;
  EncodeTensor("t", tensor, v1::TENSOR_DTYPE_FLOAT32, &out);
  EXPECT_THAT(out.shape(), ElementsAre(3, 2));
  std::vector<float> values(6);
  ASSERT_EQ(out.data().size(), values.size() * sizeof(float));
  std::memcpy(values.data(), out.data().data(), out.data().size());
  EXPECT_THAT(values, ElementsAre(0, 3, 1, 4, 2, 5));
}

}  // namespace
}  // namespace streamkv::server
