#include "backends/cpu/cpu_simd.h"

#include <bit>
#include <cmath>
#include <limits>

// ISA features, not "arch=" names: those resolve by CPU model (an AMD Zen 4 would get the baseline).
#define RF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace rf::cpu::simd {

namespace {

// e^x in f32 without a libm call, so loops vectorise (cross-entropy over a 50k vocabulary runs 2 exps
// per logit per step). Cephes expf: x = n ln2 + r with |r| <= ln2/2, degree-6 polynomial, 2^n put in
// the exponent bits; <= 2 ulp. Below -87.3 the result is 0 (f32 underflow), above 88 inf. NaN
// propagates: every compare below is false for it.
inline float exp_f32(float x) {
  const float lo = -87.33654475f, hi = 88.0f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;             // ln2 split in two: exact n * hi
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r * r + r + 1.0f) * std::bit_cast<float>((int32_t(n) + 127) << 23);
  return x < lo ? 0.0f : (x > hi ? std::numeric_limits<float>::infinity() : y);
}

constexpr float kK = 0.7978845608028654f, kC = 0.044715f;

}  // namespace

RF_CLONES void gelu_tanh(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + tanh_f32(kK * (v + kC * v * v * v)));
  }
}

RF_CLONES void gelu_tanh_grad(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i], t = tanh_f32(kK * (v + kC * v * v * v));
    y[i] = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * kK * (1.0f + 3.0f * kC * v * v);
  }
}

// 16 independent lanes (a single running max is a serial chain that does not vectorise).
RF_CLONES float row_max(const float* a, int64_t n) {
  float acc[16];
  for (float& v : acc) v = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] = a[i + k] > acc[k] ? a[i + k] : acc[k];
  float m = -std::numeric_limits<float>::infinity();
  for (float v : acc) m = v > m ? v : m;
  for (; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// 16 f32 lanes per block of 256 (vectorised), block sums added in f64.
RF_CLONES double row_sum_exp(const float* a, int64_t n, float m) {
  double s = 0;
  int64_t i = 0;
  for (; i + 256 <= n; i += 256) {
    float acc[16] = {};
    for (int64_t j = i; j < i + 256; j += 16)
      for (int k = 0; k < 16; ++k) acc[k] += exp_f32(a[j + k] - m);
    for (float v : acc) s += v;
  }
  for (; i < n; ++i) s += exp_f32(a[i] - m);
  return s;
}

RF_CLONES void scaled_exp(const float* a, float* o, int64_t n, float z, float g) {
  for (int64_t i = 0; i < n; ++i) o[i] = g * exp_f32(a[i] - z);
}

}  // namespace rf::cpu::simd
