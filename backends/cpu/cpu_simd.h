#pragma once
// f32 hot loops built for several ISAs at once (GCC target_clones: AVX-512F, AVX2, baseline),
// chosen at load time by the CPU, so a default (portable x86-64) build still runs the elementwise
// work of a training step at the machine's vector width. Same math in every clone; only the
// rounding of fused multiply-adds may differ between machines.
#include <cstdint>

namespace rf::cpu::simd {

// tanh for f32 as a branch-free rational function (Eigen's fast tanh: odd degree-13 over even
// degree-6 polynomial on [-7.9988, 7.9988], where tanh rounds to +-1 in f32 beyond). Max relative
// error 3.3e-7 (libm tanhf: 1.6e-7), but it vectorises. NaN propagates (both compares are false).
inline float tanh_f32(float x0) {
  const float lim = 7.99881172180175781f;
  const float x = x0 > lim ? lim : (x0 < -lim ? -lim : x0), x2 = x * x;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p - 8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  const float t = x * p / q;
  return (x0 < 0.0004f && x0 > -0.0004f) ? x0 : t;  // tanh(x) = x to f32 precision
}

void gelu_tanh(const float* x, float* y, int64_t n);       // y = GELU_tanh(x)
void gelu_tanh_grad(const float* x, float* y, int64_t n);  // y = d GELU_tanh / dx
float row_max(const float* a, int64_t n);
double row_sum_exp(const float* a, int64_t n, float m);                  // sum exp(a[i] - m), blocks summed in f64
void scaled_exp(const float* a, float* o, int64_t n, float z, float g);  // o = g exp(a - z); o may be a

}  // namespace rf::cpu::simd
