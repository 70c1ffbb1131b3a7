#version 450
#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
// C = alpha * A @ B + beta * C with f16 A and B, for devices with shaderFloat16 but no cooperative
// matrices: the same 128x128 tile, 256 threads, 8x8 register block and strided loads as matmul.comp,
// but the tiles sit in shared memory as f16 and the products run as f16vec2 FMAs (two output
// columns per instruction). The f16 partial sums cover one BK = 16 k-step tile and are then added
// into f32 accumulators, so rounding grows with 16 products, not with K (~1e-3 relative). The
// products and partials are f16, so values past 65504 overflow and products below 6e-8 flush.
// -DSPLITK: as in matmul.comp (z = batch * splits + split, raw sums into scratch slices).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A { float16_t a[]; };
layout(std430, binding = 1) readonly buffer B { float16_t b[]; };
layout(std430, binding = 2) buffer C { float c[]; };
layout(push_constant) uniform Push {
  uint M, N, K, a_off, b_off, c_off;
  uint sam, sak, sbk, sbn;
  uint a_batch, b_batch, c_batch;
  float alpha, beta;
  uint kchunk, splits;
} p;

const uint BM = 128, BN = 128, BK = 16, TM = 8, TP = 4;  // TP column pairs = 8 columns
shared float16_t As[BK][BM + 8];
shared f16vec2 Bs[BK][BN / 2];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tx = tid % 16, ty = tid / 16;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
#ifdef SPLITK
  const uint z = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint kbeg = split * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
#else
  const uint z = gl_WorkGroupID.z, kbeg = 0, kend = p.K;
#endif
  const uint ab = p.a_off + z * p.a_batch, bb = p.b_off + z * p.b_batch;
  float acc[TM][2 * TP];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < 2 * TP; ++j) acc[i][j] = 0.0;
  f16vec2 part[TM][TP];
  // Register prefetch of the next tile: A (128 x 16) is 8 values a thread, B (16 x 128) 4 pairs.
  float16_t pa[8];
  f16vec2 pb[4];
#define LOAD_TILE(kb)                                                                      \
  [[unroll]] for (uint l = 0; l < 8; ++l) {                                                \
    uint e = tid + l * 256;                                                                \
    uint gm = m0 + e / BK, gk = (kb) + e % BK;                                             \
    pa[l] = (gm < p.M && gk < kend) ? a[ab + gm * p.sam + gk * p.sak] : float16_t(0.0);    \
  }                                                                                        \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                                \
    uint q = tid + l * 256;                                                                \
    uint hk = (kb) + q / (BN / 2), hn = n0 + 2 * (q % (BN / 2));                           \
    bool kin = hk < kend;                                                                  \
    uint bi = bb + hk * p.sbk + hn * p.sbn;                                                \
    pb[l] = f16vec2(kin && hn < p.N ? b[bi] : float16_t(0.0),                              \
                    kin && hn + 1 < p.N ? b[bi + p.sbn] : float16_t(0.0));                 \
  }
#define STORE_TILE()                                                                       \
  [[unroll]] for (uint l = 0; l < 8; ++l) {                                                \
    uint e = tid + l * 256;                                                                \
    As[e % BK][e / BK] = pa[l];                                                            \
  }                                                                                        \
  [[unroll]] for (uint l = 0; l < 4; ++l) {                                                \
    uint q = tid + l * 256;                                                                \
    Bs[q / (BN / 2)][q % (BN / 2)] = pb[l];                                                \
  }
  LOAD_TILE(kbeg)
  for (uint k0 = kbeg; k0 < kend; k0 += BK) {
    STORE_TILE()
    barrier();
    if (k0 + BK < kend) {
      LOAD_TILE(k0 + BK)
    }
    [[unroll]] for (uint i = 0; i < TM; ++i)
      [[unroll]] for (uint j = 0; j < TP; ++j) part[i][j] = f16vec2(0.0);
    // Thread (ty, tx) owns rows ty + 16i and column pairs tx + 16j (columns 2(tx + 16j) + {0, 1}).
    [[unroll]] for (uint k = 0; k < BK; ++k) {
      f16vec2 rb[TP];
      [[unroll]] for (uint j = 0; j < TP; ++j) rb[j] = Bs[k][tx + 16 * j];
      [[unroll]] for (uint i = 0; i < TM; ++i) {
        f16vec2 ra = f16vec2(As[k][ty + 16 * i]);
        [[unroll]] for (uint j = 0; j < TP; ++j) part[i][j] = fma(ra, rb[j], part[i][j]);
      }
    }
    [[unroll]] for (uint i = 0; i < TM; ++i)
      [[unroll]] for (uint j = 0; j < TP; ++j) {
        acc[i][2 * j] += float(part[i][j].x);
        acc[i][2 * j + 1] += float(part[i][j].y);
      }
    barrier();
  }
#ifdef SPLITK
  const uint cb = gl_WorkGroupID.z * p.M * p.N;
#else
  const uint cb = p.c_off + z * p.c_batch;
#endif
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    uint gm = m0 + ty + 16 * i;
    [[unroll]] for (uint j = 0; j < 2 * TP; ++j) {
      uint gn = n0 + 2 * (tx + 16 * (j / 2)) + j % 2;
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
