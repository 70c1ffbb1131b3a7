#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#ifdef X_BF16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
// out (M, N) = x (M, K) @ B (K, N) + beta * out with B a quantized weight W (rows, cols) decoded a
// tile at a time into shared memory: B = W^T (x @ W^T, N = rows, K = cols) or B = W when trans
// (x @ W, N = cols, K = rows). x contiguous f32 (or bf16 with -DX_BF16), out contiguous f32.
// The tiling follows matmul.comp at half the size (quantized layers often see few tokens):
// 64x64 output tiles, 256 threads with 4x4 register blocks, K in steps of 16 (so lavapipe's
// 65,535-iteration loop cut needs K > 1M), global loads of tile k+1 issued before the math on
// tile k. Shared memory: 2 * 16 * 65 floats = 8.1 KiB (lavapipe has 32).
layout(local_size_x = 256) in;
#ifdef X_BF16
layout(std430, binding = 0) readonly buffer X { uint16_t x[]; };
float load_x(uint i) { return uintBitsToFloat(uint(x[i]) << 16); }
#else
layout(std430, binding = 0) readonly buffer X { float x[]; };
float load_x(uint i) { return x[i]; }
#endif
layout(std430, binding = 1) readonly buffer Codes { uint codes[]; };
layout(std430, binding = 2) readonly buffer Scales { float qscales[]; };
layout(std430, binding = 3) buffer O { float o[]; };
#include "quant.glsl"

const uint BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
shared float As[BK][BM + 1];  // (BK, BM): x tile transposed; +1 spreads the transposing store over banks
shared float Bs[BK][BN + 1];  // (BK, BN): decoded W tile

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tx = tid % (BN / TN), ty = tid / (BN / TN);  // 16 x 16 threads
  const uint m0 = (gl_WorkGroupID.y + p.m_tile0) * BM, n0 = gl_WorkGroupID.x * BN;
  const bool bf16 = p.bf16 != 0u, trans = p.trans != 0u;
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;
  float pa[4], pb[4];
  // Each thread moves 4 of the 1024 elements of each tile. x is walked along k (its rows are
  // contiguous); W along its own rows: k fastest for W^T, n fastest for W, so neighbouring threads
  // decode neighbouring bytes of the code words.
  [[unroll]] for (uint l = 0; l < 4; ++l) pa[l] = pb[l] = 0.0;
#define B_COORDS(e, bk, bn)     \
  uint bk = trans ? (e) / BN : (e) % BK; \
  uint bn = trans ? (e) % BN : (e) / BK;
#define LOAD_TILE(kb)                                                             \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                       \
    uint e = tid + l * 256;                                                       \
    uint gm = m0 + e / BK, gk = (kb) + e % BK;                                    \
    float a = (gm < p.M && gk < p.K) ? load_x(p.x_off + gm * p.K + gk) : 0.0;     \
    pa[l] = bf16 ? round_bf16(a) : a;                                             \
    B_COORDS(e, bk, bn)                                                           \
    uint hk = (kb) + bk, hn = n0 + bn;                                            \
    float b = 0.0;                                                                \
    if (hk < p.K && hn < p.N) b = trans ? qvalue(hk * p.cols + hn, hk) : qvalue(hn * p.cols + hk, hn); \
    pb[l] = bf16 ? round_bf16(b) : b;                                             \
  }
#define STORE_TILE()                                                              \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                       \
    uint e = tid + l * 256;                                                       \
    As[e % BK][e / BK] = pa[l];                                                   \
    B_COORDS(e, bk, bn)                                                           \
    Bs[bk][bn] = pb[l];                                                           \
  }
  if (p.K > 0u) {
    LOAD_TILE(0u)
  }
  for (uint k0 = 0u; k0 < p.K; k0 += BK) {
    STORE_TILE()
    barrier();
    if (k0 + BK < p.K) {
      LOAD_TILE(k0 + BK)
    }
    // Thread (ty, tx) owns rows ty + 16i and columns tx + 16j, as in matmul.comp. bf16 operands
    // multiply exactly in f32, so only the order of the f32 sums differs from the CPU's.
    [[unroll]] for (uint k = 0; k < BK; ++k) {
      float ra[TM], rb[TN];
      [[unroll]] for (uint i = 0; i < TM; ++i) ra[i] = As[k][ty + 16 * i];
      [[unroll]] for (uint j = 0; j < TN; ++j) rb[j] = Bs[k][tx + 16 * j];
      [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
    }
    barrier();
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    const uint gm = m0 + ty + 16 * i;
    [[unroll]] for (uint j = 0; j < TN; ++j) {
      const uint gn = n0 + tx + 16 * j;
      if (gm < p.M && gn < p.N) {
        const uint oi = p.o_off + gm * p.N + gn;
        o[oi] = acc[i][j] + (p.beta != 0.0 ? p.beta * o[oi] : 0.0);
      }
    }
  }
}
