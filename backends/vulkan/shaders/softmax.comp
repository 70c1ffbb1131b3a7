#version 450
#extension GL_GOOGLE_include_directive : require
// Softmax / log-softmax over the last axis of a dense (rows, C) tensor, one workgroup per row.
// -DBWD: dx from the saved output y and dy. -DLOG: the log variant.
#include "common.glsl"
layout(local_size_x = WG) in;
#ifndef BWD
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Push { uint rows, C, x_off, y_off; } p;
#else
layout(std430, binding = 0) readonly buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) writeonly buffer DX { float dx[]; };
layout(push_constant) uniform Push { uint rows, C, y_off, dy_off, dx_off; } p;
#endif

void main() {
  uint r = wg_row();
  if (r >= p.rows) return;
  uint t = gl_LocalInvocationID.x;
#ifndef BWD
  uint xb = p.x_off + r * p.C, yb = p.y_off + r * p.C;
  float m = uintBitsToFloat(0xff800000u);
  for (uint c = t; c < p.C; c += WG) m = max(m, x[xb + c]);
  m = wg_max(m);
  float s = 0.0;
  for (uint c = t; c < p.C; c += WG) s += exp(x[xb + c] - m);
  s = wg_sum(s);
#ifdef LOG
  float ls = m + log(s);
  for (uint c = t; c < p.C; c += WG) y[yb + c] = x[xb + c] - ls;
#else
  float inv = 1.0 / s;
  for (uint c = t; c < p.C; c += WG) y[yb + c] = exp(x[xb + c] - m) * inv;
#endif
#else
  uint yb = p.y_off + r * p.C, gb = p.dy_off + r * p.C, db = p.dx_off + r * p.C;
  float s = 0.0;
#ifdef LOG
  for (uint c = t; c < p.C; c += WG) s += dy[gb + c];
  s = wg_sum(s);
  for (uint c = t; c < p.C; c += WG) dx[db + c] = dy[gb + c] - exp(y[yb + c]) * s;
#else
  for (uint c = t; c < p.C; c += WG) s += dy[gb + c] * y[yb + c];
  s = wg_sum(s);
  for (uint c = t; c < p.C; c += WG) dx[db + c] = y[yb + c] * (dy[gb + c] - s);
#endif
#endif
}
