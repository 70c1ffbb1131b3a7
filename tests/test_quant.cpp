// bitsandbytes quantization numerics (engine/quant.h) against the independent NumPy reference
// tests/quant_ref.py: same inputs, identical codes, packed bytes, absmax, nested statistics and
// dequantized values, all compared bit for bit (every step is one f32 operation in both).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/quant.h"
#include "tests/ref_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf::quant;
using rf::test::python_with_numpy;
using rf::test::test_script;

namespace {

template <class T>
void write_raw(const fs::path& p, const std::vector<T>& v) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  REQUIRE_MESSAGE(f.good(), "cannot write " << p);
}

template <class T>
std::vector<T> read_raw(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "the reference wrote no " << p);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() % sizeof(T) == 0);
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The first index where two float vectors differ bitwise, for the failure message.
std::string first_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return fmt::format("sizes {} and {}", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return fmt::format("index {}: {:.9g} vs {:.9g}", i, a[i], b[i]);
  return "none";
}

std::vector<float> normal(int64_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

struct Case {
  std::string kind, name, args;
  std::vector<float> in;
};

// Blocks of 64 that each hit a corner: all zeros, one huge value, tiny values, values exactly on the
// NF4 and FP4 pivots and codes (absmax 1 makes the scaled value the input itself), -0.0, small
// negatives that FP4 codes as "-0", a value just above/below each pivot, and subnormals.
std::vector<float> adversarial() {
  std::vector<float> v(64 * 7, 0.0f);  // block 0: all zeros
  auto block = [&](int b) { return v.begin() + 64 * b; };
  std::vector<float> g = normal(64, 7, 1e-3f);
  std::copy(g.begin(), g.end(), block(1));
  v[64 + 10] = 1e30f;  // block 1: one huge value
  std::vector<float> t = normal(64, 8, 1e-30f);
  std::copy(t.begin(), t.end(), block(2));  // block 2: tiny but normal
  std::vector<float> edge = {1.0f, -0.0f, -1e-9f, 1e-9f, -0.002f, 0.0026041667f, -0.0026041667f, 0.00260417f};
  for (float c : code_table(Type4::NF4)) edge.push_back(c);
  const std::vector<float> pivots = {-0.8480964f,   -0.6106329f, -0.45999527f, -0.33967942f, -0.2346074f, -0.13791174f,
                                     -0.045525018f, 0.03979015f, 0.12025525f,  0.20352125f,  0.29201376f, 0.38931254f,
                                     0.50166345f,   0.6427869f,  0.86147845f,  0.0859375f,   0.20833333f, 0.29166667f,
                                     0.4166667f,    0.583333f,   0.5833334f,   0.8333333f,   0.8333334f};
  for (float p : pivots) edge.insert(edge.end(), {p, std::nextafter(p, 2.0f), std::nextafter(p, -2.0f)});
  edge.insert(edge.begin() + 64, 1.0f);  // block 4 keeps absmax 1 too
  REQUIRE(edge.size() <= 128);
  std::copy(edge.begin(), edge.end(), block(3));  // blocks 3-4: the edges, absmax 1
  for (int i = 0; i < 64; ++i) v[64 * 5 + i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>(i) / 63.0f;
  std::vector<float> sub = normal(64, 10, 1e-39f);  // block 6: subnormal, 1 / absmax overflows
  std::copy(sub.begin(), sub.end(), block(6));
  return v;
}

// The 8-bit dynamic map's midpoints (a tie goes to the even index) and values beside them.
std::vector<float> dynamic_edges() {
  const auto& c = dynamic_map();
  std::vector<float> v = {1.0f};  // absmax 1: no rescaling
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    const float m = (c[i] + c[i + 1]) * 0.5f;
    v.insert(v.end(), {m, std::nextafter(m, 2.0f)});
  }
  return v;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("quant: bitsandbytes 4-bit, double quant, dynamic 8-bit and int8 match the NumPy reference") {
    const std::string py = python_with_numpy();
    const fs::path script = test_script("quant_ref.py");
    const fs::path dir = fs::temp_directory_path() / fmt::format("rf_quant_{}", ::getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);

    std::vector<Case> cases;
    for (const char* t : {"nf4", "fp4"}) {
      for (int dq : {0, 1}) {
        cases.push_back({"q4", fmt::format("normal_{}_{}", t, dq), fmt::format("64 {} {}", t, dq), normal(4096, 1)});
        cases.push_back({"q4", fmt::format("adv_{}_{}", t, dq), fmt::format("64 {} {}", t, dq), adversarial()});
        // 600 blocks of widely different scales: three nested blocks of 256, the last partial.
        std::vector<float> w = normal(64 * 600, 2);
        for (size_t i = 0; i < w.size(); ++i) w[i] *= std::exp2(static_cast<float>((i / 64) % 13) - 6.0f);
        cases.push_back({"q4", fmt::format("scales_{}_{}", t, dq), fmt::format("64 {} {}", t, dq), w});
        // Every block's absmax is 1: absmax - mean is all zero, the nested absmax 0.
        std::vector<float> same = normal(64 * 5, 3, 0.2f);
        for (size_t b = 0; b < 5; ++b) same[b * 64 + b] = 1.0f;
        cases.push_back({"q4", fmt::format("flat_{}_{}", t, dq), fmt::format("64 {} {}", t, dq), same});
      }
      for (int bs : {32, 128, 256, 512, 1024, 2048, 4096}) {  // a partial last block, an odd count
        const int64_t n = 3 * bs + 17;
        cases.push_back({"q4", fmt::format("bs{}_{}", bs, t), fmt::format("{} {} 1", bs, t), normal(n, 4 + bs, 0.05f)});
      }
      cases.push_back({"q4", fmt::format("one_{}", t), fmt::format("64 {} 1", t), {-0.7f}});
      cases.push_back({"q4", fmt::format("zeros_{}", t), fmt::format("64 {} 1", t), std::vector<float>(130, 0.0f)});
    }
    cases.push_back({"dyn", "dyn_edges", "256", dynamic_edges()});
    cases.push_back({"dyn", "dyn_normal", "256", normal(1000, 5)});
    {
      std::vector<float> w = normal(7 * 33, 6);
      for (int c = 0; c < 33; ++c) w[2 * 33 + c] = 0.0f;  // row 2: all zero
      w[3 * 33 + 5] = 1e20f;                              // row 3: one outlier
      const float halves[] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -126.5f};
      for (int c = 0; c < 9; ++c) w[4 * 33 + c] = halves[c];  // row 4: absmax 127, scale exactly 1
      cases.push_back({"i8", "int8", "7 33", w});
    }

    std::string list;
    for (const Case& c : cases) {
      const int64_t n = static_cast<int64_t>(c.in.size());
      write_raw(dir / (c.name + ".in"), c.in);
      list += c.kind == "i8" ? fmt::format("i8 {} {}\n", c.name, c.args)
                             : fmt::format("{} {} {} {}\n", c.kind, c.name, n, c.args);
    }
    std::ofstream(dir / "cases.txt") << list;
    write_raw(dir / "dynamic_map.f32", std::vector<float>(dynamic_map().begin(), dynamic_map().end()));
    const std::string log = (dir / "ref.log").string();
    const int rc = std::system(fmt::format("{} {} {} > {} 2>&1", py, script.string(), dir.string(), log).c_str());
    std::ifstream lf(log);
    const std::string ref_out((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
    REQUIRE_MESSAGE(rc == 0, "quant_ref.py failed: " << ref_out);

    for (const Case& c : cases) {
      CAPTURE(c.name);
      const fs::path base = dir / c.name;
      auto ext = [&](const char* e) { return fs::path(base.string() + "." + e); };
      const int64_t n = static_cast<int64_t>(c.in.size());
      if (c.kind == "q4") {
        int bs = 0, dq = 0;
        char type[4] = {};
        REQUIRE(std::sscanf(c.args.c_str(), "%d %3s %d", &bs, type, &dq) == 3);
        const Quant4 q = quantize_4bit(c.in.data(), n, bs, std::string(type) == "nf4" ? Type4::NF4 : Type4::FP4);
        CHECK(q.packed == read_raw<uint8_t>(ext("packed")));
        const auto absmax = read_raw<float>(ext("absmax"));
        CHECK_MESSAGE(same_bits(q.absmax, absmax), first_diff(q.absmax, absmax));
        const auto deq = read_raw<float>(ext("deq"));
        CHECK_MESSAGE(same_bits(dequantize_4bit(q), deq), first_diff(dequantize_4bit(q), deq));
        if (!dq) continue;
        const NestedAbsmax s = compress_absmax(q.absmax);
        CHECK(s.codes == read_raw<uint8_t>(ext("qabsmax")));
        CHECK_MESSAGE(same_bits(s.nested_absmax, read_raw<float>(ext("nabsmax"))),
                      first_diff(s.nested_absmax, read_raw<float>(ext("nabsmax"))));
        CHECK(same_bits({s.offset}, read_raw<float>(ext("offset"))));
        const std::vector<float> absmax_dq = decompress_absmax(s);
        CHECK_MESSAGE(same_bits(absmax_dq, read_raw<float>(ext("absmax_dq"))),
                      first_diff(absmax_dq, read_raw<float>(ext("absmax_dq"))));
        std::vector<float> out(static_cast<size_t>(n));
        dequantize_4bit(q, absmax_dq, out.data());
        CHECK_MESSAGE(same_bits(out, read_raw<float>(ext("deq_dq"))), first_diff(out, read_raw<float>(ext("deq_dq"))));
      } else if (c.kind == "dyn") {
        std::vector<uint8_t> codes(c.in.size());
        std::vector<float> absmax(static_cast<size_t>((n + 255) / 256));
        quantize_blockwise_dynamic(c.in.data(), n, 256, codes.data(), absmax.data());
        CHECK(codes == read_raw<uint8_t>(ext("codes")));
        CHECK(same_bits(absmax, read_raw<float>(ext("absmax"))));
      } else {
        const Int8Rows q = quantize_int8_rows(c.in.data(), 7, 33);
        CHECK(q.q == read_raw<int8_t>(ext("q")));
        CHECK(same_bits(q.scb, read_raw<float>(ext("scb"))));
        CHECK_MESSAGE(same_bits(dequantize_int8_rows(q), read_raw<float>(ext("deq"))),
                      first_diff(dequantize_int8_rows(q), read_raw<float>(ext("deq"))));
      }
    }
    fs::remove_all(dir);
  }

  TEST_CASE("quant: nibble order, zero blocks, tables and rounding ties") {
    const float w[] = {1.0f, -1.0f, 0.0f};
    const Quant4 q = quantize_4bit(w, 3, 64, Type4::NF4);
    REQUIRE(q.packed.size() == 2);
    CHECK(q.packed[0] == 0xF0);  // the first element (code 15) in the high nibble
    CHECK(q.packed[1] == 0x77);  // 0.0 is code 7, and so is the pad
    const std::vector<float> zeros(100, 0.0f);
    for (Type4 t : {Type4::NF4, Type4::FP4}) {
      const Quant4 z = quantize_4bit(zeros.data(), 100, 64, t);
      CHECK(z.absmax == std::vector<float>{0.0f, 0.0f});
      for (float x : dequantize_4bit(z)) CHECK(x == 0.0f);
      const NestedAbsmax s = compress_absmax(z.absmax);
      CHECK(decompress_absmax(s) == std::vector<float>{0.0f, 0.0f});
    }
    CHECK(code_table(Type4::FP4)[3] == 1.0f);
    CHECK(code_table(Type4::FP4)[11] == -1.0f);
    CHECK(encode_fp4(-1e-9f) == 8);  // a tiny negative is FP4's "-0"
    CHECK(dynamic_map()[127] == 0.0f);
    CHECK(dynamic_map()[255] == 1.0f);
    const float rows[] = {2.5f, 3.5f, -2.5f, 127.0f};
    CHECK(quantize_int8_rows(rows, 1, 4).q == std::vector<int8_t>{2, 4, -2, 127});  // half to even
  }

  TEST_CASE("quant: NaN, Inf and bad block sizes are refused with one line") {
    std::vector<float> w = normal(100, 9);
    w[37] = std::numeric_limits<float>::quiet_NaN();
    const std::string m = rf::test::invalid_argument_of([&] { quantize_4bit(w.data(), 100, 64, Type4::NF4); });
    CHECK(m.rfind("[quant]", 0) == 0);
    CHECK(m.find("element 37") != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
    w[37] = -std::numeric_limits<float>::infinity();
    CHECK(rf::test::invalid_argument_of([&] { quantize_int8_rows(w.data(), 10, 10); }).find("element 37") !=
          std::string::npos);
    w[37] = 0.0f;
    CHECK(rf::test::invalid_argument_of([&] { quantize_4bit(w.data(), 100, 48, Type4::FP4); }).find("blocksize 48") !=
          std::string::npos);
    CHECK(rf::test::invalid_argument_of([&] { quantize_4bit(w.data(), 100, 8192, Type4::FP4); }) != "");
  }
}
