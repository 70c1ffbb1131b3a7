#version 450
#extension GL_GOOGLE_include_directive : require
// LayerNorm (or -DRMS: RMSNorm) over the last axis of dense (rows, C), one workgroup per row.
//   default: forward y, saving mean (layer norm only) and rstd per row
//   -DBWD_DX: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w (RMS: no mean(g) term)
//   -DBWD_DW: one invocation per column, dw += sum_rows dy * xhat, db += sum_rows dy (deterministic)
#include "common.glsl"
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) buffer B { float b[]; };       // bias (fwd) or db (bwd); unused when !has_b
layout(std430, binding = 3) buffer M { float mean_[]; };   // unused for RMS
layout(std430, binding = 4) buffer R { float rstd[]; };
layout(std430, binding = 5) buffer Y { float y[]; };       // y (fwd) or dy (bwd)
layout(std430, binding = 6) buffer D { float d[]; };       // dx or dw (bwd)
layout(push_constant) uniform Push {
  uint rows, C, x_off, w_off, b_off, m_off, r_off, y_off, d_off, has_b;
  float eps;
} p;

void main() {
#ifdef BWD_DW
  uint c = gl_GlobalInvocationID.x;
  if (c >= p.C) return;
  float dw = 0.0, db = 0.0;
  for (uint r = 0; r < p.rows; ++r) {
    float g = y[p.y_off + r * p.C + c];
#ifdef RMS
    float xh = x[p.x_off + r * p.C + c] * rstd[p.r_off + r];
#else
    float xh = (x[p.x_off + r * p.C + c] - mean_[p.m_off + r]) * rstd[p.r_off + r];
#endif
    dw += g * xh;
    db += g;
  }
  d[p.d_off + c] += dw;
  if (p.has_b != 0u) b[p.b_off + c] += db;
#else
  uint r = wg_row();
  if (r >= p.rows) return;
  uint t = gl_LocalInvocationID.x;
  uint xb = p.x_off + r * p.C;
#ifndef BWD_DX
  float mu = 0.0;
#ifndef RMS
  for (uint c = t; c < p.C; c += WG) mu += x[xb + c];
  mu = wg_sum(mu) / float(p.C);
#endif
  float v = 0.0;
  for (uint c = t; c < p.C; c += WG) {
    float e = x[xb + c] - mu;
    v += e * e;
  }
  float rs = inversesqrt(wg_sum(v) / float(p.C) + p.eps);
  uint yb = p.y_off + r * p.C;
  for (uint c = t; c < p.C; c += WG) {
    float o = (x[xb + c] - mu) * rs * w[p.w_off + c];
    if (p.has_b != 0u) o += b[p.b_off + c];
    y[yb + c] = o;
  }
  if (t == 0) {
#ifndef RMS
    mean_[p.m_off + r] = mu;
#endif
    rstd[p.r_off + r] = rs;
  }
#else
  uint gb = p.y_off + r * p.C;
  float rs = rstd[p.r_off + r];
#ifdef RMS
  float mu = 0.0;
#else
  float mu = mean_[p.m_off + r];
#endif
  float sg = 0.0, sgx = 0.0;
  for (uint c = t; c < p.C; c += WG) {
    float g = y[gb + c] * w[p.w_off + c];
    sg += g;
    sgx += g * (x[xb + c] - mu) * rs;
  }
  sg = wg_sum(sg) / float(p.C);
  sgx = wg_sum(sgx) / float(p.C);
#ifdef RMS
  sg = 0.0;
#endif
  uint db_ = p.d_off + r * p.C;
  for (uint c = t; c < p.C; c += WG) {
    float g = y[gb + c] * w[p.w_off + c];
    d[db_ + c] = rs * (g - sg - (x[xb + c] - mu) * rs * sgx);
  }
#endif
#endif
}
