// Frames off the wire into tensors, and output tensors onto the wire.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "models/io/image.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

// The frame's image as uint8 RGB [3, H, W]: JPEG/PNG decoded with libjpeg-turbo/libpng, or raw
// pixels checked against their shape. InvalidArgument naming what is wrong: no image, empty
// bytes, corrupt or unsupported data, a size beyond `limits`, a raw buffer of the wrong length.
absl::StatusOr<at::Tensor> DecodeFrameImage(const v1::Frame& frame,
                                            const models::ImageLimits& limits);

// `tensor` (any device, floating point) as `dtype` little-endian bytes with its shape.
void EncodeTensor(const std::string& name, const at::Tensor& tensor, v1::TensorDtype dtype,
                  v1::Tensor* out);

}  // namespace streamkv::server
