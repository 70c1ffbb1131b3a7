// Shared by qmatmul.comp and dequant.comp: the push block and the decode of one element of a
// quantized weight (engine/quant_weight.h). The includer declares `codes` (uint words: the byte
// container, little-endian) and `qscales` (f32: 4-bit absmax per block, int8 SCB per row) first.
#ifndef RF_QUANT_GLSL
#define RF_QUANT_GLSL

// Mirrors QuantPush in vk_ops_quant.cpp (128 bytes, the push-constant size every device has).
layout(push_constant) uniform Push {
  uint M, N, K;     // qmatmul: out (M, N) = x (M, K) @ B (K, N); dequant: N = rows * cols
  uint cols;        // W's columns: element (r, c) is e = r * cols + c
  uint x_off, o_off, c_off, s_off;
  uint type;        // 0 int8 (row-wise SCB), 1 4-bit (table + blockwise absmax)
  uint lbs;         // log2 of the 4-bit blocksize: blocks run over the flat index e
  uint trans;       // 0: B(k, n) = W[n, k] (x @ W^T); 1: B(k, n) = W[k, n] (x @ W)
  uint bf16;        // compute in bf16: both operands rounded to bf16 before the product
  uint m_tile0;     // first row tile of this dispatch (more than 65,535 row tiles take several)
  float beta;       // out = result + beta * out (0 or 1); out is not read when 0
  float inv127;     // 1.0f / 127.0f as the host rounds it
  uint pad;
  float table[16];  // 4-bit code values (NF4 or FP4), in code order
} p;

// Value of flat element e (in row `row` of W) in f32, as bitsandbytes computes it: (q * SCB) *
// (1/127) left to right for int8, table[code] * absmax[block] for 4-bit. `precise` keeps the
// compiler from reassociating them, so the values equal the CPU's bit for bit.
float qvalue(uint e, uint row) {
  precise float v;
  if (p.type == 0u) {
    const uint w = codes[p.c_off + (e >> 2)];
    const int q = int(w << (24u - 8u * (e & 3u))) >> 24;  // byte e & 3, sign-extended
    v = (float(q) * qscales[p.s_off + row]) * p.inv127;
  } else {
    // Element 2i is the high nibble of byte i, 2i + 1 its low nibble.
    const uint b = (codes[p.c_off + (e >> 3)] >> (8u * ((e >> 1) & 3u))) & 0xffu;
    const uint c = (e & 1u) == 0u ? (b >> 4) : (b & 15u);
    v = p.table[c] * qscales[p.s_off + (e >> p.lbs)];
  }
  return v;
}

// Round to nearest even bf16 and back to f32, as rf::f32_to_bf16 (engine/dtype.h) does.
float round_bf16(float f) {
  uint u = floatBitsToUint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uintBitsToFloat((u & 0xffff0000u) | 0x00400000u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uintBitsToFloat(u & 0xffff0000u);
}

#endif
