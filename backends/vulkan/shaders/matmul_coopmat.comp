#version 450
#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
// C = alpha * A @ B + beta * C with f16 A and B on cooperative matrices (tensor cores): 16x16x16
// f16 x f16 + f32 fragments. A workgroup of 256 invocations = 8 subgroups of 32 (the host runs this
// only where subgroupSize is 32) computes a 128x128 tile; subgroup s owns the 32x64 block at rows
// 32 (s % 4), columns 64 (s / 4): 2 x 4 accumulators. K goes in BK = 32 steps staged through
// shared memory, where the loads zero-pad past M, N and K, so no shape needs to be a multiple of
// the tile. Results go through a per-subgroup shared 16x16 stage, where alpha, beta and the M/N
// bounds are applied by plain stores. -DKHR: the same kernel in GL_KHR_cooperative_matrix syntax
// (built only where glslc knows it). -DSPLITK: as in matmul.comp.
#ifdef KHR
#extension GL_KHR_cooperative_matrix : require
#define MAT_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define MAT_B coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>
#define MAT_LOAD(m, buf, el, stride) coopMatLoad(m, buf, el, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MAT_STORE(m, buf, el, stride) coopMatStore(m, buf, el, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MAT_MAD(a, b, c) coopMatMulAdd(a, b, c)
#else
#extension GL_NV_cooperative_matrix : require
#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_B fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define MAT_LOAD(m, buf, el, stride) coopMatLoadNV(m, buf, el, stride, false)
#define MAT_STORE(m, buf, el, stride) coopMatStoreNV(m, buf, el, stride, false)
#define MAT_MAD(a, b, c) coopMatMulAddNV(a, b, c)
#endif
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

const uint BM = 128, BN = 128, BK = 32;
// Row strides padded by 8 halves: rows stay 16-byte aligned (cooperative loads need that of the
// start and stride) while consecutive rows shift banks.
const uint AS = BK + 8, BS = BN + 8;
shared float16_t As[BM * AS];  // (BM, BK) row-major
shared float16_t Bs[BK * BS];  // (BK, BN) row-major
shared float stage[8 * 256];   // one 16x16 f32 fragment per subgroup

void main() {
  const uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
  const uint wm = (sg % 4) * 32, wn = (sg / 4) * 64;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
#ifdef SPLITK
  const uint z = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
  const uint kbeg = split * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
#else
  const uint z = gl_WorkGroupID.z, kbeg = 0, kend = p.K;
#endif
  const uint ab = p.a_off + z * p.a_batch, bb = p.b_off + z * p.b_batch;
  MAT_C acc[2][4];
  [[unroll]] for (uint i = 0; i < 2; ++i)
    [[unroll]] for (uint j = 0; j < 4; ++j) acc[i][j] = MAT_C(0.0);
  for (uint k0 = kbeg; k0 < kend; k0 += BK) {
    // Each tile is 4096 halves: 16 per invocation; consecutive invocations take consecutive k
    // (A) or n (B), the contiguous direction of untransposed operands.
    [[unroll]] for (uint l = 0; l < 16; ++l) {
      uint e = tid + l * 256;
      uint am = e / BK, ak = e % BK, gm = m0 + am, gk = k0 + ak;
      As[am * AS + ak] = (gm < p.M && gk < kend) ? a[ab + gm * p.sam + gk * p.sak] : float16_t(0.0);
      uint bk = e / BN, bn = e % BN, hk = k0 + bk, hn = n0 + bn;
      Bs[bk * BS + bn] = (hk < kend && hn < p.N) ? b[bb + hk * p.sbk + hn * p.sbn] : float16_t(0.0);
    }
    barrier();
    [[unroll]] for (uint kk = 0; kk < BK; kk += 16) {
      MAT_A fa[2];
      MAT_B fb[4];
      [[unroll]] for (uint i = 0; i < 2; ++i) MAT_LOAD(fa[i], As, (wm + 16 * i) * AS + kk, AS);
      [[unroll]] for (uint j = 0; j < 4; ++j) MAT_LOAD(fb[j], Bs, kk * BS + wn + 16 * j, BS);
      [[unroll]] for (uint i = 0; i < 2; ++i)
        [[unroll]] for (uint j = 0; j < 4; ++j) acc[i][j] = MAT_MAD(fa[i], fb[j], acc[i][j]);
    }
    barrier();
  }
#ifdef SPLITK
  const uint cb = gl_WorkGroupID.z * p.M * p.N;
#else
  const uint cb = p.c_off + z * p.c_batch;
#endif
  const uint lane = gl_SubgroupInvocationID;
  [[unroll]] for (uint i = 0; i < 2; ++i)
    [[unroll]] for (uint j = 0; j < 4; ++j) {
      MAT_STORE(acc[i][j], stage, sg * 256, 16);
      barrier();  // the fragment's elements are spread over the subgroup: make them visible
      for (uint e = lane; e < 256; e += gl_SubgroupSize) {
        uint gm = m0 + wm + 16 * i + e / 16, gn = n0 + wn + 16 * j + e % 16;
        if (gm < p.M && gn < p.N) {
          uint ci = cb + gm * p.N + gn;
          float v = stage[sg * 256 + e];
#ifdef SPLITK
          c[ci] = v;
#else
          c[ci] = p.alpha * v + (p.beta != 0.0 ? p.beta * c[ci] : 0.0);
#endif
        }
      }
      barrier();  // the stage is rewritten by the next fragment
    }
}
