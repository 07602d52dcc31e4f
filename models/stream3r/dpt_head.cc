#include "models/stream3r/dpt_head.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <ATen/ATen.h>

namespace streamkv::models::stream3r {
namespace {

constexpr int64_t kPyramidLevels = 4;
constexpr int64_t kHeadFeatures2 = 32;  // output_conv2's hidden width (fixed upstream)
constexpr double kLayerNormEps = 1e-5;  // nn.LayerNorm default
constexpr double kPosEmbedRatio = 0.1;
constexpr double kPosEmbedOmega0 = 100.0;

bool IsKnownActivation(const std::string& a) {
  return a == "exp" || a == "inv_log" || a == "linear" || a == "relu" || a == "sigmoid" ||
         a == "norm_exp";
}

bool IsKnownConfActivation(const std::string& a) {
  return a == "expp1" || a == "expp0" || a == "sigmoid";
}

void ValidateConfig(const DptHeadConfig& cfg) {
  TORCH_CHECK(cfg.dim_in > 0 && cfg.patch_size > 0 && cfg.features > 0 && cfg.down_ratio > 0 &&
                  cfg.frames_chunk_size > 0,
              "DptHead: dim_in, patch_size, features, down_ratio and frames_chunk_size must be "
              "positive");
  TORCH_CHECK(static_cast<int64_t>(cfg.out_channels.size()) == kPyramidLevels,
              "DptHead: out_channels needs ", kPyramidLevels, " entries, got ",
              cfg.out_channels.size());
  TORCH_CHECK(static_cast<int64_t>(cfg.intermediate_layer_idx.size()) == kPyramidLevels,
              "DptHead: intermediate_layer_idx needs ", kPyramidLevels, " entries, got ",
              cfg.intermediate_layer_idx.size());
  for (const int64_t oc : cfg.out_channels) {
    TORCH_CHECK(oc > 0, "DptHead: out_channels entries must be positive, got ", oc);
    TORCH_CHECK(!cfg.pos_embed || oc % 4 == 0,
                "DptHead: pos_embed needs out_channels divisible by 4, got ", oc);
  }
  const int64_t final_channels = cfg.feature_only ? cfg.features : cfg.features / 2;
  TORCH_CHECK(final_channels > 0 && (!cfg.pos_embed || final_channels % 4 == 0),
              "DptHead: pos_embed needs output_conv1's width (", final_channels,
              ") divisible by 4");
  if (!cfg.feature_only) {
    TORCH_CHECK(cfg.output_dim >= 2,
                "DptHead: output_dim counts the prediction plus confidence, needs >= 2, got ",
                cfg.output_dim);
    TORCH_CHECK(IsKnownActivation(cfg.activation), "DptHead: unknown activation '", cfg.activation,
                "'");
    TORCH_CHECK(IsKnownConfActivation(cfg.conf_activation), "DptHead: unknown conf_activation '",
                cfg.conf_activation, "'");
  }
}

at::Tensor Conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  int64_t stride, int64_t padding) {
  const int64_t s[2] = {stride, stride};
  const int64_t p[2] = {padding, padding};
  return at::conv2d(x, weight, bias, at::IntArrayRef(s), at::IntArrayRef(p));
}

at::Tensor ConvTranspose2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           int64_t stride) {
  const int64_t s[2] = {stride, stride};
  const int64_t p[2] = {0, 0};
  return at::conv_transpose2d(x, weight, bias, at::IntArrayRef(s), at::IntArrayRef(p));
}

// Upstream interpolates bilinearly with align_corners=True everywhere in this head.
at::Tensor ResizeBilinear(const at::Tensor& x, int64_t height, int64_t width) {
  const int64_t size[2] = {height, width};
  return at::upsample_bilinear2d(x, at::IntArrayRef(size), /*align_corners=*/true);
}

at::Tensor ActivatePrediction(const at::Tensor& x, const std::string& activation) {
  if (activation == "exp") return at::exp(x);
  if (activation == "inv_log") return at::sign(x) * at::expm1(at::abs(x));
  if (activation == "linear") return x;
  if (activation == "relu") return at::relu(x);
  if (activation == "sigmoid") return at::sigmoid(x);
  // norm_exp: direction times expm1(norm).
  const at::Tensor d = at::clamp_min(at::sqrt((x * x).sum(-1, /*keepdim=*/true)), 1e-8);
  return x / d * at::expm1(d);
}

at::Tensor ActivateConfidence(const at::Tensor& x, const std::string& conf_activation) {
  if (conf_activation == "expp1") return 1 + at::exp(x);
  if (conf_activation == "expp0") return at::exp(x);
  return at::sigmoid(x);
}

}  // namespace

DptHeadConfig DepthHeadConfig(int64_t embed_dim) {
  DptHeadConfig cfg;
  cfg.dim_in = 2 * embed_dim;
  cfg.output_dim = 2;
  cfg.activation = "exp";
  cfg.conf_activation = "expp1";
  return cfg;
}

DptHeadConfig PointHeadConfig(int64_t embed_dim) {
  DptHeadConfig cfg;
  cfg.dim_in = 2 * embed_dim;
  cfg.output_dim = 4;
  cfg.activation = "inv_log";
  cfg.conf_activation = "expp1";
  return cfg;
}

at::Tensor DptUvPositionEmbedding(int64_t height, int64_t width, int64_t channels,
                                  double aspect_ratio) {
  TORCH_CHECK(height > 0 && width > 0, "DptUvPositionEmbedding: empty ", height, "x", width,
              " grid");
  TORCH_CHECK(channels > 0 && channels % 4 == 0,
              "DptUvPositionEmbedding: channels must be a positive multiple of 4, got ", channels);
  // Grid in float32 (upstream builds it in the feature dtype), frequencies and sin/cos in double,
  // result rounded to float32.
  const double diag = std::sqrt(aspect_ratio * aspect_ratio + 1.0);
  const double span_x = aspect_ratio / diag;
  const double span_y = 1.0 / diag;
  const double half_w = span_x * static_cast<double>(width - 1) / static_cast<double>(width);
  const double half_h = span_y * static_cast<double>(height - 1) / static_cast<double>(height);
  const at::Tensor u = at::linspace(-half_w, half_w, width, at::kFloat).to(at::kDouble);   // [w]
  const at::Tensor v = at::linspace(-half_h, half_h, height, at::kFloat).to(at::kDouble);  // [h]

  const int64_t quarter = channels / 4;
  const at::Tensor omega =
      at::pow(kPosEmbedOmega0, at::arange(quarter, at::kDouble) / static_cast<double>(quarter))
          .reciprocal();                      // [C/4]
  auto encode = [&](const at::Tensor& pos) {  // [n] -> [n, C/2]
    const at::Tensor angle = pos.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({at::sin(angle), at::cos(angle)}, 1);
  };
  const at::Tensor emb_u = encode(u).unsqueeze(0).expand({height, width, channels / 2});
  const at::Tensor emb_v = encode(v).unsqueeze(1).expand({height, width, channels / 2});
  return at::cat({emb_u, emb_v}, 2).to(at::kFloat).permute({2, 0, 1}).contiguous();
}

std::vector<std::pair<std::string, std::vector<int64_t>>> DptHead::ParameterShapes(
    const DptHeadConfig& cfg) {
  ValidateConfig(cfg);
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  auto conv = [&out](const std::string& name, int64_t out_ch, int64_t in_ch, int64_t k, bool bias) {
    out.push_back({name + ".weight", {out_ch, in_ch, k, k}});
    if (bias) out.push_back({name + ".bias", {out_ch}});
  };
  const int64_t f = cfg.features;
  const std::vector<int64_t>& oc = cfg.out_channels;

  out.push_back({"norm.weight", {cfg.dim_in}});
  out.push_back({"norm.bias", {cfg.dim_in}});
  for (int64_t i = 0; i < kPyramidLevels; ++i) {
    conv("projects." + std::to_string(i), oc[i], cfg.dim_in, 1, true);
  }
  // ConvTranspose2d weights are [in, out, k, k]; in == out here. Index 2 is an Identity.
  conv("resize_layers.0", oc[0], oc[0], 4, true);
  conv("resize_layers.1", oc[1], oc[1], 2, true);
  conv("resize_layers.3", oc[3], oc[3], 3, true);
  for (int64_t i = 0; i < kPyramidLevels; ++i) {
    conv("scratch.layer" + std::to_string(i + 1) + "_rn", f, oc[i], 3, false);
  }
  for (int64_t k = 1; k <= kPyramidLevels; ++k) {
    const std::string base = "scratch.refinenet" + std::to_string(k);
    conv(base + ".out_conv", f, f, 1, true);
    for (const int unit : {1, 2}) {
      if (unit == 1 && k == kPyramidLevels) continue;  // refinenet4 has no resConfUnit1
      const std::string u = base + ".resConfUnit" + std::to_string(unit);
      conv(u + ".conv1", f, f, 3, true);
      conv(u + ".conv2", f, f, 3, true);
    }
  }
  if (cfg.feature_only) {
    conv("scratch.output_conv1", f, f, 3, true);
  } else {
    conv("scratch.output_conv1", f / 2, f, 3, true);
    conv("scratch.output_conv2.0", kHeadFeatures2, f / 2, 3, true);
    conv("scratch.output_conv2.2", cfg.output_dim, kHeadFeatures2, 1, true);
  }
  return out;
}

DptHead DptHead::Load(Checkpoint& ckpt, const DptHeadConfig& cfg, const std::string& prefix) {
  std::map<std::string, at::Tensor> taken;
  for (const auto& [name, shape] : ParameterShapes(cfg)) {
    taken.emplace(name, ckpt.Take(prefix + name, shape));
  }
  // Every listed parameter is bound exactly once (checked at the end).
  auto get = [&taken](const std::string& name) {
    auto it = taken.find(name);
    TORCH_INTERNAL_ASSERT(it != taken.end(), "DptHead: parameter ", name, " not listed");
    at::Tensor t = std::move(it->second);
    taken.erase(it);
    return t;
  };
  auto conv = [&get](const std::string& name, bool bias) {
    return Conv{get(name + ".weight"), bias ? get(name + ".bias") : at::Tensor()};
  };

  DptHead head(cfg);
  head.norm_weight_ = get("norm.weight");
  head.norm_bias_ = get("norm.bias");
  for (int64_t i = 0; i < kPyramidLevels; ++i) {
    head.projects_.push_back(conv("projects." + std::to_string(i), true));
  }
  head.resize_layers_ = {conv("resize_layers.0", true), conv("resize_layers.1", true), Conv{},
                         conv("resize_layers.3", true)};
  for (int64_t i = 0; i < kPyramidLevels; ++i) {
    head.layer_rn_.push_back(conv("scratch.layer" + std::to_string(i + 1) + "_rn", false));
  }
  for (int64_t k = 1; k <= kPyramidLevels; ++k) {
    const std::string base = "scratch.refinenet" + std::to_string(k);
    FusionBlock block;
    block.has_residual = k != kPyramidLevels;
    block.out_conv = conv(base + ".out_conv", true);
    if (block.has_residual) {
      block.unit1 = {conv(base + ".resConfUnit1.conv1", true),
                     conv(base + ".resConfUnit1.conv2", true)};
    }
    block.unit2 = {conv(base + ".resConfUnit2.conv1", true),
                   conv(base + ".resConfUnit2.conv2", true)};
    head.refinenets_.push_back(std::move(block));
  }
  head.output_conv1_ = conv("scratch.output_conv1", true);
  if (!cfg.feature_only) {
    head.output_conv2_0_ = conv("scratch.output_conv2.0", true);
    head.output_conv2_2_ = conv("scratch.output_conv2.2", true);
  }
  TORCH_INTERNAL_ASSERT(taken.empty(), "DptHead: ", taken.size(),
                        " listed parameters unused, e.g. ", taken.begin()->first);
  return head;
}

template <typename Fn>
void DptHead::ForEachParameter(Fn&& fn) {
  auto visit_conv = [&fn](Conv& c) {
    fn(c.weight);
    fn(c.bias);
  };
  fn(norm_weight_);
  fn(norm_bias_);
  for (Conv& c : projects_) visit_conv(c);
  for (Conv& c : resize_layers_) visit_conv(c);
  for (Conv& c : layer_rn_) visit_conv(c);
  for (FusionBlock& b : refinenets_) {
    visit_conv(b.unit1.conv1);
    visit_conv(b.unit1.conv2);
    visit_conv(b.unit2.conv1);
    visit_conv(b.unit2.conv2);
    visit_conv(b.out_conv);
  }
  visit_conv(output_conv1_);
  visit_conv(output_conv2_0_);
  visit_conv(output_conv2_2_);
}

void DptHead::To(c10::Device device, c10::ScalarType dtype) {
  ForEachParameter([&](at::Tensor& t) {
    if (t.defined()) t = t.to(device, dtype);
  });
}

at::Tensor DptHead::AddPositionEmbedding(const at::Tensor& x, int64_t image_height,
                                         int64_t image_width) const {
  // x: [N, C, h, w]. Upstream scales the float32 embedding by 0.1 before adding.
  const at::Tensor emb =
      DptUvPositionEmbedding(x.size(2), x.size(3), x.size(1),
                             static_cast<double>(image_width) / static_cast<double>(image_height)) *
      kPosEmbedRatio;
  return x + emb.to(x.device(), x.scalar_type()).unsqueeze(0);
}

at::Tensor DptHead::ApplyResidualUnit(const ResidualUnit& unit, const at::Tensor& x) {
  // Upstream's first ReLU is in place (nn.ReLU(inplace=True)), so its skip adds relu(x), not x.
  const at::Tensor activated = at::relu(x);
  at::Tensor out = Conv2d(activated, unit.conv1.weight, unit.conv1.bias, 1, 1);
  out = Conv2d(at::relu(out), unit.conv2.weight, unit.conv2.bias, 1, 1);
  return out + activated;
}

at::Tensor DptHead::ApplyFusion(const FusionBlock& block, const at::Tensor& x,
                                const at::Tensor& skip, at::IntArrayRef size) {
  at::Tensor out = x;
  if (block.has_residual) out = out + ApplyResidualUnit(block.unit1, skip);
  out = ApplyResidualUnit(block.unit2, out);
  out = ResizeBilinear(out, size[0], size[1]);
  return Conv2d(out, block.out_conv.weight, block.out_conv.bias, 1, 0);
}

std::pair<at::Tensor, at::Tensor> DptHead::ForwardChunk(const std::vector<at::Tensor>& layer_tokens,
                                                        int64_t image_height,
                                                        int64_t image_width) const {
  // layer_tokens: 4 × [s, ph·pw, dim_in] patch tokens on the parameters' device and dtype.
  const int64_t ph = image_height / cfg_.patch_size;
  const int64_t pw = image_width / cfg_.patch_size;
  const int64_t s = layer_tokens[0].size(0);

  // Pyramid at strides ×4, ×2, ×1, ×½ of the patch grid: [s, oc_i, ...].
  std::vector<at::Tensor> rn;
  for (int64_t i = 0; i < kPyramidLevels; ++i) {
    at::Tensor x =
        at::layer_norm(layer_tokens[i], {cfg_.dim_in}, norm_weight_, norm_bias_, kLayerNormEps);
    x = x.permute({0, 2, 1}).reshape({s, cfg_.dim_in, ph, pw});
    x = Conv2d(x, projects_[i].weight, projects_[i].bias, 1, 0);
    if (cfg_.pos_embed) x = AddPositionEmbedding(x, image_height, image_width);
    const Conv& r = resize_layers_[i];
    if (i == 0) x = ConvTranspose2d(x, r.weight, r.bias, 4);
    if (i == 1) x = ConvTranspose2d(x, r.weight, r.bias, 2);
    if (i == 3) x = Conv2d(x, r.weight, r.bias, 2, 1);
    rn.push_back(Conv2d(x, layer_rn_[i].weight, at::Tensor(), 1, 1));  // [s, F, ...]
  }

  // Deepest to shallowest; each block resizes to the next level, refinenet1 doubles.
  at::Tensor out = ApplyFusion(refinenets_[3], rn[3], at::Tensor(), rn[2].sizes().slice(2));
  out = ApplyFusion(refinenets_[2], out, rn[2], rn[1].sizes().slice(2));
  out = ApplyFusion(refinenets_[1], out, rn[1], rn[0].sizes().slice(2));
  const int64_t doubled[2] = {rn[0].size(2) * 2, rn[0].size(3) * 2};
  out = ApplyFusion(refinenets_[0], out, rn[0], at::IntArrayRef(doubled));
  out = Conv2d(out, output_conv1_.weight, output_conv1_.bias, 1, 1);

  // Python's int(ph · ps / down_ratio).
  const auto scaled = [&](int64_t n) {
    return static_cast<int64_t>(static_cast<double>(n * cfg_.patch_size) /
                                static_cast<double>(cfg_.down_ratio));
  };
  out = ResizeBilinear(out, scaled(ph), scaled(pw));
  if (cfg_.pos_embed) out = AddPositionEmbedding(out, image_height, image_width);
  if (cfg_.feature_only) return {out, at::Tensor()};

  out = at::relu(Conv2d(out, output_conv2_0_.weight, output_conv2_0_.bias, 1, 1));
  out = Conv2d(out, output_conv2_2_.weight, output_conv2_2_.bias, 1, 0);  // [s, output_dim, H', W']
  const at::Tensor fmap = out.permute({0, 2, 3, 1});                      // [s, H', W', output_dim]
  const int64_t c = fmap.size(3);
  return {ActivatePrediction(fmap.slice(3, 0, c - 1), cfg_.activation).contiguous(),
          ActivateConfidence(fmap.select(3, c - 1), cfg_.conf_activation).contiguous()};
}

std::pair<at::Tensor, at::Tensor> DptHead::Forward(const std::vector<at::Tensor>& layer_tokens,
                                                   int64_t image_height, int64_t image_width,
                                                   int64_t patch_start_idx) const {
  TORCH_CHECK(static_cast<int64_t>(layer_tokens.size()) == kPyramidLevels,
              "DptHead::Forward: ", kPyramidLevels, " layers expected, got ", layer_tokens.size());
  const int64_t ph = image_height / cfg_.patch_size;
  const int64_t pw = image_width / cfg_.patch_size;
  TORCH_CHECK(ph > 0 && pw > 0, "DptHead::Forward: image ", image_height, "x", image_width,
              " is smaller than one patch");
  TORCH_CHECK(patch_start_idx >= 0, "DptHead::Forward: negative patch_start_idx");
  const int64_t frames = layer_tokens[0].size(0);
  for (const at::Tensor& t : layer_tokens) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == frames && t.size(2) == cfg_.dim_in &&
                    t.size(1) == patch_start_idx + ph * pw,
                "DptHead::Forward: layer tokens ", t.sizes(), " do not match [", frames, ", ",
                patch_start_idx, " + ", ph, "·", pw, ", ", cfg_.dim_in, "]");
  }
  TORCH_CHECK(frames > 0, "DptHead::Forward: no frames");

  std::vector<at::Tensor> preds;
  std::vector<at::Tensor> confs;
  for (int64_t begin = 0; begin < frames; begin += cfg_.frames_chunk_size) {
    const int64_t end = std::min(frames, begin + cfg_.frames_chunk_size);
    std::vector<at::Tensor> chunk;
    for (const at::Tensor& t : layer_tokens) {
      chunk.push_back(t.slice(0, begin, end)
                          .slice(1, patch_start_idx)
                          .to(norm_weight_.device(), norm_weight_.scalar_type()));
    }
    auto [pred, conf] = ForwardChunk(chunk, image_height, image_width);
    preds.push_back(std::move(pred));
    if (conf.defined()) confs.push_back(std::move(conf));
  }
  if (preds.size() == 1) return {preds[0], confs.empty() ? at::Tensor() : confs[0]};
  return {at::cat(preds, 0), confs.empty() ? at::Tensor() : at::cat(confs, 0)};
}

}  // namespace streamkv::models::stream3r
