#version 450
#extension GL_EXT_control_flow_attributes : enable
// C = alpha * A @ B + beta * C, f32 math, tiled through shared memory with 8x8 register blocking:
// a 128x128 output tile per workgroup of 256 threads, K in steps of 8. A and B are read through
// strides, so transposed operands (dX = dY W, dW = dY^T X) need no copies. Batch = workgroup z.
// -DSPLITK: z = batch * splits + split; each split sums K in [split*kchunk, +kchunk) into its own
// (M, N) slice of c (scratch), and splitk_reduce.comp adds the slices (weight gradients: K = tokens).
layout(local_size_x = 256) in;
#if defined(A_F16) || defined(A_BF16) || defined(B_F16) || defined(B_BF16)
// 16-bit operands (frozen weights in B, or both under autocast): converted exactly on load, f32
// math, so this variant runs on any device with 16-bit storage (bf16 has no arithmetic type here).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
float f16_to_float(uint h) {
  uint sgn = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return uintBitsToFloat(sgn | 0x7f800000u | (m << 13));
  if (e == 0u) return (sgn != 0u ? -1.0 : 1.0) * float(m) * 5.9604644775390625e-8;
  return uintBitsToFloat(sgn | ((e + 112u) << 23) | (m << 13));
}
float bf16_to_float(uint h) { return uintBitsToFloat(h << 16); }
#endif
#if defined(A_F16) || defined(A_BF16)
layout(std430, binding = 0) readonly buffer A { uint16_t a[]; };
#ifdef A_BF16
float load_a(uint i) { return bf16_to_float(uint(a[i])); }
#else
float load_a(uint i) { return f16_to_float(uint(a[i])); }
#endif
#else
layout(std430, binding = 0) readonly buffer A { float a[]; };
float load_a(uint i) { return a[i]; }
#endif
#if defined(B_F16) || defined(B_BF16)
layout(std430, binding = 1) readonly buffer B { uint16_t b[]; };
#ifdef B_BF16
float load_b(uint i) { return bf16_to_float(uint(b[i])); }
#else
float load_b(uint i) { return f16_to_float(uint(b[i])); }
#endif
#else
layout(std430, binding = 1) readonly buffer B { float b[]; };
float load_b(uint i) { return b[i]; }
#endif
layout(std430, binding = 2) buffer C { float c[]; };
#ifdef VEC4
// Same buffers seen as vec4: the host picks this variant only when A rows and B rows are
// contiguous and every offset, stride, K and N is a multiple of 4.
layout(std430, binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(std430, binding = 1) readonly buffer B4 { vec4 b4[]; };
#endif
layout(push_constant) uniform Push {
  uint M, N, K, a_off, b_off, c_off;
  uint sam, sak, sbk, sbn;     // element strides: A(m, k) = a[a_off + m*sam + k*sak], B(k, n) likewise
  uint a_batch, b_batch, c_batch;
  float alpha, beta;
  uint kchunk, splits;
} p;

const uint BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
shared float As[BK][BM + 4];  // +4: the transposing store hits 32 distinct banks
shared float Bs[BK][BN];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tx = tid % (BN / TN), ty = tid / (BN / TN);  // 16 x 16 threads
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
#ifdef SPLITK
  const uint z = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint kbeg = split * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
#else
  const uint z = gl_WorkGroupID.z, kbeg = 0, kend = p.K;
#endif
  const uint ab = p.a_off + z * p.a_batch, bb = p.b_off + z * p.b_batch;
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;
  float ra[TM], rb[TN];
  // Register prefetch: the global loads of tile k+1 are issued before the math on tile k, so
  // memory latency overlaps compute. Each thread moves 4 of the 1024 elements of each tile.
#ifdef VEC4
  // A: thread -> row tid/2, k quad (tid%2)*4; B: thread -> k row tid/32, n quad (tid%32)*4.
  const uint am = tid / 2, aq = (tid % 2) * 4, bk = tid / 32, bq = (tid % 32) * 4;
  vec4 pa, pb;
#define LOAD_TILE(kb)                                                                            \
  pa = (m0 + am < p.M && (kb) + aq < kend) ? a4[(ab + (m0 + am) * p.sam + (kb) + aq) / 4] : vec4(0); \
  pb = ((kb) + bk < kend && n0 + bq < p.N) ? b4[(bb + ((kb) + bk) * p.sbk + n0 + bq) / 4] : vec4(0);
#define STORE_TILE()                                                                             \
  As[aq][am] = pa.x; As[aq + 1][am] = pa.y; As[aq + 2][am] = pa.z; As[aq + 3][am] = pa.w;         \
  Bs[bk][bq] = pb.x; Bs[bk][bq + 1] = pb.y; Bs[bk][bq + 2] = pb.z; Bs[bk][bq + 3] = pb.w;
#else
  float pa[4], pb[4];
#define LOAD_TILE(kb)                                                                            \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                                      \
    uint e = tid + l * 256;                                                                      \
    uint gm = m0 + e / BK, gk = (kb) + e % BK;                                                   \
    pa[l] = (gm < p.M && gk < kend) ? load_a(ab + gm * p.sam + gk * p.sak) : 0.0;                  \
    uint hk = (kb) + e / BN, hn = n0 + e % BN;                                                   \
    pb[l] = (hk < kend && hn < p.N) ? load_b(bb + hk * p.sbk + hn * p.sbn) : 0.0;                       \
  }
#define STORE_TILE()                                                                             \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                                      \
    uint e = tid + l * 256;                                                                      \
    As[e % BK][e / BK] = pa[l];                                                                  \
    Bs[e / BN][e % BN] = pb[l];                                                                  \
  }
#endif
  LOAD_TILE(kbeg)
  for (uint k0 = kbeg; k0 < kend; k0 += BK) {
    STORE_TILE()
    barrier();
    if (k0 + BK < kend) {
      LOAD_TILE(k0 + BK)
    }
    // Thread (ty, tx) owns rows ty + 16i and columns tx + 16j: neighbouring threads read
    // neighbouring shared-memory words (no bank conflicts) and store neighbouring outputs.
    [[unroll]] for (uint k = 0; k < BK; ++k) {
      [[unroll]] for (uint i = 0; i < TM; ++i) ra[i] = As[k][ty + 16 * i];
      [[unroll]] for (uint j = 0; j < TN; ++j) rb[j] = Bs[k][tx + 16 * j];
      [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
    }
    barrier();
  }
  // Fully unrolled with constant indices: any dynamic index into acc would demote it to local memory.
#ifdef SPLITK
  const uint cb = gl_WorkGroupID.z * p.M * p.N;
#else
  const uint cb = p.c_off + z * p.c_batch;
#endif
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    uint gm = m0 + ty + 16 * i;
    [[unroll]] for (uint j = 0; j < TN; ++j) {
      uint gn = n0 + tx + 16 * j;
      if (gm < p.M && gn < p.N) {
        uint ci = cb + gm * p.N + gn;
#ifdef SPLITK
        c[ci] = acc[i][j];
#else
        c[ci] = p.alpha * acc[i][j] + (p.beta != 0.0 ? p.beta * c[ci] : 0.0);
#endif
      }
    }
  }
}
