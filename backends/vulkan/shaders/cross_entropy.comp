#version 450
#extension GL_GOOGLE_include_directive : require
// Cross-entropy over dense logits (N, C) with I64 (or -DI32 ids) targets, one workgroup per row.
// Forward: lse and loss = lse - logit[target] (0 where target == ignore_index). -DBWD:
// dlogits = dloss * (softmax - onehot), 0 on ignored rows. A target outside [0, C) sets err[0].
#include "common.glsl"
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer T { uvec2 tgt[]; };
layout(std430, binding = 2) buffer L { float lse[]; };
layout(std430, binding = 3) buffer O { float o[]; };     // loss (fwd) or dloss (bwd)
layout(std430, binding = 4) writeonly buffer G { float g[]; };  // dlogits (bwd)
layout(std430, binding = 5) buffer E { uint err[]; };
layout(push_constant) uniform Push { uint N, C, x_off, t_off, l_off, o_off, g_off, ignore_lo, ignore_hi; } p;

void main() {
  uint r = wg_row();
  if (r >= p.N) return;
  uint t = gl_LocalInvocationID.x;
  uvec2 tv = tgt[p.t_off + r];
  bool ignored = tv == uvec2(p.ignore_lo, p.ignore_hi);
  int target = int(tv.x);
  bool bad = !ignored && (target < 0 || uint(target) >= p.C || !(tv.y == 0u));
  if (bad && t == 0) err[0] = 1u;
  uint xb = p.x_off + r * p.C;
#ifndef BWD
  float m = uintBitsToFloat(0xff800000u);
  for (uint c = t; c < p.C; c += WG) m = max(m, x[xb + c]);
  m = wg_max(m);
  float s = 0.0;
  for (uint c = t; c < p.C; c += WG) s += exp(x[xb + c] - m);
  float l = m + log(wg_sum(s));
  if (t == 0) {
    lse[p.l_off + r] = l;
    o[p.o_off + r] = (ignored || bad) ? 0.0 : l - x[xb + uint(target)];
  }
#else
  uint gb = p.g_off + r * p.C;
  float l = lse[p.l_off + r], dl = (ignored || bad) ? 0.0 : o[p.o_off + r];
  for (uint c = t; c < p.C; c += WG) {
    float v = exp(x[xb + c] - l);
    if (int(c) == target) v -= 1.0;
    g[gb + c] = dl * v;
  }
#endif
}
