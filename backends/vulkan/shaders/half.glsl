// 16-bit floats stored as uint16_t and widened exactly to f32 in the shader (needs only 16-bit
// storage, not shaderFloat16): bf16 is the top half of an f32; f16 is rebuilt field by field.
#ifndef RF_HALF_GLSL
#define RF_HALF_GLSL
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }
float f16_to_f32(uint h) {
  uint sgn = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return uintBitsToFloat(sgn | 0x7f800000u | (m << 13));
  if (e == 0u) return (sgn != 0u ? -1.0 : 1.0) * float(m) * 5.9604644775390625e-8;  // subnormal: m * 2^-24
  return uintBitsToFloat(sgn | ((e + 112u) << 23) | (m << 13));
}
#endif
