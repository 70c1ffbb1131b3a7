// The dequantizing linear on the CPU (issue 19): quant_matmul against dequantize + a plain GEMM, both
// directions and both compute dtypes; f64 gradients of LoRA factors through a quantized base against
// finite differences; the probe's gradient equals the dense weight gradient; a quantized nn::Linear
// (re-quantizing writes, low-rank side terms, Conv1D layout).
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "engine/backend.h"
#include "engine/quant_weight.h"
#include "nn/layers.h"
#include "tests/test_util.h"

using namespace rf;
using namespace rf::test;

namespace {

std::vector<float> randomf(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

QuantSpec spec_of(QuantType t, int bs, DType compute, bool dq = false) {
  QuantSpec s;
  s.type = t;
  s.blocksize = bs;
  s.compute = compute;
  s.double_quant = dq;
  return s;
}

// Host reference: (M, K) @ op(W) with W (rows, cols) dequantized, both operands rounded to bf16 first
// when `bf16`, products summed in f64 (the kernel sums in f32; the tolerance covers that).
std::vector<double> reference(const std::vector<float>& x, int64_t M, const std::vector<float>& w, int64_t rows,
                              int64_t cols, bool trans, bool bf16) {
  auto r = [&](float v) { return bf16 ? double(bf16_to_f32(f32_to_bf16(v))) : double(v); };
  const int64_t K = trans ? rows : cols, N = trans ? cols : rows;
  std::vector<double> out(size_t(M * N), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += r(x[size_t(m * K + k)]) * r(trans ? w[size_t(k * cols + n)] : w[size_t(n * cols + k)]);
      out[size_t(m * N + n)] = s;
    }
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

TEST_CASE("quant_matmul: every type, blocksize, direction and compute dtype matches dequantize + GEMM") {
  struct Case {
    QuantType t;
    int bs;
    bool dq;
    int64_t rows, cols;
  };
  // Shapes whose blocks straddle rows (cols % bs != 0), odd element counts, and one wide enough to be
  // cut into several panels by the kernel.
  const Case cases[] = {{QuantType::NF4, 64, false, 37, 70},   {QuantType::FP4, 32, false, 5, 33},
                        {QuantType::NF4, 128, true, 64, 96},   {QuantType::Int8, 0, false, 40, 52},
                        {QuantType::NF4, 64, true, 300, 257},  {QuantType::FP4, 256, true, 33, 512},
                        {QuantType::Int8, 0, false, 513, 130}, {QuantType::NF4, 32, false, 1, 1}};
  uint64_t seed = 1;
  for (const Case& c : cases)
    for (DType compute : {DType::F32, DType::BF16}) {
      CAPTURE(quant_type_name(c.t));
      CAPTURE(c.rows);
      CAPTURE(c.cols);
      CAPTURE(dtype_name(compute));
      const auto w = randomf(size_t(c.rows * c.cols), seed++, 0.05f);
      QuantWeight q =
          quantize_weight(w.data(), c.rows, c.cols, spec_of(c.t, c.bs ? c.bs : 64, compute, c.dq), Device{});
      const std::vector<float> wd = dequantize(q).to_vector<float>();
      // dequantize equals bitsandbytes' values exactly (host numerics of engine/quant.h)
      if (is_4bit(c.t)) {
        quant::Quant4 h = quant::quantize_4bit(w.data(), c.rows * c.cols, q.blocksize,
                                               c.t == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4);
        std::vector<float> absmax = c.dq ? quant::decompress_absmax(quant::compress_absmax(h.absmax)) : h.absmax;
        std::vector<float> ref(size_t(c.rows * c.cols));
        quant::dequantize_4bit(h, absmax, ref.data());
        CHECK(wd == ref);
      } else {
        CHECK(wd == quant::dequantize_int8_rows(quant::quantize_int8_rows(w.data(), c.rows, c.cols)));
      }
      for (bool trans : {false, true}) {
        const int64_t M = 19, K = trans ? c.rows : c.cols, N = trans ? c.cols : c.rows;
        const auto x = randomf(size_t(M * K), seed++);
        Tensor xt = from_data(x, {M, K});
        for (float beta : {0.0f, 1.0f}) {
          Tensor out = full({M, N}, 0.5);
          xt.backend().quant_matmul(xt, q, trans, out, beta);
          std::vector<double> ref = reference(x, M, wd, c.rows, c.cols, trans, compute == DType::BF16);
          if (beta == 1.0f)
            for (double& v : ref) v += 0.5;
          // f32 sums of K products: a few ulps of the largest output; bf16 operands are identical
          // in both, so the same tolerance holds.
          CHECK(allclose(out.to_vector<double>(), ref, 0.0, 1e-5 * (max_abs(ref) + 1) * std::sqrt(double(K))));
        }
      }
    }
}

TEST_CASE("quant_linear: f64 gradients of x, bias and LoRA factors through an NF4 base match finite differences") {
  const int64_t out = 6, in = 70, r = 3, n = 4;
  const auto w = randomf(size_t(out * in), 11, 0.1f);
  QuantWeight q = quantize_weight(w.data(), out, in, spec_of(QuantType::NF4, 64, DType::F32, true), Device{});
  auto leaf = [](std::vector<float> v, Shape s) {
    std::vector<double> d(v.begin(), v.end());
    Tensor t = from_data(d, s);
    t.set_requires_grad(true);
    return t;
  };
  Tensor x = leaf(randomf(size_t(n * in), 12), {n, in});
  Tensor b = leaf(randomf(size_t(out), 13), {out});
  Tensor A = leaf(randomf(size_t(r * in), 14, 0.3f), {r, in});
  Tensor B = leaf(randomf(size_t(out * r), 15, 0.3f), {out, r});
  auto fn = [&](const std::vector<Tensor>& v) {
    // base(x) + s * B A x, the LoRA forward on a quantized base
    return add(quant_linear(v[0], q, v[1]), mul(linear(linear(v[0], v[2]), v[3]), 0.5));
  };
  GradcheckResult g = gradcheck(fn, {x, b, A, B});
  CHECK_MESSAGE(g.max_rel_error < 1e-7, g.worst);
}

TEST_CASE("quant_linear: the probe's gradient is the dense weight gradient dy^T x; W itself gets none") {
  const int64_t out = 9, in = 40, n = 5;
  const auto w = randomf(size_t(out * in), 21, 0.1f);
  for (QuantType t : {QuantType::NF4, QuantType::Int8}) {
    QuantWeight q = quantize_weight(w.data(), out, in, spec_of(t, 32, DType::F32), Device{});
    Tensor x = from_data(randomf(size_t(n * in), 22), {n, in});
    Tensor probe = zeros({out, in});
    probe.set_requires_grad(true);
    Tensor gy = from_data(randomf(size_t(n * out), 23), {n, out});
    backward(sum(mul(quant_linear(x, q, Tensor(), probe), gy)));
    Tensor wd = dequantize(q);
    wd.set_requires_grad(true);
    backward(sum(mul(linear(x, wd), gy)));
    CHECK(allclose(probe.grad(), wd.grad(), 1e-5, 1e-6));
  }
}

TEST_CASE("nn::Linear quantized: forward, Conv1D layout, re-quantizing writes and low-rank side terms") {
  for (bool conv1d : {false, true}) {
    CAPTURE(conv1d);
    const int64_t in = 48, out = 20;
    nn::Linear lin(in, out, true, {}, conv1d);
    lin.bias().copy_(from_data(randomf(size_t(out), 31), {out}));
    Tensor dense = lin.weight_out_in().contiguous().clone();  // (out, in)
    QuantSpec s = spec_of(QuantType::NF4, 64, DType::F32);
    lin.set_quantized(quantize_weight(dense, s, Device{}));
    CHECK(lin.quantized());
    CHECK(lin.weight().dtype() == DType::I32);
    auto sd = lin.state_dict();
    CHECK(sd.count("weight.absmax") == 1);
    Tensor x = from_data(randomf(size_t(3 * in), 32), {3, in});
    Tensor wq = lin.weight_out_in();
    CHECK(allclose(lin.forward(x), add(matmul(x, wq.t()), lin.bias()), 1e-5, 1e-6));
    // A side term is added exactly, the codes stay as they are.
    Tensor bf = from_data(randomf(size_t(out * 2), 33, 0.01f), {out, 2});
    Tensor af = from_data(randomf(size_t(2 * in), 34), {2, in});
    const auto codes = lin.weight().to_vector<int32_t>();
    lin.add_low_rank(bf, af);
    CHECK(lin.side_rank() == 2);
    CHECK(lin.weight().to_vector<int32_t>() == codes);
    CHECK(allclose(lin.forward(x), add(matmul(x, add(wq, matmul(bf, af)).t()), lin.bias()), 1e-5, 1e-6));
    // Writing a new weight re-quantizes it; the reported error is that of NF4 on this weight.
    Tensor target = add(dense, 0.01);
    const double err = lin.write_weight_out_in(target);
    CHECK(lin.side_rank() == 0);
    CHECK(err > 0.0);
    CHECK(err < 0.2);
    Tensor back = lin.weight_out_in();
    const double rel = std::sqrt(sum(square(sub(back, target))).item() / sum(square(target)).item());
    CHECK(rel == doctest::Approx(err).epsilon(1e-6));
  }
}
