#include "models/blocks.h"

#include <fmt/format.h>

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "engine/autograd.h"

namespace rf::models {

Tensor activation(const std::string& name, const Tensor& x) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return gelu(x, GeluApprox::Tanh);
  if (name == "gelu") return gelu(x, GeluApprox::None);
  if (name == "relu") return relu(x);
  if (name == "silu" || name == "swish") return silu(x);
  throw std::invalid_argument(fmt::format("[model] activation '{}' is not supported", name));
}

namespace {
// inv_freq as transformers computes it (float32), with rope scaling applied.
std::vector<float> inv_freq(const RopeConfig& r, int64_t dim) {
  std::vector<float> f(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float e = float(2 * i) / float(dim);
    f[size_t(i)] = 1.0f / std::pow(float(r.theta), e);
  }
  if (r.type == "linear") {
    for (float& x : f) x = float(x / r.factor);
  } else if (r.type == "llama3") {
    const double old_len = double(r.original_max_positions);
    const double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
    for (float& x : f) {
      const double wavelen = 2 * std::numbers::pi / x;
      if (wavelen > low_wavelen) {
        x = float(x / r.factor);
      } else if (wavelen >= high_wavelen) {  // medium band: interpolate between scaled and unscaled
        const double smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        x = float((1 - smooth) * x / r.factor + smooth * x);
      }
    }
  }
  return f;
}
}  // namespace

std::pair<Tensor, Tensor> rope_cos_sin(const RopeConfig& rope, int64_t head_dim, const Tensor& positions) {
  std::vector<float> inv = inv_freq(rope, head_dim);
  std::vector<int64_t> pos = positions.to_vector<int64_t>();
  const int64_t half = head_dim / 2;
  std::vector<float> c(pos.size() * size_t(head_dim)), s(c.size());
  for (size_t p = 0; p < pos.size(); ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(pos[p]) * inv[size_t(i)];  // an f32 product, as torch's matmul of f32 tables
      const float cv = float(std::cos(double(angle))), sv = float(std::sin(double(angle)));
      const size_t o = p * size_t(head_dim) + size_t(i);
      c[o] = c[o + size_t(half)] = cv;
      s[o] = s[o + size_t(half)] = sv;
    }
  Shape sh{positions.size(0), positions.size(1), head_dim};
  return {from_data(c, sh, positions.device()), from_data(s, sh, positions.device())};
}

Tensor default_positions(int64_t B, int64_t T, int64_t past, Device d) {
  std::vector<int64_t> p(size_t(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) p[size_t(b * T + t)] = past + t;
  return from_data(p, {B, T}, d);
}

Tensor split_heads(const Tensor& x, int64_t heads) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  return x.reshape({B, T, heads, C / heads}).transpose(1, 2);
}

Tensor merge_heads(const Tensor& x) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  return x.transpose(1, 2).reshape({B, T, H * D});
}

std::pair<Tensor, Tensor> KVCache::append(int64_t layer, const Tensor& k, const Tensor& v) {
  const int64_t T = k.size(2);
  if (length_ + T > capacity_)
    throw std::runtime_error(
        fmt::format("[generate] KV cache full: {} cached + {} new > capacity {}", length_, T, capacity_));
  NoGradGuard ng;
  auto put = [&](Tensor& buf, const Tensor& x) {
    if (!buf.defined()) buf = zeros({x.size(0), x.size(1), capacity_, x.size(3)}, x.dtype(), x.device());
    buf.narrow(2, length_, T).copy_(x);
    return buf.narrow(2, 0, length_ + T);
  };
  Tensor kk = put(k_[size_t(layer)], k);
  Tensor vv = put(v_[size_t(layer)], v);
  return {kk, vv};
}

Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache, int64_t layer, bool causal,
              const Tensor& attention_mask, double scale) {
  Tensor kk = k, vv = v;
  if (cache) std::tie(kk, vv) = cache->append(layer, k, v);
  AttnOptions o;
  o.causal = causal;
  o.scale = scale;
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != q.size(0) || attention_mask.size(1) != kk.size(2))
      throw std::invalid_argument(
          fmt::format("[model] attention_mask must be (B, {}) for {} keys", kk.size(2), kk.size(2)));
    o.key_mask =
        attention_mask.dtype() == DType::Bool ? attention_mask : ne(attention_mask, zeros_like(attention_mask));
  }
  return scaled_dot_product_attention(q, kk, vv, o);
}

Device Model::device() {
  auto ps = named_parameters();
  return ps.empty() ? Device{} : ps.front().tensor->device();
}

}  // namespace rf::models
