#version 450
// o[i] = OP(a[ia], b[ib]) with NumPy broadcasting given as strides (0 on broadcast dims), one
// BinaryOp per variant (-DOP_<NAME>). Comparisons (-DCMP) write bytes 0/1 (bool tensors).
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
layout(local_size_x = 256) in;
#ifdef I64
// 64-bit integer comparisons: words (lo, hi), compared as signed hi then unsigned lo.
layout(std430, binding = 0) readonly buffer A { uvec2 a[]; };
layout(std430, binding = 1) readonly buffer B { uvec2 b[]; };
#else
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
#endif
#ifdef CMP
layout(std430, binding = 2) writeonly buffer O { uint8_t o[]; };
#else
layout(std430, binding = 2) writeonly buffer O { float o[]; };
#endif
layout(push_constant) uniform Push {
  uint n, ndim, a_off, b_off, o_off;
  uint shape[6];
  uint as_[6];
  uint bs[6];
  uint os[6];
} p;

#ifdef I64
bool op(uvec2 x, uvec2 y) {
  bool eq = x == y, lt = int(x.y) < int(y.y) || (x.y == y.y && x.x < y.x);
#if defined(OP_EQ)
  return eq;
#elif defined(OP_NE)
  return !eq;
#elif defined(OP_LT)
  return lt;
#elif defined(OP_LE)
  return lt || eq;
#elif defined(OP_GT)
  return !(lt || eq);
#elif defined(OP_GE)
  return !lt;
#else
#error "i64: comparisons only"
#endif
}
#elif defined(CMP)
bool op(float x, float y) {
#if defined(OP_EQ)
  return x == y;
#elif defined(OP_NE)
  return x != y;
#elif defined(OP_LT)
  return x < y;
#elif defined(OP_LE)
  return x <= y;
#elif defined(OP_GT)
  return x > y;
#elif defined(OP_GE)
  return x >= y;
#else
#error "define one comparison OP_<NAME>"
#endif
}
#else
float op(float x, float y) {
#if defined(OP_ADD)
  return x + y;
#elif defined(OP_SUB)
  return x - y;
#elif defined(OP_MUL)
  return x * y;
#elif defined(OP_DIV)
  return x / y;
#elif defined(OP_POW)
  return pow(x, y);
#elif defined(OP_MAX)
  return max(x, y);
#elif defined(OP_MIN)
  return min(x, y);
#else
#error "define one OP_<NAME>"
#endif
}
#endif

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    uint rem = i, ia = p.a_off, ib = p.b_off, io = p.o_off;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
      uint c = rem % p.shape[d];
      rem /= p.shape[d];
      ia += c * p.as_[d];
      ib += c * p.bs[d];
      io += c * p.os[d];
    }
#ifdef CMP
    o[io] = uint8_t(op(a[ia], b[ib]) ? 1 : 0);
#else
    o[io] = op(a[ia], b[ib]);
#endif
  }
}
