// 16-bit storage conversions: NaN, Inf, overflow, subnormals, ties to even, signed zero; both the
// scalar helpers and tensor to(DType) on every backend.
#include <bit>
#include <cmath>
#include <limits>

#include "tests/test_util.h"

namespace rf::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
float p2(int e) { return std::ldexp(1.0f, e); }

// Round trip through 16-bit storage on the tensor path (backend copy kernels).
std::vector<float> through(const std::vector<float>& v, DType t, Device d) {
  Tensor x = f32(v, {int64_t(v.size())}, d);
  Tensor h = x.to(t);
  REQUIRE(h.dtype() == t);
  Tensor back = h.to(DType::F32);
  REQUIRE(back.dtype() == DType::F32);
  return back.to_vector<float>();
}

// Bitwise comparison so -0 vs +0 and exact subnormals count.
void check_bits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i)
    CHECK_MESSAGE(std::bit_cast<uint32_t>(got[i]) == std::bit_cast<uint32_t>(want[i]),
                  what << " element " << i << ": got " << got[i] << " want " << want[i]);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("f16 scalar conversion edge cases") {
    CHECK(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
    CHECK(std::isnan(f16_to_f32(f32_to_f16(-std::nanf("")))));
    CHECK(f32_to_f16(kInf) == 0x7c00);
    CHECK(f32_to_f16(-kInf) == 0xfc00);
    CHECK(f32_to_f16(65504.0f) == 0x7bff);  // largest finite
    CHECK(f32_to_f16(65519.0f) == 0x7bff);  // below the midpoint to 2^16: rounds down
    CHECK(f32_to_f16(65520.0f) == 0x7c00);  // the midpoint ties to even = Inf
    CHECK(f32_to_f16(-1e6f) == 0xfc00);
    CHECK(f32_to_f16(p2(-24)) == 0x0001);  // smallest subnormal, exact
    CHECK(f32_to_f16(p2(-25)) == 0x0000);  // tie between 0 and 2^-24: even is 0
    CHECK(f32_to_f16(std::nextafter(p2(-25), 1.0f)) == 0x0001);
    CHECK(f32_to_f16(3 * p2(-26)) == 0x0001);               // 0.75 ulp rounds up
    CHECK(f32_to_f16(3 * p2(-25)) == 0x0002);               // 1.5 ulp ties to even 2
    CHECK(f32_to_f16(1023 * p2(-24)) == 0x03ff);            // largest subnormal
    CHECK(f32_to_f16(p2(-14)) == 0x0400);                   // smallest normal
    CHECK(f32_to_f16(1.0f + p2(-11)) == 0x3c00);            // tie at 1 + half ulp -> 1.0
    CHECK(f32_to_f16(1.0f + 3 * p2(-11)) == 0x3c02);        // tie at 1 + 1.5 ulp -> 1 + 2^-9
    CHECK(f32_to_f16(1.0f + p2(-11) + p2(-20)) == 0x3c01);  // just above the tie rounds up
    CHECK(f32_to_f16(-0.0f) == 0x8000);
    CHECK(std::signbit(f16_to_f32(0x8000)));
    CHECK(f16_to_f32(0x0001) == p2(-24));
    CHECK(f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f16_to_f32(0x7c00) == kInf);
  }

  TEST_CASE("bf16 scalar conversion edge cases") {
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
    // A NaN whose payload sits only in the low 16 bits must not truncate to Inf.
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
    CHECK(f32_to_bf16(kInf) == 0x7f80);
    CHECK(f32_to_bf16(-kInf) == 0xff80);
    CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds past the largest bf16
    CHECK(f32_to_bf16(1.0f + p2(-8)) == 0x3f80);                      // tie -> 1.0
    CHECK(f32_to_bf16(1.0f + 3 * p2(-8)) == 0x3f82);                  // tie -> 1 + 2^-6
    CHECK(f32_to_bf16(p2(-133)) == 0x0001);                           // smallest bf16 subnormal
    CHECK(f32_to_bf16(p2(-134)) == 0x0000);                           // tie to even 0
    CHECK(f32_to_bf16(3 * p2(-135)) == 0x0001);                       // 0.75 ulp rounds up
    CHECK(f32_to_bf16(-0.0f) == 0x8000);
    CHECK(std::signbit(bf16_to_f32(0x8000)));
  }

  TEST_CASE("every f16 and bf16 bit pattern survives a round trip through f32") {
    int bad_f16 = 0, bad_bf16 = 0;
    for (uint32_t h = 0; h < 0x10000u; ++h) {
      float f = f16_to_f32(uint16_t(h));
      if (std::isnan(f))
        bad_f16 += !std::isnan(f16_to_f32(f32_to_f16(f)));
      else
        bad_f16 += f32_to_f16(f) != h;
      float b = bf16_to_f32(uint16_t(h));
      if (std::isnan(b))
        bad_bf16 += !std::isnan(bf16_to_f32(f32_to_bf16(b)));
      else
        bad_bf16 += f32_to_bf16(b) != h;
    }
    CHECK(bad_f16 == 0);
    CHECK(bad_bf16 == 0);
  }

  TEST_CASE("tensor to(F16) and to(BF16) apply the same rounding") {
    for_each_backend([](Device d) {
      std::vector<float> in = {kInf,        -kInf,       65504.0f,       65519.0f,           65520.0f, p2(-24), p2(-25),
                               3 * p2(-26), 3 * p2(-25), 1.0f + p2(-11), 1.0f + 3 * p2(-11), -0.0f,    -2.5f};
      std::vector<float> want = {kInf,    -kInf,       65504.0f, 65504.0f,      kInf,  p2(-24), 0.0f,
                                 p2(-24), 2 * p2(-24), 1.0f,     1.0f + p2(-9), -0.0f, -2.5f};
      check_bits(through(in, DType::F16, d), want, "f16");
      std::vector<float> nan = through({std::nanf(""), 1.0f}, DType::F16, d);
      CHECK(std::isnan(nan[0]));
      CHECK(nan[1] == 1.0f);

      std::vector<float> bin = {kInf,     -kInf,    1.0f + p2(-8), 1.0f + 3 * p2(-8),
                                p2(-133), p2(-134), -0.0f,         std::numeric_limits<float>::max()};
      std::vector<float> bwant = {kInf, -kInf, 1.0f, 1.0f + p2(-6), p2(-133), 0.0f, -0.0f, kInf};
      check_bits(through(bin, DType::BF16, d), bwant, "bf16");
      CHECK(std::isnan(through({std::nanf("")}, DType::BF16, d)[0]));
    });
  }

  TEST_CASE("f64 to f32 and integer conversions round as C++ does") {
    for_each_backend([](Device d) {
      double t = std::ldexp(1.0, -24);
      Tensor x = f64({1.0 + t, 1.0 + 3 * t, 1e300, -1e-300}, {4}, d);
      std::vector<float> y = x.to(DType::F32).to_vector<float>();
      CHECK(y[0] == 1.0f);  // tie -> even
      CHECK(y[1] == 1.0f + std::ldexp(1.0f, -22));
      CHECK(y[2] == kInf);
      CHECK(y[3] == 0.0f);
      CHECK(std::signbit(y[3]));
      // 2^24 + 1 is the first integer f32 cannot hold: it ties to the even neighbour 2^24.
      Tensor big = i64({16777217, -3}, {2}, d);
      CHECK(big.to(DType::F32).to_vector<float>() == std::vector<float>{16777216.0f, -3.0f});
      CHECK(f32({0.0f, 2.5f, -1.0f}, {3}, d).to(DType::Bool).to_vector<bool>() == std::vector<bool>{false, true, true});
    });
  }

  TEST_CASE("dtype sizes and names") {
    CHECK(dtype_size(DType::F16) == 2);
    CHECK(dtype_size(DType::BF16) == 2);
    CHECK(dtype_size(DType::F64) == 8);
    CHECK(dtype_size(DType::Bool) == 1);
    CHECK(dtype_name(DType::BF16) == "bf16");
    CHECK(is_float(DType::F16));
    CHECK(!is_compute_float(DType::BF16));
  }
}

}  // namespace rf::test
