#version 450
#extension GL_EXT_control_flow_attributes : enable
// C = alpha * A @ B + beta * C, f32, tiled through shared memory with 8x8 register blocking:
// a 128x128 output tile per workgroup of 256 threads, K in steps of 8. A and B are read through
// strides, so transposed operands (dX = dY W, dW = dY^T X) need no copies. Batch = workgroup z.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) buffer C { float c[]; };
layout(push_constant) uniform Push {
  uint M, N, K, a_off, b_off, c_off;
  uint sam, sak, sbk, sbn;     // element strides: A(m, k) = a[a_off + m*sam + k*sak], B(k, n) likewise
  uint a_batch, b_batch, c_batch;
  float alpha, beta;
} p;

const uint BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
shared float As[BK][BM];
shared float Bs[BK][BN];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tx = tid % (BN / TN), ty = tid / (BN / TN);  // 16 x 16 threads
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN, z = gl_WorkGroupID.z;
  const uint ab = p.a_off + z * p.a_batch, bb = p.b_off + z * p.b_batch;
  float acc[TM][TN];
  for (uint i = 0; i < TM; ++i)
    for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;
  float ra[TM], rb[TN];
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    // Each thread loads 4 of the 1024 elements of each tile; out-of-range reads become 0.
    [[unroll]] for (uint l = 0; l < 4; ++l) {
      uint e = tid + l * 256;
      uint am = e / BK, ak = e % BK;  // A tile element (am, ak)
      uint gm = m0 + am, gk = k0 + ak;
      As[ak][am] = (gm < p.M && gk < p.K) ? a[ab + gm * p.sam + gk * p.sak] : 0.0;
      uint bk = e / BN, bn = e % BN;  // B tile element (bk, bn)
      uint hk = k0 + bk, hn = n0 + bn;
      Bs[bk][bn] = (hk < p.K && hn < p.N) ? b[bb + hk * p.sbk + hn * p.sbn] : 0.0;
    }
    barrier();
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
  const uint cb = p.c_off + z * p.c_batch;
  for (uint i = 0; i < TM; ++i) {
    uint gm = m0 + ty + 16 * i;
    if (gm >= p.M) continue;
    for (uint j = 0; j < TN; ++j) {
      uint gn = n0 + tx + 16 * j;
      if (gn >= p.N) continue;
      uint ci = cb + gm * p.N + gn;
      c[ci] = p.alpha * acc[i][j] + (p.beta != 0.0 ? p.beta * c[ci] : 0.0);
    }
  }
}
