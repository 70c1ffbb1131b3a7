#version 450
#extension GL_GOOGLE_include_directive : require
// Scaled dot-product attention, flash style: scores live only in shared memory, 256 keys (or
// queries) at a time with an online softmax; only lse (B, H, Tq) is saved. GQA: head h reads
// kv head h / (H / Hk). q/k/v: strided except the last dim; o, dout, lse, delta dense.
//   default  one workgroup per query row: o, lse
//   -DBWD_DQ one workgroup per query row: delta = dout . o, dq = scale * sum_j dS_ij k_j
//   -DBWD_DKV one workgroup per key row (b, kv head j): dv = sum P dout, dk = scale * sum dS q,
//            over every query of every head in the group (no atomics)
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#include "common.glsl"
layout(local_size_x = WG) in;
#if defined(QKV_F16) || defined(QKV_BF16)
// Autocast: q, k, v (and dout) in 16 bits, widened exactly on load; all math and outputs stay f32.
#include "half.glsl"
#ifdef QKV_BF16
#define H2F(x) bf16_to_f32(uint(x))
#else
#define H2F(x) f16_to_f32(uint(x))
#endif
layout(std430, binding = 0) readonly buffer Q { uint16_t q16[]; };
layout(std430, binding = 1) readonly buffer K { uint16_t k16[]; };
layout(std430, binding = 2) readonly buffer V { uint16_t v16[]; };
layout(std430, binding = 6) buffer DO { uint16_t dout16[]; };  // bwd: dout; fwd: unused
#define LQ(i) H2F(q16[i])
#define LK(i) H2F(k16[i])
#define LV(i) H2F(v16[i])
#define LDO(i) H2F(dout16[i])
#else
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 6) buffer DO { float dout[]; };  // bwd: dout; fwd: unused
#define LQ(i) q[i]
#define LK(i) k[i]
#define LV(i) v[i]
#define LDO(i) dout[i]
#endif
layout(std430, binding = 3) readonly buffer MK { uint8_t mask[]; };
layout(std430, binding = 4) buffer O { float o[]; };      // o (fwd, written) / o (bwd, read)
layout(std430, binding = 5) buffer L { float lse[]; };
layout(std430, binding = 7) buffer G { float grad[]; };    // dq (BWD_DQ) or dk (BWD_DKV)
layout(std430, binding = 8) buffer G2 { float grad2[]; };  // dv (BWD_DKV)
layout(std430, binding = 9) buffer DL { float delta_[]; }; // (B, H, Tq): dout . o per query row
layout(push_constant) uniform Push {
  uint B, H, Hk, Tq, Tk, D, Dv, has_mask, causal;
  uint qb, qh, qt, kb, kh, kt, vb, vh, vt;
  uint q_off, k_off, v_off, m_off, o_off, l_off, d_off, g_off, g2_off, delta_off;
  float scale;
} p;

#define NEG_INF uintBitsToFloat(0xff800000u)
const uint MAXD = 512;
shared float row_s[MAXD];   // this workgroup's q row (fwd, dq) or k row (dkv)
shared float row_t[MAXD];   // dout row (dq) or v row (dkv)
shared float ps[WG], ds[WG];

bool visible(uint b, uint i, uint j) {
  if (p.causal != 0u && j > i + (p.Tk - p.Tq)) return false;
  if (p.has_mask != 0u && uint(mask[p.m_off + b * p.Tk + j]) == 0u) return false;
  return true;
}

void main() {
  uint t = gl_LocalInvocationID.x;
#if !defined(BWD_DKV)
  uint row = wg_row();
  if (row >= p.B * p.H * p.Tq) return;
  uint i = row % p.Tq, h = (row / p.Tq) % p.H, b = row / (p.Tq * p.H);
  uint hk = h / (p.H / p.Hk);
  uint qbase = p.q_off + b * p.qb + h * p.qh + i * p.qt;
  for (uint d = t; d < p.D; d += WG) row_s[d] = LQ(qbase + d);
#ifdef BWD_DQ
  float dl = 0.0;
  for (uint d = t; d < p.Dv; d += WG) {
    row_t[d] = LDO(p.d_off + row * p.Dv + d);
    dl += row_t[d] * o[p.o_off + row * p.Dv + d];
  }
  float delta = wg_sum(dl);  // its barriers also publish row_s / row_t
  if (t == 0) delta_[p.delta_off + row] = delta;
  float l_i = lse[p.l_off + row];
  float acc0 = 0.0, acc1 = 0.0;
#else
  barrier();
  float m = NEG_INF, l = 0.0, acc0 = 0.0, acc1 = 0.0;
#endif
  for (uint j0 = 0; j0 < p.Tk; j0 += WG) {
    uint j = j0 + t;
    float s = NEG_INF;
    if (j < p.Tk && visible(b, i, j)) {
      uint kbase = p.k_off + b * p.kb + hk * p.kh + j * p.kt;
      float dot_ = 0.0;
      for (uint d = 0; d < p.D; ++d) dot_ += row_s[d] * LK(kbase + d);
      s = dot_ * p.scale;
    }
#ifdef BWD_DQ
    float pij = (s == NEG_INF || l_i == NEG_INF) ? 0.0 : exp(s - l_i);
    float dp = 0.0;
    if (pij != 0.0) {
      uint vbase = p.v_off + b * p.vb + hk * p.vh + j * p.vt;
      for (uint d = 0; d < p.Dv; ++d) dp += row_t[d] * LV(vbase + d);
    }
    barrier();
    ds[t] = pij * (dp - delta);
    barrier();
    uint n = min(WG, p.Tk - j0);
    for (uint d = t, r = 0; d < p.D && r < 2; d += WG, ++r) {
      float a = 0.0;
      for (uint jj = 0; jj < n; ++jj) a += ds[jj] * LK(p.k_off + b * p.kb + hk * p.kh + (j0 + jj) * p.kt + d);
      if (r == 0) acc0 += a; else acc1 += a;
    }
#else
    float cm = wg_max(s);
    float m_new = max(m, cm);
    if (m_new == NEG_INF) continue;  // nothing visible yet (uniform across the workgroup)
    float pj = s == NEG_INF ? 0.0 : exp(s - m_new);
    float alpha = m == NEG_INF ? 0.0 : exp(m - m_new);
    barrier();
    ps[t] = pj;
    l = l * alpha + wg_sum(pj);  // wg_sum's barriers publish ps
    m = m_new;
    uint n = min(WG, p.Tk - j0);
    for (uint d = t, r = 0; d < p.Dv && r < 2; d += WG, ++r) {
      float a = 0.0;
      for (uint jj = 0; jj < n; ++jj) a += ps[jj] * LV(p.v_off + b * p.vb + hk * p.vh + (j0 + jj) * p.vt + d);
      if (r == 0) acc0 = acc0 * alpha + a; else acc1 = acc1 * alpha + a;
    }
#endif
  }
#ifdef BWD_DQ
  for (uint d = t, r = 0; d < p.D && r < 2; d += WG, ++r) grad[p.g_off + row * p.D + d] = p.scale * (r == 0 ? acc0 : acc1);
#else
  float inv = l > 0.0 ? 1.0 / l : 0.0;
  for (uint d = t, r = 0; d < p.Dv && r < 2; d += WG, ++r) o[p.o_off + row * p.Dv + d] = (r == 0 ? acc0 : acc1) * inv;
  if (t == 0) lse[p.l_off + row] = l > 0.0 ? m + log(l) : NEG_INF;
#endif
#else  // BWD_DKV
  uint row = wg_row();
  if (row >= p.B * p.Hk * p.Tk) return;
  uint j = row % p.Tk, hk = (row / p.Tk) % p.Hk, b = row / (p.Tk * p.Hk);
  uint kbase = p.k_off + b * p.kb + hk * p.kh + j * p.kt, vbase = p.v_off + b * p.vb + hk * p.vh + j * p.vt;
  for (uint d = t; d < p.D; d += WG) row_s[d] = LK(kbase + d);
  for (uint d = t; d < p.Dv; d += WG) row_t[d] = LV(vbase + d);
  barrier();
  float dk0 = 0.0, dk1 = 0.0, dv0 = 0.0, dv1 = 0.0;
  uint group = p.H / p.Hk;
  for (uint h = hk * group; h < (hk + 1) * group; ++h) {
    for (uint i0 = 0; i0 < p.Tq; i0 += WG) {
      uint i = i0 + t;
      float pij = 0.0, dsij = 0.0;
      if (i < p.Tq && visible(b, i, j)) {
        uint qr = (b * p.H + h) * p.Tq + i;
        float l_i = lse[p.l_off + qr];
        if (l_i != NEG_INF) {
          uint qbase = p.q_off + b * p.qb + h * p.qh + i * p.qt;
          float dot_ = 0.0;
          for (uint d = 0; d < p.D; ++d) dot_ += LQ(qbase + d) * row_s[d];
          pij = exp(dot_ * p.scale - l_i);
          float dp = 0.0;
          for (uint d = 0; d < p.Dv; ++d) dp += LDO(p.d_off + qr * p.Dv + d) * row_t[d];
          dsij = pij * (dp - delta_[p.delta_off + qr]);
        }
      }
      barrier();
      ps[t] = pij;
      ds[t] = dsij;
      barrier();
      uint n = min(WG, p.Tq - i0);
      for (uint d = t, r = 0; d < p.Dv && r < 2; d += WG, ++r) {
        float a = 0.0;
        for (uint ii = 0; ii < n; ++ii) a += ps[ii] * LDO(p.d_off + ((b * p.H + h) * p.Tq + i0 + ii) * p.Dv + d);
        if (r == 0) dv0 += a; else dv1 += a;
      }
      for (uint d = t, r = 0; d < p.D && r < 2; d += WG, ++r) {
        float a = 0.0;
        for (uint ii = 0; ii < n; ++ii) a += ds[ii] * LQ(p.q_off + b * p.qb + h * p.qh + (i0 + ii) * p.qt + d);
        if (r == 0) dk0 += a; else dk1 += a;
      }
    }
  }
  for (uint d = t, r = 0; d < p.D && r < 2; d += WG, ++r) grad[p.g_off + row * p.D + d] = p.scale * (r == 0 ? dk0 : dk1);
  for (uint d = t, r = 0; d < p.Dv && r < 2; d += WG, ++r) grad2[p.g2_off + row * p.Dv + d] = r == 0 ? dv0 : dv1;
#endif
}
