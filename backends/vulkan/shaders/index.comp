#version 450
// Indexing along one axis, ids I64 or I32 (push flag). Ids outside [0, len) set err[0] and the
// element is skipped (the backend turns err into an exception when it next syncs).
//   -DSELECT:  out (outer, n, inner) = x (outer, len, inner)[:, ids, :]          one thread per out element
//   -DADD:     out (outer, len, inner)[:, ids[i], :] += src (outer, n, inner)[:, i, :]
//              one thread per (outer, inner) column walking i in order: deterministic, no atomics
//   -DGATHER:  out[idx coords] = x[coords with axis replaced by idx]             (torch.gather)
//   -DSCATTER: out[coords with axis replaced by idx] += src[idx coords]         (torch.scatter_add)
//              one thread per idx coordinate outside the axis, walking the axis in order
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };      // x or src
layout(std430, binding = 1) readonly buffer I32 { int ids32[]; };
layout(std430, binding = 1) readonly buffer I64 { uvec2 ids64[]; };
layout(std430, binding = 2) buffer O { float o[]; };
layout(std430, binding = 3) buffer E { uint err[]; };
#if defined(SELECT) || defined(ADD)
layout(push_constant) uniform Push { uint outer, n, inner, len, x_off, i_off, o_off, ids64_; } p;
#else
layout(push_constant) uniform Push {
  uint n, ndim, axis, len, x_off, i_off, o_off, ids64_;
  uint shape[6];  // idx shape
  uint is[6];     // idx strides
  uint xs[6];     // x (gather) or src (scatter) strides
  uint os[6];     // out strides
} p;
#endif

int read_id(uint i) {
  if (p.ids64_ == 0u) return ids32[p.i_off + i];
  uvec2 w = ids64[p.i_off + i];
  int lo = int(w.x);
  return (w.y == (lo < 0 ? 0xffffffffu : 0u)) ? lo : -1;
}
bool ok(int id) {
  if (id >= 0 && uint(id) < p.len) return true;
  err[0] = 1u;
  return false;
}

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
#if defined(SELECT)
  uint total = p.outer * p.n * p.inner;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint j = e % p.inner, i = (e / p.inner) % p.n, a = e / (p.inner * p.n);
    int id = read_id(i);
    o[p.o_off + e] = ok(id) ? x[p.x_off + (a * p.len + uint(id)) * p.inner + j] : 0.0;
  }
#elif defined(ADD)
  uint total = p.outer * p.inner;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint j = e % p.inner, a = e / p.inner;
    for (uint i = 0; i < p.n; ++i) {
      int id = read_id(i);
      if (ok(id)) o[p.o_off + (a * p.len + uint(id)) * p.inner + j] += x[p.x_off + (a * p.n + i) * p.inner + j];
    }
  }
#else
  // n = number of idx elements (GATHER) or of idx columns outside the axis (SCATTER)
  for (uint e = gl_GlobalInvocationID.x; e < p.n; e += stride) {
    uint rem = e, ii = 0, xi = p.x_off, oi = p.o_off;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
#ifdef SCATTER
      if (uint(d) == p.axis) continue;
#endif
      uint c = rem % p.shape[d];
      rem /= p.shape[d];
      ii += c * p.is[d];
      oi += c * p.os[d];
      if (uint(d) != p.axis) xi += c * p.xs[d];
    }
#ifdef GATHER
    int id = read_id(ii);
    o[oi] = ok(id) ? x[xi + uint(id) * p.xs[p.axis]] : 0.0;
#else
    for (uint k = 0; k < p.shape[p.axis]; ++k) {
      int id = read_id(ii + k * p.is[p.axis]);
      if (ok(id)) o[oi + uint(id) * p.os[p.axis]] += x[xi + k * p.xs[p.axis]];  // xs[axis] = src stride
    }
#endif
  }
#endif
}
