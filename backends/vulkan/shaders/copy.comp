#version 450
// out[j] = convert(src[i]) between any two dtypes, both sides strided (at most 6 collapsed dims).
// Buffers are seen at 8, 16, 32 and 64 bits; the dtype codes are engine/dtype.h's enum.
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S8 { uint8_t s8[]; };
layout(std430, binding = 0) readonly buffer S16 { uint16_t s16[]; };
layout(std430, binding = 0) readonly buffer S32 { uint s32[]; };
layout(std430, binding = 0) readonly buffer S64 { uvec2 s64[]; };
layout(std430, binding = 1) writeonly buffer D8 { uint8_t d8[]; };
layout(std430, binding = 1) writeonly buffer D16 { uint16_t d16[]; };
layout(std430, binding = 1) writeonly buffer D32 { uint d32[]; };
layout(std430, binding = 1) writeonly buffer D64 { uvec2 d64[]; };
layout(push_constant) uniform Push {
  uint n, ndim, s_off, d_off, s_type, d_type, pad0, pad1;
  uint shape[6];
  uint ss[6];
  uint ds[6];
} p;

const uint F32 = 0, F64 = 1, F16 = 2, BF16 = 3, I32 = 4, I64 = 5, BOOL = 6;

// Exact, subnormals included (unpackHalf2x16 may flush them).
float half_to_float(uint h) {
  uint sgn = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return uintBitsToFloat(sgn | 0x7f800000u | (m << 13));
  if (e == 0u) {
    float v = float(m) * 5.9604644775390625e-8;  // m * 2^-24
    return sgn != 0u ? -v : v;
  }
  return uintBitsToFloat(sgn | ((e + 112u) << 23) | (m << 13));
}
// Round to nearest even, as engine/dtype.h does.
uint float_to_half(float f) {
  uint u = floatBitsToUint(f);
  uint sgn = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sgn | 0x7e00u | ((a >> 13) & 0x3ffu);
  if (a >= 0x477ff000u) return sgn | 0x7c00u;
  if (a < 0x38800000u) {
    if (a < 0x33000000u) return sgn;
    uint mant = (a & 0x7fffffu) | 0x800000u;
    uint shift = 126u - (a >> 23);
    uint val = mant >> shift;
    uint rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (val & 1u) != 0u)) val += 1u;
    return sgn | val;
  }
  uint r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
  return sgn | (r >> 13);
}
uint float_to_bf16(float f) {
  uint u = floatBitsToUint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

bool is_float(uint t) { return t == F32 || t == F16 || t == BF16; }

float read_float(uint i) {
  switch (p.s_type) {
    case F32: return uintBitsToFloat(s32[i]);
    case F16: return half_to_float(uint(s16[i]));
    case BF16: return uintBitsToFloat(uint(s16[i]) << 16);
    case I32: return float(int(s32[i]));
    case I64: {
      uvec2 w = s64[i];
      if (w.y == (int(w.x) < 0 ? 0xffffffffu : 0u)) return float(int(w.x));  // fits in 32 bits: one rounding
      return float(int(w.y)) * 4294967296.0 + float(w.x);
    }
    default: return float(uint(s8[i]));
  }
}
int read_int(uint i) {  // integer -> integer copies keep 32 bits (ids, masks)
  switch (p.s_type) {
    case I32: return int(s32[i]);
    case I64: return int(s64[i].x);
    default: return int(uint(s8[i]));
  }
}

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    uint rem = i, si = p.s_off, di = p.d_off;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
      uint c = rem % p.shape[d];
      rem /= p.shape[d];
      si += c * p.ss[d];
      di += c * p.ds[d];
    }
    if (p.s_type == p.d_type) {  // bit copy
      switch (p.s_type) {
        case F32: case I32: d32[di] = s32[si]; break;
        case I64: case F64: d64[di] = s64[si]; break;
        case F16: case BF16: d16[di] = s16[si]; break;
        default: d8[di] = s8[si]; break;
      }
    } else if (!is_float(p.s_type) && !is_float(p.d_type)) {
      int v = read_int(si);
      switch (p.d_type) {
        case I32: d32[di] = uint(v); break;
        case I64: d64[di] = uvec2(uint(v), v < 0 ? 0xffffffffu : 0u); break;
        default: d8[di] = uint8_t(v != 0 ? 1 : 0); break;
      }
    } else {
      float v = read_float(si);
      switch (p.d_type) {
        case F32: d32[di] = floatBitsToUint(v); break;
        case F16: d16[di] = uint16_t(float_to_half(v)); break;
        case BF16: d16[di] = uint16_t(float_to_bf16(v)); break;
        case I32: d32[di] = uint(int(v)); break;
        case I64: { int iv = int(v); d64[di] = uvec2(uint(iv), iv < 0 ? 0xffffffffu : 0u); break; }
        default: d8[di] = uint8_t(v != 0.0 ? 1 : 0); break;
      }
    }
  }
}
