// Forward values of the fused and indexing ops against references composed of plain ops (f64),
// or against hand-computed numbers: the gradient check proves backward matches forward, these
// prove the forward itself is right.
#include <fmt/format.h>

#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

Tensor rnd(const Shape& s, uint64_t seed) {
  manual_seed(seed);
  return randn(s, 0.0, 1.0, DType::F64);
}

void check_close(const Tensor& a, const Tensor& b, double tol, const char* what) {
  REQUIRE(a.shape() == b.shape());
  double e = max_abs_diff(a, b);
  CHECK_MESSAGE(e <= tol, fmt::format("{}: max abs diff {:.3g}", what, e));
}

// softmax(q k^T * scale + mask) v with the mask built densely: the O(T^2) reference.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, const Tensor& key_mask) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), Hk = k.size(1);
  Tensor kk = k, vv = v;
  if (Hk != H) {  // GQA: repeat each kv head for its group of query heads
    std::vector<Tensor> ks, vs;
    for (int64_t h = 0; h < H; ++h) {
      ks.push_back(narrow(k, 1, h / (H / Hk), 1));
      vs.push_back(narrow(v, 1, h / (H / Hk), 1));
    }
    kk = cat(ks, 1);
    vv = cat(vs, 1);
  }
  Tensor s = matmul(q, kk.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(3))));
  std::vector<double> bias(size_t(B * Tq * Tk), 0.0);
  std::vector<int64_t> km =
      key_mask.defined() ? cast(key_mask, DType::I64).to_vector<int64_t>() : std::vector<int64_t>{};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) {
        bool vis = (!causal || j <= i + (Tk - Tq)) && (km.empty() || km[size_t(b * Tk + j)]);
        if (!vis) bias[size_t((b * Tq + i) * Tk + j)] = -1e30;
      }
  s = s + from_data(bias, {B, 1, Tq, Tk});
  return matmul(softmax(s, -1), vv);
}

TEST_CASE("fused ops match compositions of plain ops") {
  Tensor x = rnd({3, 5, 7}, 1), w = rnd({7}, 2), b = rnd({7}, 3);
  // softmax / log_softmax
  Tensor e = exp(x - max(x, {-1}, true));
  check_close(softmax(x, -1), e / sum(e, {-1}, true), 1e-12, "softmax");
  check_close(log_softmax(x, 1), x - log(sum(exp(x), {1}, true)), 1e-12, "log_softmax axis 1");
  // layer_norm (biased variance) and rms_norm
  Tensor mu = mean(x, {-1}, true), var = mean(square(x - mu), {-1}, true);
  check_close(layer_norm(x, w, b, 1e-5), (x - mu) * rsqrt(var + 1e-5) * w + b, 1e-12, "layer_norm");
  check_close(rms_norm(x, w, 1e-6), x * rsqrt(mean(square(x), {-1}, true) + 1e-6) * w, 1e-12, "rms_norm");
  // gelu (erf and tanh forms) and silu against their formulas
  std::vector<double> xv = x.to_vector<double>(), ge = gelu(x).to_vector<double>(),
                      gt = gelu(x, GeluApprox::Tanh).to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) {
    double v = xv[i];
    CHECK(std::abs(ge[i] - 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))) < 1e-12);
    CHECK(std::abs(gt[i] - 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))) < 1e-12);
  }
  check_close(silu(x), x * sigmoid(x), 1e-12, "silu");
}

TEST_CASE("rope matches x * cos + rotate_half(x) * sin (Hugging Face layout)") {
  Tensor x = rnd({2, 3, 5, 8}, 4);
  auto [c, s] = rope_tables(5, 8, 10000.0, Tensor(), DType::F64);
  // HF: inv_freq[i] = theta^(-2i/D); position 3, pair 1 -> angle 3 * 10000^(-2/8)
  CHECK(std::abs(c.to_vector<double>()[3 * 8 + 1] - std::cos(3 * std::pow(10000.0, -0.25))) < 1e-12);
  Tensor x1 = narrow(x, -1, 0, 4), x2 = narrow(x, -1, 4, 4);
  Tensor rot = cat({neg(x2), x1}, -1);
  check_close(rope(x, c, s), x * c + rot * s, 1e-12, "rope");
  // Per-batch positions (B, T) give per-batch tables.
  Tensor pos = i64({0, 1, 2, 3, 4, 7, 8, 9, 10, 11}, {2, 5});
  auto [cb, sb] = rope_tables(5, 8, 10000.0, pos, DType::F64);
  Tensor yb = rope(x, cb, sb);
  check_close(narrow(yb, 0, 0, 1), narrow(rope(x, c, s), 0, 0, 1), 1e-12, "rope batch 0 = default positions");
}

TEST_CASE("scaled_dot_product_attention matches the dense reference") {
  struct Case {
    int64_t H, Hk, Tq, Tk;
    bool causal, masked;
  };
  for (Case cs : {Case{2, 2, 6, 6, false, false}, Case{2, 2, 6, 6, true, false}, Case{4, 2, 5, 5, true, true},
                  Case{2, 1, 3, 7, true, false}, Case{2, 2, 4, 6, false, true}}) {
    Tensor q = rnd({2, cs.H, cs.Tq, 8}, 5), k = rnd({2, cs.Hk, cs.Tk, 8}, 6), v = rnd({2, cs.Hk, cs.Tk, 4}, 7);
    Tensor mask;
    if (cs.masked) {
      std::vector<int> m(size_t(2 * cs.Tk), 1);
      m[size_t(cs.Tk - 1)] = 0;  // batch 0: last key padded
      m[size_t(cs.Tk + 1)] = 0;  // batch 1: second key padded
      mask = bools(m, {2, cs.Tk});
    }
    Tensor got = scaled_dot_product_attention(q, k, v, {.causal = cs.causal, .key_mask = mask});
    check_close(
        got, naive_attention(q, k, v, cs.causal, mask), 1e-12,
        fmt::format("sdpa H={} Hk={} Tq={} Tk={} causal={} mask={}", cs.H, cs.Hk, cs.Tq, cs.Tk, cs.causal, cs.masked)
            .c_str());
  }
}

TEST_CASE("cross_entropy matches -log_softmax at the target, with ignore_index and reductions") {
  Tensor logits = rnd({6, 5}, 8);
  Tensor t = i64({0, 4, -100, 2, 1, -100}, {6});
  Tensor none = cross_entropy(logits, t, -100, Reduction::None);
  std::vector<double> ls = log_softmax(logits, -1).to_vector<double>(), nv = none.to_vector<double>();
  std::vector<int64_t> tv = t.to_vector<int64_t>();
  double total = 0;
  for (size_t n = 0; n < 6; ++n) {
    double ref = tv[n] == -100 ? 0.0 : -ls[n * 5 + size_t(tv[n])];
    CHECK(std::abs(nv[n] - ref) < 1e-12);
    total += ref;
  }
  CHECK(std::abs(cross_entropy(logits, t, -100, Reduction::Sum).item() - total) < 1e-12);
  CHECK(std::abs(cross_entropy(logits, t).item() - total / 4) < 1e-12);  // mean over the 4 kept targets
  CHECK_THROWS_WITH_AS(cross_entropy(logits, i64({0, 5, 0, 0, 0, 0}, {6})),
                       "[cross_entropy] target 5 out of range for 5 classes", std::out_of_range);
}

TEST_CASE("matmul, indexing and top-k forward values") {
  Tensor a = f64({1, 2, 3, 4, 5, 6}, {2, 3}), bm = f64({1, 0, 2, 1, 0, 3}, {3, 2});
  CHECK(matmul(a, bm).to_vector<double>() == std::vector<double>{5, 11, 14, 23});
  CHECK(matmul(bm.t(), a.t()).to_vector<double>() == std::vector<double>{5, 14, 11, 23});  // transposed views
  Tensor batch = stack({a, a * 2.0}, 0);                                                   // (2, 2, 3) @ (3, 2)
  CHECK(matmul(batch, bm).to_vector<double>() == std::vector<double>{5, 11, 14, 23, 10, 22, 28, 46});
  Tensor table = f64({0, 1, 10, 11, 20, 21}, {3, 2});
  CHECK(embedding(table, i64({2, 0, 2}, {3})).to_vector<double>() == std::vector<double>{20, 21, 0, 1, 20, 21});
  CHECK(index_select(table, 1, i64({1}, {1})).to_vector<double>() == std::vector<double>{1, 11, 21});
  CHECK(gather(table, 1, i64({1, 0, 0, 0, 1, 1}, {3, 2})).to_vector<double>() ==
        std::vector<double>{1, 0, 10, 10, 21, 21});
  auto [vals, idx] = topk(f64({3, 9, 1, 9, 5}, {1, 5}), 3);
  CHECK(vals.to_vector<double>() == std::vector<double>{9, 9, 5});
  CHECK(idx.to_vector<int64_t>() == std::vector<int64_t>{1, 3, 4});  // ties keep the lower index first
  CHECK(argmax(f64({3, 9, 1, 9, 5, 0}, {2, 3}), 1).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
}

TEST_CASE("attention keeps no (Tq, Tk) tensor alive for backward") {
  // With T = 512 a saved score matrix would hold 512*512*4 = 1 MiB per head; q, k, v, o, lse hold ~66 KiB.
  Tensor q = randn({1, 1, 512, 8}).set_requires_grad(), k = randn({1, 1, 512, 8}).set_requires_grad();
  Tensor v = randn({1, 1, 512, 8}).set_requires_grad();
  size_t before = cpu::allocator_stats().bytes_in_use;
  Tensor o = scaled_dot_product_attention(q, k, v, {.causal = true});
  size_t held = cpu::allocator_stats().bytes_in_use - before;
  CHECK_MESSAGE(held < 512 * 512 * 4 / 4, fmt::format("attention holds {} bytes after forward", held));
  backward(sum(o));
  CHECK(q.grad().defined());
}

}  // namespace
}  // namespace rf::test
