// Fused row kernels on Vulkan: softmax, layer/RMS norm, rope, attention and cross-entropy, each
// forward with its backward twin. Strided inputs are made dense first (one copy kernel).
#include <fmt/format.h>

#include <stdexcept>

#include "backends/vulkan/vk_backend.h"

namespace rf::vk {

namespace {
uint32_t u32(int64_t v) { return to_u32(v); }
struct RowShape {
  uint32_t rows, C;
};
RowShape rows_of(const Tensor& x) {
  const int64_t C = x.dim() ? x.size(-1) : 1;
  return {u32(C ? x.numel() / C : 0), u32(C)};
}
struct NormPush {
  uint32_t rows, C, x_off, w_off, b_off, m_off, r_off, y_off, d_off, has_b;
  float eps;
};
}  // namespace

void VulkanBackend::softmax(const Tensor& x_in, Tensor& y, bool log) {
  need_f32(x_in, "softmax");
  Tensor x = dense(x_in);
  auto [rows, C] = rows_of(x);
  if (rows == 0) return;
  Arg ax = arg(x), ay = arg(y, true);
  struct {
    uint32_t rows, C, x_off, y_off;
  } p{rows, C, ax.off, ay.off};
  auto [gx, gy] = row_grid(rows);
  run(row_kernel(log ? "log_softmax" : "softmax"), {ax, ay}, p, gx, gy);
}

void VulkanBackend::softmax_bwd(const Tensor& y_in, const Tensor& dy_in, Tensor& dx, bool log) {
  need_f32(y_in, "softmax_bwd");
  Tensor y = dense(y_in), dy = dense(dy_in);
  auto [rows, C] = rows_of(y);
  if (rows == 0) return;
  Arg ay = arg(y), ag = arg(dy), ad = arg(dx, true);
  struct {
    uint32_t rows, C, y_off, dy_off, dx_off;
  } p{rows, C, ay.off, ag.off, ad.off};
  auto [gx, gy] = row_grid(rows);
  run(row_kernel(log ? "log_softmax_bwd" : "softmax_bwd"), {ay, ag, ad}, p, gx, gy);
}

void VulkanBackend::layer_norm(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, double eps, Tensor& y,
                               Tensor& mean, Tensor& rstd) {
  need_f32(x_in, "layer_norm");
  Tensor x = dense(x_in), w = dense(w_in), b = b_in.defined() ? dense(b_in) : Tensor();
  auto [rows, C] = rows_of(x);
  if (rows == 0) return;
  Arg ax = arg(x), aw = arg(w), ab = b.defined() ? arg(b) : ax, am = arg(mean, true), ar = arg(rstd, true),
      ay = arg(y, true);
  NormPush p{rows, C, ax.off, aw.off, ab.off, am.off, ar.off, ay.off, 0, b.defined() ? 1u : 0u, float(eps)};
  auto [gx, gy] = row_grid(rows);
  run(row_kernel("layer_norm"), {ax, aw, ab, am, ar, ay, ax}, p, gx, gy);
}

void VulkanBackend::layer_norm_bwd(const Tensor& x_in, const Tensor& w_in, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& dy_in, Tensor& dx, Tensor& dw, Tensor& db) {
  need_f32(x_in, "layer_norm_bwd");
  Tensor x = dense(x_in), w = dense(w_in), dy = dense(dy_in);
  auto [rows, C] = rows_of(x);
  if (rows == 0) return;
  Arg ax = arg(x), aw = arg(w), am = arg(mean), ar = arg(rstd), ag = arg(dy);
  auto [gx, gy] = row_grid(rows);
  if (dx.defined()) {
    Arg ad = arg(dx, true);
    NormPush p{rows, C, ax.off, aw.off, 0, am.off, ar.off, ag.off, ad.off, 0, 0.0f};
    run(row_kernel("layer_norm_bwd_dx"), {ax, aw, ax, am, ar, ag, ad}, p, gx, gy);
  }
  if (dw.defined() || db.defined()) {
    Tensor dw_t = dw.defined() ? dw : zeros({C}, DType::F32, device());
    Arg adw = arg(dw_t, true), adb = db.defined() ? arg(db, true) : ax;
    NormPush p{rows, C, ax.off, 0, adb.off, am.off, ar.off, ag.off, adw.off, db.defined() ? 1u : 0u, 0.0f};
    run(row_kernel("layer_norm_bwd_dw"), {ax, aw, adb, am, ar, ag, adw}, p, groups_for(C));
  }
}

void VulkanBackend::rms_norm(const Tensor& x_in, const Tensor& w_in, double eps, Tensor& y, Tensor& rstd) {
  need_f32(x_in, "rms_norm");
  Tensor x = dense(x_in), w = dense(w_in);
  auto [rows, C] = rows_of(x);
  if (rows == 0) return;
  Arg ax = arg(x), aw = arg(w), ar = arg(rstd, true), ay = arg(y, true);
  NormPush p{rows, C, ax.off, aw.off, 0, 0, ar.off, ay.off, 0, 0, float(eps)};
  auto [gx, gy] = row_grid(rows);
  run(row_kernel("rms_norm"), {ax, aw, ax, ax, ar, ay, ax}, p, gx, gy);
}

void VulkanBackend::rms_norm_bwd(const Tensor& x_in, const Tensor& w_in, const Tensor& rstd, const Tensor& dy_in,
                                 Tensor& dx, Tensor& dw) {
  need_f32(x_in, "rms_norm_bwd");
  Tensor x = dense(x_in), w = dense(w_in), dy = dense(dy_in);
  auto [rows, C] = rows_of(x);
  if (rows == 0) return;
  Arg ax = arg(x), aw = arg(w), ar = arg(rstd), ag = arg(dy);
  auto [gx, gy] = row_grid(rows);
  if (dx.defined()) {
    Arg ad = arg(dx, true);
    NormPush p{rows, C, ax.off, aw.off, 0, 0, ar.off, ag.off, ad.off, 0, 0.0f};
    run(row_kernel("rms_norm_bwd_dx"), {ax, aw, ax, ax, ar, ag, ad}, p, gx, gy);
  }
  if (dw.defined()) {
    Arg adw = arg(dw, true);
    NormPush p{rows, C, ax.off, 0, 0, 0, ar.off, ag.off, adw.off, 0, 0.0f};
    run(row_kernel("rms_norm_bwd_dw"), {ax, aw, ax, ax, ar, ag, adw}, p, groups_for(C));
  }
}

void VulkanBackend::rope(const Tensor& x, const Tensor& cos_in, const Tensor& sin_in, Tensor& y, bool inverse) {
  need_f32(x, "rope");
  if (x.dim() != 4) throw std::invalid_argument("[vulkan] rope: x must be (B, H, T, D)");
  Tensor c = dense(cos_in), s = dense(sin_in);
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  if (D % 2) throw std::invalid_argument("[vulkan] rope: head dim must be even");
  if (x.numel() == 0) return;
  Arg ax = arg(x), ac = arg(c), as = arg(s), ay = arg(y, true);
  struct {
    uint32_t B, H, T, D, xb, xh, xt, xd, x_off, c_off, s_off, y_off, cs_b;
    float sign;
  } p{u32(B),
      u32(H),
      u32(T),
      u32(D),
      u32(x.stride(0)),
      u32(x.stride(1)),
      u32(x.stride(2)),
      u32(x.stride(3)),
      ax.off,
      ac.off,
      as.off,
      ay.off,
      c.dim() == 3 ? u32(T * D) : 0u,
      inverse ? -1.0f : 1.0f};
  run("rope", {ax, ac, as, ay}, p, groups_for(uint64_t(x.numel())));
}

namespace {
struct AttnPush {
  uint32_t B, H, Hk, Tq, Tk, D, Dv, has_mask, causal;
  uint32_t qb, qh, qt, kb, kh, kt, vb, vh, vt;
  uint32_t q_off, k_off, v_off, m_off, o_off, l_off, d_off, g_off, g2_off, delta_off;
  float scale;
};
static_assert(sizeof(AttnPush) == 116);
}  // namespace

// Attention reads q/k/v through strides but needs each row's last dim contiguous.
Tensor VulkanBackend::last_dense(const Tensor& t) { return t.stride(-1) == 1 ? t : dense(t); }

// q, k, v (and dout) all f32, or all of one 16-bit dtype (autocast): the variant's name suffix.
static std::string attention_suffix(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  const DType t = q.dtype();
  if (t == DType::F32) {
    need_f32(k, op);
    need_f32(v, op);
    return "";
  }
  if ((t != DType::F16 && t != DType::BF16) || k.dtype() != t || v.dtype() != t)
    throw std::invalid_argument(
        fmt::format("[vulkan] {}: q, k, v must be all f32 or all one 16-bit dtype, got {} {} {}", op, dtype_name(t),
                    dtype_name(k.dtype()), dtype_name(v.dtype())));
  return t == DType::F16 ? "_f16" : "_bf16";
}

void VulkanBackend::attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& key_mask,
                              const AttnArgs& args, Tensor& o, Tensor& lse) {
  const std::string sfx = attention_suffix(q_in, k_in, v_in, "attention");
  need_f32(o, "attention");
  Tensor q = last_dense(q_in), k = last_dense(k_in), v = last_dense(v_in);
  Tensor m = key_mask.defined() ? dense(key_mask) : Tensor();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Hk = k.size(1), Tk = k.size(2),
                Dv = v.size(3);
  if (D > 512 || Dv > 512)
    throw std::invalid_argument("[vulkan] attention: head dims above 512 are not supported on Vulkan");
  if (q.numel() == 0) return;
  Arg aq = arg(q), ak = arg(k), av = arg(v), am = m.defined() ? arg(m) : aq, ao = arg(o, true), al = arg(lse, true);
  AttnPush p{u32(B),
             u32(H),
             u32(Hk),
             u32(Tq),
             u32(Tk),
             u32(D),
             u32(Dv),
             m.defined() ? 1u : 0u,
             args.causal ? 1u : 0u,
             u32(q.stride(0)),
             u32(q.stride(1)),
             u32(q.stride(2)),
             u32(k.stride(0)),
             u32(k.stride(1)),
             u32(k.stride(2)),
             u32(v.stride(0)),
             u32(v.stride(1)),
             u32(v.stride(2)),
             aq.off,
             ak.off,
             av.off,
             am.off,
             ao.off,
             al.off,
             0,
             0,
             0,
             0,
             float(args.scale)};
  auto [gx, gy] = row_grid(uint64_t(B * H * Tq));
  run(row_kernel("attention" + sfx), {aq, ak, av, am, ao, al, aq, aq, aq, aq}, p, gx, gy);
}

void VulkanBackend::attention_bwd(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& key_mask,
                                  const AttnArgs& args, const Tensor& o_in, const Tensor& lse, const Tensor& dout_in,
                                  Tensor& dq, Tensor& dk, Tensor& dv) {
  const std::string sfx = attention_suffix(q_in, k_in, v_in, "attention_bwd");
  if (dout_in.dtype() != q_in.dtype())
    throw std::invalid_argument(fmt::format("[vulkan] attention_bwd: dout is {}, q is {}", dtype_name(dout_in.dtype()),
                                            dtype_name(q_in.dtype())));
  Tensor q = last_dense(q_in), k = last_dense(k_in), v = last_dense(v_in), o = dense(o_in), dout = dense(dout_in);
  Tensor m = key_mask.defined() ? dense(key_mask) : Tensor();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Hk = k.size(1), Tk = k.size(2),
                Dv = v.size(3);
  if (D > 512 || Dv > 512)
    throw std::invalid_argument("[vulkan] attention: head dims above 512 are not supported on Vulkan");
  if (q.numel() == 0) return;
  Tensor delta = empty({B, H, Tq}, DType::F32, device());
  Arg aq = arg(q), ak = arg(k), av = arg(v), am = m.defined() ? arg(m) : aq, ao = arg(o), al = arg(lse), ad = arg(dout),
      adl = arg(delta, true), adq = arg(dq, true);
  AttnPush p{u32(B),
             u32(H),
             u32(Hk),
             u32(Tq),
             u32(Tk),
             u32(D),
             u32(Dv),
             m.defined() ? 1u : 0u,
             args.causal ? 1u : 0u,
             u32(q.stride(0)),
             u32(q.stride(1)),
             u32(q.stride(2)),
             u32(k.stride(0)),
             u32(k.stride(1)),
             u32(k.stride(2)),
             u32(v.stride(0)),
             u32(v.stride(1)),
             u32(v.stride(2)),
             aq.off,
             ak.off,
             av.off,
             am.off,
             ao.off,
             al.off,
             ad.off,
             adq.off,
             0,
             adl.off,
             float(args.scale)};
  auto [gx, gy] = row_grid(uint64_t(B * H * Tq));
  run(row_kernel("attention_bwd_dq" + sfx), {aq, ak, av, am, ao, al, ad, adq, aq, adl}, p, gx, gy);
  Arg adk = arg(dk, true), adv = arg(dv, true);
  adl.b.write = false;
  p.g_off = adk.off;
  p.g2_off = adv.off;
  auto [hx, hy] = row_grid(uint64_t(B * Hk * Tk));
  run(row_kernel("attention_bwd_dkv" + sfx), {aq, ak, av, am, aq, al, ad, adk, adv, adl}, p, hx, hy);
}

void VulkanBackend::cross_entropy(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index, Tensor& loss,
                                  Tensor& lse) {
  need_f32(logits_in, "cross_entropy");
  if (targets_in.dtype() != DType::I64) throw std::invalid_argument("[vulkan] cross_entropy: targets must be i64");
  Tensor x = dense(logits_in), t = dense(targets_in);
  auto [N, C] = rows_of(x);
  if (N == 0) return;
  Arg ax = arg(x), at = arg(t), al = arg(lse, true), ao = arg(loss, true);
  struct {
    uint32_t N, C, x_off, t_off, l_off, o_off, g_off, ignore_lo, ignore_hi;
  } p{N,
      C,
      ax.off,
      at.off,
      al.off,
      ao.off,
      0,
      uint32_t(uint64_t(ignore_index)),
      uint32_t(uint64_t(ignore_index) >> 32)};
  auto [gx, gy] = row_grid(N);
  run(row_kernel("cross_entropy"), {ax, at, al, ao, ax, err_arg()}, p, gx, gy);
}

void VulkanBackend::cross_entropy_bwd(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index,
                                      const Tensor& lse, const Tensor& dloss_in, Tensor& dlogits) {
  need_f32(logits_in, "cross_entropy_bwd");
  Tensor x = dense(logits_in), t = dense(targets_in), dl = dense(dloss_in);
  auto [N, C] = rows_of(x);
  if (N == 0) return;
  Arg ax = arg(x), at = arg(t), al = arg(lse), ao = arg(dl), ag = arg(dlogits, true);
  struct {
    uint32_t N, C, x_off, t_off, l_off, o_off, g_off, ignore_lo, ignore_hi;
  } p{N,
      C,
      ax.off,
      at.off,
      al.off,
      ao.off,
      ag.off,
      uint32_t(uint64_t(ignore_index)),
      uint32_t(uint64_t(ignore_index) >> 32)};
  auto [gx, gy] = row_grid(N);
  run(row_kernel("cross_entropy_bwd"), {ax, at, al, ao, ag, err_arg()}, p, gx, gy);
}

}  // namespace rf::vk
