#version 450
// out[i] = the bit pattern of one value, for element sizes 1, 2, 4 and 8 bytes (any dtype).
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer D8 { uint8_t d8[]; };
layout(std430, binding = 0) writeonly buffer D16 { uint16_t d16[]; };
layout(std430, binding = 0) writeonly buffer D32 { uint d32[]; };
layout(std430, binding = 0) writeonly buffer D64 { uvec2 d64[]; };
layout(push_constant) uniform Push { uint n, off, size, lo, hi; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    if (p.size == 4) d32[p.off + i] = p.lo;
    else if (p.size == 8) d64[p.off + i] = uvec2(p.lo, p.hi);
    else if (p.size == 2) d16[p.off + i] = uint16_t(p.lo);
    else d8[p.off + i] = uint8_t(p.lo);
  }
}
