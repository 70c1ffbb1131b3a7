#version 450
// o[i] = cond ? a : b with all three pre-broadcast through strides; o contiguous.
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer C { uint8_t c[]; };
layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform Push {
  uint n, ndim, c_off, a_off, b_off, o_off;
  uint shape[6];
  uint cs[6];
  uint as_[6];
  uint bs[6];
} p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    uint rem = i, ic = p.c_off, ia = p.a_off, ib = p.b_off;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
      uint k = rem % p.shape[d];
      rem /= p.shape[d];
      ic += k * p.cs[d];
      ia += k * p.as_[d];
      ib += k * p.bs[d];
    }
    o[p.o_off + i] = uint(c[ic]) != 0u ? a[ia] : b[ib];
  }
}
