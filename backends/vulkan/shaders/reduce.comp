#version 450
#extension GL_GOOGLE_include_directive : require
// out[r] = reduce over c of x[row r, column c]: rows are the kept dims, columns the reduced dims,
// both given as (shape, stride) lists, so any layout reduces without a copy. One workgroup per
// row (SERIAL: one invocation per row, for many short rows). -DOP_SUM (times scale: mean),
// -DOP_MAX, -DOP_MIN, -DOP_ARGMAX (one reduced dim, I64 out, first index on ties).
#include "common.glsl"
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
#ifdef OP_ARGMAX
layout(std430, binding = 1) writeonly buffer O { uvec2 o[]; };
#else
layout(std430, binding = 1) writeonly buffer O { float o[]; };
#endif
layout(push_constant) uniform Push {
  uint nrows, ncols, kd, rd, x_off, o_off;
  float scale;
  uint pad;
  uint kshape[6], kstride[6];
  uint rshape[6], rstride[6];
} p;

uint row_base(uint r) {
  uint off = p.x_off;
  for (int d = int(p.kd) - 1; d >= 0; --d) {
    off += (r % p.kshape[d]) * p.kstride[d];
    r /= p.kshape[d];
  }
  return off;
}
uint col_off(uint c) {
  uint off = 0;
  for (int d = int(p.rd) - 1; d >= 0; --d) {
    off += (c % p.rshape[d]) * p.rstride[d];
    c /= p.rshape[d];
  }
  return off;
}

#if defined(OP_SUM)
#define IDENT 0.0
#define COMBINE(a, b) ((a) + (b))
#elif defined(OP_MAX) || defined(OP_ARGMAX)
#define IDENT uintBitsToFloat(0xff800000u)
#define COMBINE(a, b) max(a, b)
#elif defined(OP_MIN)
#define IDENT uintBitsToFloat(0x7f800000u)
#define COMBINE(a, b) min(a, b)
#endif

#ifdef OP_ARGMAX
shared uint idx_red[WG];
#endif

void main() {
#ifdef SERIAL
  uint r = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
  if (r >= p.nrows) return;
  uint base = row_base(r);
#ifdef OP_ARGMAX
  float best = x[base];
  uint bi = 0;
  for (uint c = 1; c < p.ncols; ++c) {
    float v = x[base + col_off(c)];
    if (v > best) { best = v; bi = c; }
  }
  o[p.o_off + r] = uvec2(bi, 0u);
#else
  float acc = IDENT;
  for (uint c = 0; c < p.ncols; ++c) acc = COMBINE(acc, x[base + col_off(c)]);
#ifdef OP_SUM
  acc *= p.scale;
#endif
  o[p.o_off + r] = acc;
#endif
#else  // one workgroup per row
  uint r = wg_row();
  if (r >= p.nrows) return;
  uint t = gl_LocalInvocationID.x;
  uint base = row_base(r);
#ifdef OP_ARGMAX
  float best = IDENT;
  uint bi = 0xffffffffu;
  for (uint c = t; c < p.ncols; c += WG) {
    float v = x[base + col_off(c)];
    if (bi == 0xffffffffu || v > best) { best = v; bi = c; }
  }
  rf_red[t] = best;
  idx_red[t] = bi;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (t < s) {
      float v = rf_red[t + s];
      uint j = idx_red[t + s];
      if (j != 0xffffffffu && (idx_red[t] == 0xffffffffu || v > rf_red[t] || (v == rf_red[t] && j < idx_red[t]))) {
        rf_red[t] = v;
        idx_red[t] = j;
      }
    }
    barrier();
  }
  if (t == 0) o[p.o_off + r] = uvec2(idx_red[0] == 0xffffffffu ? 0u : idx_red[0], 0u);
#else
  float acc = IDENT;
  for (uint c = t; c < p.ncols; c += WG) acc = COMBINE(acc, x[base + col_off(c)]);
#ifdef OP_SUM
  acc = wg_sum(acc) * p.scale;
#elif defined(OP_MAX)
  acc = wg_max(acc);
#else
  acc = -wg_max(-acc);
#endif
  if (t == 0) o[p.o_off + r] = acc;
#endif
#endif
}
