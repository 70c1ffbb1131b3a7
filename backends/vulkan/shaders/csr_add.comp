#version 450
// d (rows, cols) [row(e), col(e)] += alpha * values[e] for every stored entry e of a CSR pattern.
// One invocation per entry (grid-stride), its row found by binary search in row_ptr. A pattern
// stores each (row, col) once, so invocations write disjoint elements: no races, no atomics.
// Columns outside [0, cols) set err[0] and are skipped rather than written out of bounds.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer RP { int row_ptr[]; };
layout(std430, binding = 1) readonly buffer CI { int col_idx[]; };
layout(std430, binding = 2) readonly buffer V { float vals[]; };
layout(std430, binding = 3) buffer D { float d[]; };
layout(std430, binding = 4) buffer E { uint err[]; };
layout(push_constant) uniform Push {
  uint rows, cols, nnz, rp_off, ci_off, v_off, d_off;
  float alpha;
} p;

// The row holding entry e: the last i < rows with row_ptr[i] <= e (empty rows are skipped).
uint row_of(uint e) {
  uint lo = 0, hi = p.rows;
  while (hi - lo > 1u) {
    const uint mid = (lo + hi) >> 1;
    if (uint(row_ptr[p.rp_off + mid]) <= e) lo = mid; else hi = mid;
  }
  return lo;
}

void main() {
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < p.nnz; e += stride) {
    const uint c = uint(col_idx[p.ci_off + e]);
    if (c >= p.cols) {
      err[0] = 1u;
      continue;
    }
    const uint at = p.d_off + row_of(e) * p.cols + c;
    d[at] += p.alpha * vals[p.v_off + e];
  }
}
