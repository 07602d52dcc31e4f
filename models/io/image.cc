#include "models/io/image.h"

#include <png.h>
#include <turbojpeg.h>

#include <fstream>
#include <iterator>
#include <memory>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace streamkv::models {
namespace {

constexpr absl::string_view kJpegSignature("\xff\xd8\xff", 3);
constexpr absl::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);

absl::Status CheckSize(int64_t width, int64_t height, const ImageLimits& limits) {
  if (width <= 0 || height <= 0) return absl::InvalidArgumentError("image has no pixels");
  if (width > limits.max_width || height > limits.max_height) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image is ", height, "x", width, " (height x width), larger than the limit of ",
        limits.max_height, "x", limits.max_width));
  }
  return absl::OkStatus();
}

// Interleaved [H, W, 3] pixels to planar [3, H, W].
at::Tensor Planar(const at::Tensor& interleaved) {
  return interleaved.permute({2, 0, 1}).contiguous();
}

absl::StatusOr<at::Tensor> DecodeJpeg(absl::string_view bytes, const ImageLimits& limits) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  if (handle == nullptr) return absl::InternalError("cannot initialise the JPEG decoder");
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), data, size, &width, &height, &subsampling, &colorspace) !=
          0 ||
      width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt JPEG: ", tjGetErrorStr2(handle.get())));
  }
  if (absl::Status s = CheckSize(width, height, limits); !s.ok()) return s;
  at::Tensor pixels = at::empty({height, width, 3}, at::kByte);
  // Warnings (e.g. a truncated scan) count as errors too: a partly decoded frame is not a frame.
  if (tjDecompress2(handle.get(), data, size, pixels.data_ptr<uint8_t>(), width, 0, height,
                    TJPF_RGB, TJFLAG_ACCURATEDCT) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt JPEG: ", tjGetErrorStr2(handle.get())));
  }
  return Planar(pixels);
}

absl::StatusOr<at::Tensor> DecodePng(absl::string_view bytes, const ImageLimits& limits) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  // png_image_free releases libpng's state on every path out of this function.
  std::unique_ptr<png_image, void (*)(png_imagep)> guard(&image, png_image_free);
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: ", image.message));
  }
  if (absl::Status s = CheckSize(image.width, image.height, limits); !s.ok()) return s;
  image.format = PNG_FORMAT_RGB;
  at::Tensor pixels = at::empty({static_cast<int64_t>(image.height),
                                 static_cast<int64_t>(image.width), 3},
                                at::kByte);
  if (!png_image_finish_read(&image, nullptr, pixels.data_ptr<uint8_t>(), 0, nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: ", image.message));
  }
  return Planar(pixels);
}

}  // namespace

absl::StatusOr<at::Tensor> DecodeImage(absl::string_view bytes, const ImageLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  if (absl::StartsWith(bytes, kJpegSignature)) return DecodeJpeg(bytes, limits);
  if (absl::StartsWith(bytes, kPngSignature)) return DecodePng(bytes, limits);
  return absl::InvalidArgumentError("image is neither JPEG nor PNG");
}

absl::StatusOr<at::Tensor> ReadImageFile(const std::string& path, const ImageLimits& limits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("image ", path, ": cannot open"));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<at::Tensor> image = DecodeImage(bytes, limits);
  if (!image.ok()) {
    return absl::Status(image.status().code(),
                        absl::StrCat("image ", path, ": ", image.status().message()));
  }
  return image;
}

}  // namespace streamkv::models
