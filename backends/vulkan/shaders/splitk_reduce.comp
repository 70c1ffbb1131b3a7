#version 450
// c[b, m, n] = alpha * sum_s part[b, s, m, n] + beta * c[b, m, n]: the second half of split-K.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer P { float part[]; };
layout(std430, binding = 1) buffer C { float c[]; };
layout(push_constant) uniform Push { uint MN, batch, splits, c_off, c_batch; float alpha, beta; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < p.MN * p.batch; e += stride) {
    uint b = e / p.MN, mn = e % p.MN;
    float s = 0.0;
    for (uint k = 0; k < p.splits; ++k) s += part[(b * p.splits + k) * p.MN + mn];
    uint ci = p.c_off + b * p.c_batch + mn;
    c[ci] = p.alpha * s + (p.beta != 0.0 ? p.beta * c[ci] : 0.0);
  }
}
