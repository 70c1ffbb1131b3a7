#version 450
// Philox4x32-10 exactly as engine/rng.h: element i uses counter (offset + i) and key seed, so the
// CPU and every GPU draw the same numbers. Uniform: a + scale*u; Normal: a + scale*z.
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer O { float o[]; };
layout(push_constant) uniform Push {
  uint n, o_off, seed_lo, seed_hi, off_lo, off_hi, normal;
  float a, scale;
} p;

uvec4 philox(uvec4 c, uvec2 k) {
  const uint M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint hi0, lo0, hi1, lo1;
    umulExtended(M0, c.x, hi0, lo0);
    umulExtended(M1, c.z, hi1, lo1);
    c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k += uvec2(W0, W1);
  }
  return c;
}

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    uint carry;
    uint lo = uaddCarry(p.off_lo, i, carry);
    uvec4 w = philox(uvec4(lo, p.off_hi + carry, 0u, 0u), uvec2(p.seed_lo, p.seed_hi));
    precise float v;
    if (p.normal != 0u) {
      float u1 = float((w.x >> 8) + 1u) * (1.0 / 16777216.0);
      float u2 = float(w.y >> 8) * (1.0 / 16777216.0);
      v = sqrt(-2.0 * log(u1)) * cos(6.28318530717958647692 * u2);
    } else {
      v = float(w.x >> 8) * (1.0 / 16777216.0);
    }
    precise float r = p.a + p.scale * v;
    o[p.o_off + i] = r;
  }
}
