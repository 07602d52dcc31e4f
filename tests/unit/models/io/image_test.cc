#include "models/io/image.h"

#include <png.h>
#include <turbojpeg.h>

#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::models {
namespace {

using ::testing::HasSubstr;

// A smooth RGB test picture, interleaved [H, W, 3].
at::Tensor Picture(int64_t height, int64_t width) {
  const at::Tensor y = at::arange(height).view({height, 1, 1}) * 200 / height;
  const at::Tensor x = at::arange(width).view({1, width, 1}) * 200 / width;
  const at::Tensor c = at::arange(3).view({1, 1, 3}) * 20;
  return (y + x.expand({height, width, 1}) / 2 + c).clamp(0, 255).to(at::kByte).contiguous();
}

std::string EncodePng(const at::Tensor& hwc) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(hwc.size(1));
  image.height = static_cast<png_uint_32>(hwc.size(0));
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&image, nullptr, &size, 0, hwc.data_ptr<uint8_t>(), 0,
                                        nullptr));
  std::string bytes(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&image, bytes.data(), &size, 0, hwc.data_ptr<uint8_t>(),
                                        0, nullptr));
  bytes.resize(size);
  return bytes;
}

std::string EncodeJpeg(const at::Tensor& hwc) {
  tjhandle handle = tjInitCompress();
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(handle, hwc.data_ptr<uint8_t>(), static_cast<int>(hwc.size(1)), 0,
                        static_cast<int>(hwc.size(0)), TJPF_RGB, &buffer, &size, TJSAMP_444, 95,
                        0),
            0);
  std::string bytes(reinterpret_cast<char*>(buffer), size);
  tjFree(buffer);
  tjDestroy(handle);
  return bytes;
}

std::string ErrorOf(absl::string_view bytes, const ImageLimits& limits = {}) {
  return std::string(DecodeImage(bytes, limits).status().message());
}

TEST(ImageTest, DecodesPngExactly) {
  const at::Tensor picture = Picture(21, 34);
  absl::StatusOr<at::Tensor> decoded = DecodeImage(EncodePng(picture));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (at::IntArrayRef{3, 21, 34}));
  EXPECT_TRUE(at::equal(*decoded, picture.permute({2, 0, 1})));
}

TEST(ImageTest, DecodesJpegClosely) {
  const at::Tensor picture = Picture(32, 48);
  absl::StatusOr<at::Tensor> decoded = DecodeImage(EncodeJpeg(picture));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (at::IntArrayRef{3, 32, 48}));
  const at::Tensor error = (decoded->to(at::kInt) - picture.permute({2, 0, 1}).to(at::kInt)).abs();
  EXPECT_LE(error.max().item<int>(), 6);  // quality 95 on a smooth picture
}

TEST(ImageTest, RejectsBadBytesWithAReason) {
  const std::string jpeg = EncodeJpeg(Picture(32, 48));
  const std::string png = EncodePng(Picture(16, 16));
  EXPECT_THAT(ErrorOf(""), HasSubstr("empty"));
  EXPECT_THAT(ErrorOf("GIF89a......"), HasSubstr("neither JPEG nor PNG"));
  EXPECT_THAT(ErrorOf(jpeg.substr(0, jpeg.size() / 2)), HasSubstr("corrupt JPEG"));
  EXPECT_THAT(ErrorOf(jpeg.substr(0, 40)), HasSubstr("corrupt JPEG"));
  EXPECT_THAT(ErrorOf(png.substr(0, png.size() - 20)), HasSubstr("corrupt PNG"));
  std::string garbled = png;
  garbled[20] ^= 0x55;  // inside the IHDR chunk: its CRC no longer matches
  EXPECT_THAT(ErrorOf(garbled), HasSubstr("corrupt PNG"));
}

TEST(ImageTest, EnforcesSizeLimitsBeforeDecoding) {
  const ImageLimits small{/*max_width=*/40, /*max_height=*/40};
  EXPECT_THAT(ErrorOf(EncodeJpeg(Picture(32, 48)), small), HasSubstr("32x48"));
  EXPECT_THAT(ErrorOf(EncodePng(Picture(41, 8)), small), HasSubstr("larger than the limit"));
  EXPECT_TRUE(DecodeImage(EncodePng(Picture(40, 40)), small).ok());
}

TEST(ImageTest, ReadImageFileNamesTheFile) {
  const absl::StatusOr<at::Tensor> missing = ReadImageFile(::testing::TempDir() + "/none.png");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("none.png"));
}

}  // namespace
}  // namespace streamkv::models
