#pragma once
// Philox4x32-10 (Salmon et al., SC'11): counter-based, so any backend can produce element i alone.
// Shaders mirror this exact function; keep the constants in sync.
#include <array>
#include <cmath>
#include <cstdint>

namespace rf {

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c[0], p1 = uint64_t(M1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    k[0] += W0;
    k[1] += W1;
  }
  return c;
}

// Element counter n under seed: the 4 words every backend derives its sample from.
inline std::array<uint32_t, 4> philox_at(uint64_t seed, uint64_t n) {
  return philox4x32({uint32_t(n), uint32_t(n >> 32), 0u, 0u}, {uint32_t(seed), uint32_t(seed >> 32)});
}
// Uniform in [0, 1) from 24 bits (exactly representable in f32, identical on every backend).
inline float philox_uniform(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }
// Box-Muller standard normal from words 0 and 1 (u1 in (0, 1] avoids log(0)).
inline float philox_normal(uint32_t w0, uint32_t w1) {
  float u1 = float((w0 >> 8) + 1u) * (1.0f / 16777216.0f);
  float u2 = philox_uniform(w1);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530717958647692f * u2);
}

}  // namespace rf
