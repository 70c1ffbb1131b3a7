#version 450
// HF half-split rotary embedding: y = x * cos + rotate_half(x) * sin (sin negated for inverse).
// x (B, H, T, D) strided; cos/sin dense (T, D) (cs_b = 0) or (B, T, D); y contiguous.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer CS { float cs[]; };
layout(std430, binding = 2) readonly buffer SN { float sn[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Push {
  uint B, H, T, D, xb, xh, xt, xd, x_off, c_off, s_off, y_off, cs_b;
  float sign;
} p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  uint n = p.B * p.H * p.T * p.D, half_ = p.D / 2;
  for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
    uint d = e % p.D, t = (e / p.D) % p.T, h = (e / (p.D * p.T)) % p.H, b = e / (p.D * p.T * p.H);
    uint base = p.x_off + b * p.xb + h * p.xh + t * p.xt;
    float xv = x[base + d * p.xd];
    float rot = d < half_ ? -x[base + (d + half_) * p.xd] : x[base + (d - half_) * p.xd];
    uint ti = b * p.cs_b + t * p.D + d;
    y[p.y_off + e] = xv * cs[p.c_off + ti] + p.sign * rot * sn[p.s_off + ti];
  }
}
