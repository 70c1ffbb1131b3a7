#version 450
#extension GL_GOOGLE_include_directive : require
// out[e] = dot(a[row(e), :], b[col(e), :]) for the stored entries e of a CSR pattern; a (rows, k),
// b (cols, k) f32. A workgroup of 256 takes 8 consecutive entries, one per group of G = 32 lanes:
// lane l sums k = l, l + 32, ... (four interleaved partial sums, combined in a fixed order), then the
// group's 32 partials are reduced in a fixed order: a shared-memory tree, or (-DSUBGROUP, picked at
// run time where the device has subgroup arithmetic) subgroupAdd plus the per-subgroup sums in
// order. Deterministic either way, no atomics. Entries are flat, so long and empty rows balance;
// each group finds its row by binary search in row_ptr. Lavapipe (Mesa 22) cuts loops at 65,535
// iterations: k must stay under about 8M (k / 128 iterations per lane).
#include "common.glsl"
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer RP { int row_ptr[]; };
layout(std430, binding = 1) readonly buffer CI { int col_idx[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };
layout(std430, binding = 4) writeonly buffer O { float o[]; };
layout(std430, binding = 5) buffer E { uint err[]; };
layout(push_constant) uniform Push {
  uint rows, cols, k, nnz;
  uint rp_off, ci_off, a_off, b_off, o_off;
} p;

const uint G = 32, EPW = WG / G;  // lanes per entry, entries per workgroup

// The row holding entry e: the last i < rows with row_ptr[i] <= e (empty rows are skipped).
uint row_of(uint e) {
  uint lo = 0, hi = p.rows;
  while (hi - lo > 1u) {
    const uint mid = (lo + hi) >> 1;
    if (uint(row_ptr[p.rp_off + mid]) <= e) lo = mid; else hi = mid;
  }
  return lo;
}

// Fixed-order tree over each group's 32 partials in rf_red (v = group * G + lane).
float group_tree(uint v, float s) {
  const uint l = v % G;
  rf_red[v] = s;
  barrier();
  [[unroll]] for (uint h = G / 2; h > 0; h >>= 1) {
    if (l < h) rf_red[v] += rf_red[v + h];
    barrier();
  }
  return rf_red[v - l];
}

void main() {
#ifdef SUBGROUP
  // Lane numbering from the subgroup ids, so each hardware subgroup lies inside one group.
  const uint v = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
  const uint v = gl_LocalInvocationID.x;
#endif
  const uint g = v / G, l = v % G;
  const uint e = wg_row() * EPW + g;
  bool valid = e < p.nnz;  // every lane stays for the barriers
  float s = 0.0;
  if (valid) {
    const uint i = row_of(e), c = uint(col_idx[p.ci_off + e]);
    if (c >= p.cols) {
      if (l == 0u) err[0] = 1u;
      valid = false;
    } else {
      const uint ab = p.a_off + i * p.k, bb = p.b_off + c * p.k;
      float s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
      uint t = l;
      for (; t + 3u * G < p.k; t += 4u * G) {
        s0 += a[ab + t] * b[bb + t];
        s1 += a[ab + t + G] * b[bb + t + G];
        s2 += a[ab + t + 2u * G] * b[bb + t + 2u * G];
        s3 += a[ab + t + 3u * G] * b[bb + t + 3u * G];
      }
      for (; t < p.k; t += G) s0 += a[ab + t] * b[bb + t];
      s = (s0 + s1) + (s2 + s3);
    }
  }
#ifdef SUBGROUP
  if (gl_SubgroupSize <= G) {  // subgroups nest in groups: add them, then their sums in order
    s = subgroupAdd(s);
    if (subgroupElect()) rf_red[gl_SubgroupID] = s;
    barrier();
    const uint per = G / gl_SubgroupSize;
    if (valid && l == 0u) {
      float sum = 0.0;
      for (uint j = 0; j < per; ++j) sum += rf_red[g * per + j];
      o[p.o_off + e] = sum;
    }
    return;
  }
#endif
  s = group_tree(v, s);
  if (valid && l == 0u) o[p.o_off + e] = s;
}
