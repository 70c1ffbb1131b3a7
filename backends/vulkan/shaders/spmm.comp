#version 450
#extension GL_GOOGLE_include_directive : require
// y (rows, n) = S @ x (cols, n), or y += S @ x (accumulate); S in CSR (I32 row_ptr, I32 col_idx,
// f32 values). A workgroup of 256 is R = 256 >> lshift rows by C = 1 << lshift lanes; lane c of
// row i owns columns j0 + c + q*C (q < qn) and walks the row's entries in ascending order, so
// every output is summed in one fixed order by one invocation (deterministic, no atomics). The
// lanes of a row read one contiguous run of an x row per entry (coalesced) and the same col/value
// (a broadcast). Blocks are numbered row block fastest so concurrent workgroups share x columns in
// cache. Lavapipe (Mesa 22) cuts loops at 65,535 iterations: rows must hold fewer entries.
#include "common.glsl"
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer RP { int row_ptr[]; };
layout(std430, binding = 1) readonly buffer CI { int col_idx[]; };
layout(std430, binding = 2) readonly buffer V { float vals[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) buffer Y { float y[]; };
layout(std430, binding = 5) buffer E { uint err[]; };
layout(push_constant) uniform Push {
  uint rows, cols, n, nnz;
  uint rp_off, ci_off, v_off, x_off, y_off;
  uint lshift;  // log2 of lanes per row (C), 0..5
  uint qn;      // columns per lane, 1..4
  uint nrb;     // row blocks: ceil(rows / R)
  uint accumulate;
} p;

const uint QMAX = 4;

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint C = 1u << p.lshift, R = WG >> p.lshift;
  const uint blk = wg_row();
  const uint i = (blk % p.nrb) * R + (t >> p.lshift);
  const uint j0 = (blk / p.nrb) * C * p.qn + (t & (C - 1u));
  if (i >= p.rows || j0 >= p.n) return;  // no barriers below: idle lanes may leave
  // Clamped so a corrupt row_ptr cannot read past col_idx/values (patterns are validated on the host).
  const uint e0 = min(uint(row_ptr[p.rp_off + i]), p.nnz), e1 = min(uint(row_ptr[p.rp_off + i + 1u]), p.nnz);
  float acc[QMAX];
  uint jq[QMAX];
  [[unroll]] for (uint q = 0; q < QMAX; ++q) {
    acc[q] = 0.0;
    jq[q] = min(j0 + q * C, p.n - 1u);  // lanes past n read a valid column and drop it
  }
  for (uint e = e0; e < e1; ++e) {
    const uint c = uint(col_idx[p.ci_off + e]);
    if (c >= p.cols) {
      err[0] = 1u;
      continue;
    }
    const float v = vals[p.v_off + e];
    const uint base = p.x_off + c * p.n;
    [[unroll]] for (uint q = 0; q < QMAX; ++q)
      if (q < p.qn) acc[q] += v * x[base + jq[q]];
  }
  const uint ybase = p.y_off + i * p.n;
  [[unroll]] for (uint q = 0; q < QMAX; ++q) {
    const uint j = j0 + q * C;
    if (q < p.qn && j < p.n) y[ybase + j] = p.accumulate != 0u ? y[ybase + j] + acc[q] : acc[q];
  }
}
