#include "server/tensor_codec.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamkv::server {

// Tensor bytes go on the wire as the host stores them.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

absl::StatusOr<at::Tensor> DecodeFrameImage(const v1::Frame& frame,
                                            const models::ImageLimits& limits) {
  switch (frame.image_case()) {
    case v1::Frame::kEncoded:
      if (frame.encoded().empty()) return absl::InvalidArgumentError("frame.encoded is empty");
      return models::DecodeImage(frame.encoded(), limits);
    case v1::Frame::kRaw: {
      const v1::RawImage& raw = frame.raw();
      const int64_t height = raw.height();
      const int64_t width = raw.width();
      if (height == 0 || width == 0 || height > limits.max_height || width > limits.max_width) {
        return absl::InvalidArgumentError(
            absl::StrCat("frame.raw is ", height, "x", width, "; both sides must be in [1, ",
                         limits.max_height, "] x [1, ", limits.max_width, "]"));
      }
      if (static_cast<int64_t>(raw.rgb().size()) != height * width * 3) {
        return absl::InvalidArgumentError(
            absl::StrCat("frame.raw.rgb has ", raw.rgb().size(), " bytes but ", height, "x",
                         width, " RGB needs ", height * width * 3));
      }
      const at::Tensor hwc =
          at::from_blob(const_cast<char*>(raw.rgb().data()), {height, width, 3}, at::kByte);
      return hwc.permute({2, 0, 1}).clone(at::MemoryFormat::Contiguous);  // owns its pixels
    }
    case v1::Frame::IMAGE_NOT_SET: break;
  }
  return absl::InvalidArgumentError("frame has no image (set encoded or raw)");
}

void EncodeTensor(const std::string& name, const at::Tensor& tensor, v1::TensorDtype dtype,
                  v1::Tensor* out) {
  const at::ScalarType type = dtype == v1::TENSOR_DTYPE_FLOAT16 ? at::kHalf : at::kFloat;
  const at::Tensor host = tensor.detach().to(at::kCPU, type).contiguous();
  out->set_name(name);
  out->set_dtype(dtype);
  for (int64_t d : host.sizes()) out->add_shape(d);
  out->set_data(host.data_ptr(), static_cast<size_t>(host.numel() * host.element_size()));
}

}  // namespace streamkv::server
