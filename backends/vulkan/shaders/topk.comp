#version 450
// Top-k along the last axis of dense (rows, C) by ranking: element i's rank is the number of
// elements that sort before it (larger, or equal with a lower index, as the CPU backend orders);
// ranks below k are written in place. One invocation per element; O(C) work each.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer V { float vals[]; };
layout(std430, binding = 2) writeonly buffer I { uvec2 idx[]; };
layout(push_constant) uniform Push { uint rows, C, k, x_off, v_off, i_off; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < p.rows * p.C; e += stride) {
    uint r = e / p.C, i = e % p.C, base = p.x_off + r * p.C;
    float v = x[base + i];
    uint rank = 0;
    for (uint j = 0; j < p.C && rank < p.k; ++j) {
      float u = x[base + j];
      if (u > v || (u == v && j < i)) ++rank;
    }
    if (rank < p.k) {
      vals[p.v_off + r * p.k + rank] = v;
      idx[p.i_off + r * p.k + rank] = uvec2(i, 0u);
    }
  }
}
