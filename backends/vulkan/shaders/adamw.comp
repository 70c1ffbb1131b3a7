#version 450
// In-place AdamW on contiguous p, m, v with gradient g; c1, c2 are the bias corrections the host
// computes in double exactly as the CPU backend does.
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer P { float pr[]; };
layout(std430, binding = 1) readonly buffer G { float g[]; };
layout(std430, binding = 2) buffer M { float m[]; };
layout(std430, binding = 3) buffer V { float v[]; };
layout(push_constant) uniform Push { uint n, p_off, g_off, m_off, v_off; float lr, b1, b2, eps, wd, c1, c2; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    float w = pr[p.p_off + i], gi = g[p.g_off + i];
    w -= p.lr * p.wd * w;
    float mi = p.b1 * m[p.m_off + i] + (1.0 - p.b1) * gi;
    float vi = p.b2 * v[p.v_off + i] + (1.0 - p.b2) * gi * gi;
    m[p.m_off + i] = mi;
    v[p.v_off + i] = vi;
    pr[p.p_off + i] = w - p.lr * (mi * p.c1) / (sqrt(vi * p.c2) + p.eps);
  }
}
