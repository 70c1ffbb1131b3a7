// The op table shared by the gradient check and the backend parity suite (see op_table.h).
#include "tests/op_table.h"

#include "backends/cpu/cpu_sparse.h"

namespace rf::test {
namespace {

using V = const std::vector<Tensor>&;
using InputFn = std::function<std::vector<Tensor>()>;

// Value ranges: |v| in [lo, hi]; positive for log/sqrt/pow bases; avoid = kinks (clamp bounds).
struct Vals {
  double lo = 0.1, hi = 1.5;
  bool positive = false;
  std::vector<double> avoid = {};
};

// Leaves of the given shapes drawn from ONE pool of distinct values, so that maximum/minimum
// and max/min/topk never compare two equal numbers.
InputFn in(std::vector<Shape> shapes, Vals v = {}) {
  static uint64_t seed = 1000;
  uint64_t s = seed++;
  return [shapes = std::move(shapes), v, s] {
    size_t n = 0;
    for (const Shape& sh : shapes) n += size_t(numel(sh));
    std::vector<double> pool = distinct_values(n, s, v.lo, v.hi, v.positive, v.avoid);
    std::vector<Tensor> out;
    size_t at = 0;
    for (const Shape& sh : shapes) {
      size_t k = size_t(numel(sh));
      out.push_back(leaf(std::vector<double>(pool.begin() + long(at), pool.begin() + long(at + k)), sh));
      at += k;
    }
    return out;
  };
}

const Vals kPos{0.2, 2.0, true};

// A (rows, cols) pattern with empty rows and columns, a full row and a full column, on the CPU.
SparsePattern test_pattern(int64_t rows, int64_t cols) {
  std::vector<int64_t> r, c;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      if (i == 1 || j == cols - 1 || (i != 0 && (i * 7 + j * 3) % 5 == 0)) r.push_back(i), c.push_back(j);
  return make_pattern(csr_from_triplets(rows, cols, r, c, std::vector<float>(r.size())), Device{});
}

}  // namespace

std::vector<GradCase> build_table() {
  std::vector<GradCase> t;
  auto add_case = [&](std::string op, std::string variant, InputFn inputs, GradFn fn) {
    t.push_back({std::move(op), std::move(variant), std::move(inputs), std::move(fn)});
  };

  // ---- broadcasting binary ----
  add_case("add", "same shape", in({{2, 3}, {2, 3}}), [](V x) { return add(x[0], x[1]); });
  add_case("add", "broadcast (3,1,4)+(2,4)", in({{3, 1, 4}, {2, 4}}), [](V x) { return add(x[0], x[1]); });
  add_case("add", "transposed lhs", in({{4, 3}, {3, 4}}), [](V x) { return add(x[0].t(), x[1]); });
  add_case("sub", "broadcast (2,1)-(1,3)", in({{2, 1}, {1, 3}}), [](V x) { return sub(x[0], x[1]); });
  add_case("sub", "strided slice lhs", in({{2, 6}, {2, 3}}), [](V x) { return sub(slice(x[0], 1, 0, 6, 2), x[1]); });
  add_case("mul", "broadcast (3,1,4)*(2,4)", in({{3, 1, 4}, {2, 4}}), [](V x) { return mul(x[0], x[1]); });
  add_case("mul", "permuted lhs", in({{4, 2, 3}, {2, 3, 4}}), [](V x) { return mul(permute(x[0], {1, 2, 0}), x[1]); });
  add_case("mul", "same tensor twice", in({{3, 4}}), [](V x) { return mul(x[0], x[0]); });
  add_case("div", "broadcast (3,1,4)/(2,4)", in({{3, 1, 4}, {2, 4}}, {0.3, 1.5}), [](V x) { return div(x[0], x[1]); });
  add_case("div", "transposed rhs", in({{3, 4}, {4, 3}}, {0.3, 1.5}), [](V x) { return div(x[0], x[1].t()); });
  add_case("pow", "broadcast, signed exponent", in({{3, 1, 4}, {2, 4}}, {0.3, 1.5, true}),
           [](V x) { return pow(x[0], sub(x[1], full({1}, 0.8, x[1].dtype(), x[1].device()))); });
  add_case("maximum", "broadcast (3,1,4) vs (2,4)", in({{3, 1, 4}, {2, 4}}), [](V x) { return maximum(x[0], x[1]); });
  add_case("maximum", "transposed lhs", in({{4, 3}, {3, 4}}), [](V x) { return maximum(x[0].t(), x[1]); });
  add_case("minimum", "broadcast (3,1,4) vs (2,4)", in({{3, 1, 4}, {2, 4}}), [](V x) { return minimum(x[0], x[1]); });
  add_case("minimum", "broadcast scalar-shaped rhs", in({{3, 4}, {1}}), [](V x) { return minimum(x[0], x[1]); });

  // ---- scalar forms ----
  add_case("add_scalar", "x + 1.5", in({{3, 4}}), [](V x) { return add(x[0], 1.5); });
  add_case("mul_scalar", "x * -2.5 on a transpose", in({{4, 3}}), [](V x) { return mul(x[0].t(), -2.5); });
  add_case("pow_scalar", "x ^ 2.5", in({{3, 4}}, kPos), [](V x) { return pow(x[0], 2.5); });
  add_case("pow_scalar", "x ^ -1.5", in({{3, 4}}, kPos), [](V x) { return pow(x[0], -1.5); });
  add_case("rsub", "3 - x", in({{3, 4}}), [](V x) { return rsub(3.0, x[0]); });
  add_case("rdiv", "2 / x", in({{3, 4}}, {0.3, 1.5}), [](V x) { return rdiv(2.0, x[0]); });
  add_case("rdiv", "operator 2 / x^T", in({{4, 3}}, {0.3, 1.5}), [](V x) { return 2.0 / x[0].t(); });

  // ---- unary: every op contiguous and on a transposed view ----
  struct Unary {
    const char* name;
    Tensor (*f)(const Tensor&);
    Vals vals;
  };
  const std::vector<Unary> unaries = {
      {"neg", [](const Tensor& a) { return neg(a); }, {}},
      {"abs", [](const Tensor& a) { return abs(a); }, {}},
      {"exp", [](const Tensor& a) { return exp(a); }, {}},
      {"log", [](const Tensor& a) { return log(a); }, kPos},
      {"sqrt", [](const Tensor& a) { return sqrt(a); }, kPos},
      {"rsqrt", [](const Tensor& a) { return rsqrt(a); }, kPos},
      {"tanh", [](const Tensor& a) { return tanh(a); }, {}},
      {"sigmoid", [](const Tensor& a) { return sigmoid(a); }, {}},
      {"relu", [](const Tensor& a) { return relu(a); }, {}},
      {"silu", [](const Tensor& a) { return silu(a); }, {}},
      {"gelu_erf", [](const Tensor& a) { return gelu(a, GeluApprox::None); }, {0.1, 2.5}},
      {"gelu_tanh", [](const Tensor& a) { return gelu(a, GeluApprox::Tanh); }, {0.1, 2.5}},
      {"square", [](const Tensor& a) { return square(a); }, {}},
  };
  for (const Unary& u : unaries) {
    auto f = u.f;
    add_case(u.name, "contiguous", in({{3, 4}}, u.vals), [f](V x) { return f(x[0]); });
    add_case(u.name, "transposed view", in({{4, 3}}, u.vals), [f](V x) { return f(x[0].t()); });
  }
  add_case("swiglu", "(3,5) gate and up", in({{3, 5}, {3, 5}}), [](V x) { return swiglu(x[0], x[1]); });
  add_case("swiglu", "transposed gate, strided up", in({{5, 3}, {3, 10}}),
           [](V x) { return swiglu(x[0].t(), slice(x[1], 1, 0, 10, 2)); });
  add_case("clamp", "both bounds active", in({{4, 5}}, {0.1, 1.5, false, {-0.7, 0.3}}),
           [](V x) { return clamp(x[0], -0.7, 0.3); });
  add_case("clamp", "strided slice", in({{4, 6}}, {0.1, 1.5, false, {-0.5, 0.5}}),
           [](V x) { return clamp(slice(x[0], 1, 1, 6, 2), -0.5, 0.5); });
  Tensor cond34 = bools({1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1}, {3, 4});
  add_case("where", "cond (3,4), b broadcast (4)", in({{3, 4}, {4}}),
           [cond34](V x) { return where(like(cond34, x[0]), x[0], x[1]); });
  Tensor cond31 = bools({1, 0, 1}, {3, 1});
  add_case("where", "cond (3,1), transposed a", in({{4, 3}, {3, 4}}),
           [cond31](V x) { return where(like(cond31, x[0]), x[0].t(), x[1]); });

  // ---- reductions ----
  add_case("sum", "all", in({{3, 4}}), [](V x) { return sum(x[0]); });
  add_case("sum", "axis 1", in({{2, 3, 4}}), [](V x) { return sum(x[0], {1}); });
  add_case("sum", "axes {0,2} keepdim", in({{2, 3, 4}}), [](V x) { return sum(x[0], {0, 2}, true); });
  add_case("sum", "axis -1 of a permute", in({{4, 2, 3}}), [](V x) { return sum(permute(x[0], {2, 0, 1}), {-1}); });
  add_case("mean", "all", in({{3, 4}}), [](V x) { return mean(x[0]); });
  add_case("mean", "axis -2 keepdim", in({{2, 3, 4}}), [](V x) { return mean(x[0], {-2}, true); });
  add_case("mean", "axes {0,1} of a transpose", in({{4, 3}}), [](V x) { return mean(x[0].t(), {0, 1}); });
  add_case("max", "all", in({{3, 4}}), [](V x) { return max(x[0]); });
  add_case("max", "axis 1", in({{2, 3, 4}}), [](V x) { return max(x[0], {1}); });
  add_case("max", "axis -1 keepdim of a transpose", in({{4, 3}}), [](V x) { return max(x[0].t(), {-1}, true); });
  add_case("min", "axis 0", in({{3, 4}}), [](V x) { return min(x[0], {0}); });
  add_case("min", "axes {1,2} keepdim", in({{2, 3, 4}}), [](V x) { return min(x[0], {1, 2}, true); });
  add_case("norm", "p=2 all", in({{3, 4}}), [](V x) { return norm(x[0]); });
  add_case("norm", "p=2 axis -1 keepdim", in({{2, 3, 4}}), [](V x) { return norm(x[0], 2.0, {-1}, true); });
  add_case("norm", "p=3 axis 0 of a transpose", in({{4, 3}}), [](V x) { return norm(x[0].t(), 3.0, {0}); });

  // ---- linear algebra ----
  add_case("matmul", "(2,3)@(3,4)", in({{2, 3}, {3, 4}}), [](V x) { return matmul(x[0], x[1]); });
  add_case("matmul", "a^T @ b", in({{3, 2}, {3, 4}}), [](V x) { return matmul(x[0].t(), x[1]); });
  add_case("matmul", "a @ b^T", in({{2, 3}, {4, 3}}), [](V x) { return matmul(x[0], x[1].t()); });
  add_case("matmul", "a^T @ b^T", in({{3, 2}, {4, 3}}), [](V x) { return matmul(x[0].t(), x[1].t()); });
  add_case("matmul", "batched (2,2,3)@(2,3,4)", in({{2, 2, 3}, {2, 3, 4}}), [](V x) { return matmul(x[0], x[1]); });
  add_case("matmul", "broadcast batch (2,1,2,3)@(3,3,2)", in({{2, 1, 2, 3}, {3, 3, 2}}),
           [](V x) { return matmul(x[0], x[1]); });
  add_case("matmul", "batched transposed a, broadcast b (1,3,4)", in({{2, 3, 2}, {1, 3, 4}}),
           [](V x) { return matmul(transpose(x[0], -2, -1), x[1]); });
  add_case("linear", "3-D x with bias", in({{2, 3, 4}, {5, 4}, {5}}), [](V x) { return linear(x[0], x[1], x[2]); });
  add_case("linear", "no bias, transposed x", in({{4, 3}, {2, 4}}), [](V x) { return linear(x[0].t(), x[1]); });
  add_case("lora_linear", "3-D x, bias, dropped xd, r 2", in({{2, 3, 4}, {5, 4}, {5}, {2, 3, 4}, {2, 4}, {5, 2}}),
           [](V x) { return lora_linear(x[0], x[1], x[2], x[3], x[4], x[5], 0.75); });
  add_case("lora_linear", "x is xd, no bias, transposed w (Conv1D)", in({{4, 3}, {3, 5}, {2, 3}, {5, 2}}),
           [](V x) { return lora_linear(x[0], x[1].t(), Tensor(), x[0], x[2], x[3], 2.0); });

  // ---- fused ----
  add_case("softmax", "last axis", in({{3, 5}}), [](V x) { return softmax(x[0], -1); });
  add_case("softmax", "axis 0", in({{3, 4}}), [](V x) { return softmax(x[0], 0); });
  add_case("softmax", "axis 1 of 3-D transpose", in({{4, 3, 2}}),
           [](V x) { return softmax(transpose(x[0], 0, 2), 1); });
  add_case("log_softmax", "last axis", in({{3, 5}}), [](V x) { return log_softmax(x[0], -1); });
  add_case("log_softmax", "axis -2", in({{2, 3, 4}}), [](V x) { return log_softmax(x[0], -2); });
  add_case("log_softmax", "transposed input", in({{5, 3}}), [](V x) { return log_softmax(x[0].t(), -1); });
  add_case("layer_norm", "(3,5) with w, b", in({{3, 5}, {5}, {5}}), [](V x) { return layer_norm(x[0], x[1], x[2]); });
  add_case("layer_norm", "3-D transposed x", in({{2, 4, 2}, {4}, {4}}),
           [](V x) { return layer_norm(transpose(x[0], 1, 2), x[1], x[2]); });
  add_case("layer_norm", "4 features, transposed x", in({{4, 3}, {4}, {4}}),
           [](V x) { return layer_norm(x[0].t(), x[1], x[2]); });
  add_case("rms_norm", "(3,5)", in({{3, 5}, {5}}), [](V x) { return rms_norm(x[0], x[1]); });
  add_case("rms_norm", "3-D transposed x", in({{2, 4, 3}, {4}}),
           [](V x) { return rms_norm(transpose(x[0], 1, 2), x[1]); });

  // ---- indexing and joining ----
  Tensor ids23 = i64({4, 0, 4, 2, 5, 0}, {2, 3});
  add_case("embedding", "repeated ids (2,3)", in({{6, 3}}),
           [ids23](V x) { return embedding(x[0], like(ids23, x[0])); });
  Tensor ids4 = i64({4, 0, 4, 2}, {4});
  add_case("index_select", "axis 0 with repeats", in({{5, 3}}),
           [ids4](V x) { return index_select(x[0], 0, like(ids4, x[0])); });
  Tensor ids2 = i64({2, 0, 2}, {3});
  add_case("index_select", "axis -1 of a transpose", in({{3, 4}}),
           [ids2](V x) { return index_select(x[0].t(), -1, like(ids2, x[0])); });
  Tensor idx32 = i64({3, 0, 1, 1, 2, 3}, {3, 2});
  add_case("gather", "axis 1", in({{3, 4}}), [idx32](V x) { return gather(x[0], 1, like(idx32, x[0])); });
  Tensor idx24 = i64({2, 0, 1, 2, 0, 0, 2, 1}, {2, 4});
  add_case("gather", "axis 0 of a transpose", in({{4, 3}}),
           [idx24](V x) { return gather(x[0].t(), 0, like(idx24, x[0])); });
  add_case("cat", "axis 1", in({{2, 3}, {2, 2}}), [](V x) { return cat({x[0], x[1]}, 1); });
  add_case("cat", "axis 0, one transposed", in({{2, 3}, {3, 1}, {1, 3}}), [](V x) {
    return cat({x[0], x[1].t(), x[2]}, 0);
  });
  add_case("split", "sizes {1,3}, combined by broadcast", in({{2, 4}}), [](V x) {
    auto s = split(x[0], std::vector<int64_t>{1, 3}, -1);
    return mul(s[0], s[1]);
  });
  add_case("split", "equal chunks of 2 along axis 1", in({{2, 6}}), [](V x) {
    auto s = split(x[0], int64_t(2), 1);
    return add(mul(s[0], s[1]), mul(s[2], 3.0));
  });
  add_case("stack", "axis 1", in({{2, 3}, {2, 3}, {2, 3}}), [](V x) { return stack({x[0], x[1], x[2]}, 1); });
  add_case("stack", "axis -1, one transposed", in({{2, 3}, {3, 2}}), [](V x) { return stack({x[0], x[1].t()}, -1); });
  add_case("topk", "k=2 values", in({{3, 5}}), [](V x) { return topk(x[0], 2).first; });
  add_case("topk", "k=3 values of a transpose", in({{5, 3}}), [](V x) { return topk(x[0].t(), 3).first; });
  add_case("dropout", "p=0.4, re-seeded mask", in({{4, 5}}), [](V x) {
    manual_seed(11);
    return dropout(x[0], 0.4);
  });

  // ---- losses ----
  Tensor tgt6 = i64({0, 3, -100, 4, 1, 3}, {6});
  add_case("cross_entropy", "mean, ignore -100", in({{6, 5}}),
           [tgt6](V x) { return cross_entropy(x[0], like(tgt6, x[0])); });
  add_case("cross_entropy", "sum", in({{6, 5}}),
           [tgt6](V x) { return cross_entropy(x[0], like(tgt6, x[0]), -100, Reduction::Sum); });
  add_case("cross_entropy", "none, transposed logits", in({{5, 6}}),
           [tgt6](V x) { return cross_entropy(x[0].t(), like(tgt6, x[0]), -100, Reduction::None); });
  Tensor tgt23 = i64({1, 2, 0, 4, 2, 3}, {2, 3});
  add_case("cross_entropy", "3-D logits, ignore_index 2, mean", in({{2, 3, 5}}),
           [tgt23](V x) { return cross_entropy(x[0], like(tgt23, x[0]), 2); });

  // ---- rope and attention ----
  auto [cos46, sin46] = rope_tables(4, 6, 10000.0, Tensor(), DType::F64);
  add_case("rope", "(T,D) tables", in({{1, 2, 4, 6}}),
           [c = cos46, s = sin46](V x) { return rope(x[0], like(c, x[0]), like(s, x[0])); });
  auto [cosb, sinb] = rope_tables(3, 4, 100.0, i64({0, 1, 2, 5, 3, 1}, {2, 3}), DType::F64);
  add_case("rope", "(B,T,D) tables, x from (B,T,H,D) transpose", in({{2, 3, 2, 4}}),
           [c = cosb, s = sinb](V x) { return rope(transpose(x[0], 1, 2), like(c, x[0]), like(s, x[0])); });
  auto sdpa = [](bool causal, Tensor mask = Tensor(), double scale = 0.0) {
    AttnOptions o;
    o.causal = causal;
    o.scale = scale;
    return [o, mask](V x) {
      AttnOptions oo = o;
      if (mask.defined()) oo.key_mask = like(mask, x[0]);
      return scaled_dot_product_attention(x[0], x[1], x[2], oo);
    };
  };
  add_case("scaled_dot_product_attention", "plain", in({{1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}}), sdpa(false));
  add_case("scaled_dot_product_attention", "causal", in({{1, 2, 4, 3}, {1, 2, 4, 3}, {1, 2, 4, 3}}), sdpa(true));
  add_case("scaled_dot_product_attention", "key padding mask", in({{2, 1, 3, 4}, {2, 1, 3, 4}, {2, 1, 3, 4}}),
           sdpa(false, bools({1, 1, 0, 1, 0, 1}, {2, 3})));
  add_case("scaled_dot_product_attention", "GQA 4 heads over 2 kv heads, Dv=3",
           in({{1, 4, 3, 2}, {1, 2, 3, 2}, {1, 2, 3, 3}}), sdpa(false));
  add_case("scaled_dot_product_attention", "causal Tq=2 < Tk=5, scale 0.7",
           in({{1, 2, 2, 4}, {1, 2, 5, 4}, {1, 2, 5, 4}}), sdpa(true, Tensor(), 0.7));
  add_case("scaled_dot_product_attention", "causal + mask + GQA, q/k/v from (B,T,H,D)",
           in({{2, 3, 2, 2}, {2, 3, 1, 2}, {2, 3, 1, 2}}), [mask = bools({1, 0, 1, 1, 1, 0}, {2, 3})](V x) {
             AttnOptions o;
             o.causal = true;
             o.key_mask = like(mask, x[0]);
             return scaled_dot_product_attention(transpose(x[0], 1, 2), transpose(x[1], 1, 2), transpose(x[2], 1, 2),
                                                 o);
           });

  // ---- views ----
  add_case("reshape", "viewable (3,4)->(2,6)", in({{3, 4}}), [](V x) { return reshape(x[0], {2, 6}); });
  add_case("reshape", "copying: transpose then -1", in({{3, 4}}), [](V x) { return reshape(x[0].t(), {-1}); });
  add_case("view", "(2,6)->(3,2,2)", in({{2, 6}}), [](V x) { return view(x[0], {3, 2, 2}); });
  add_case("permute", "(2,3,4)->{2,0,1}", in({{2, 3, 4}}), [](V x) { return permute(x[0], {2, 0, 1}); });
  add_case("transpose", "axes 0,-1 of 3-D", in({{2, 3, 4}}), [](V x) { return transpose(x[0], 0, -1); });
  add_case("narrow", "axis 1 start 1 len 2", in({{3, 4}}), [](V x) { return narrow(x[0], 1, 1, 2); });
  add_case("slice", "step 2 on axis 1", in({{3, 7}}), [](V x) { return slice(x[0], 1, 1, 7, 2); });
  add_case("slice", "step 3 of a transpose", in({{3, 7}}), [](V x) { return slice(x[0].t(), 0, 0, 7, 3); });
  add_case("expand", "(3,1)->(3,4)", in({{3, 1}}), [](V x) { return expand(x[0], {3, 4}); });
  add_case("expand", "(4)->(2,3,-1)", in({{4}}), [](V x) { return expand(x[0], {2, 3, -1}); });
  add_case("squeeze", "axis 1", in({{3, 1, 4}}), [](V x) { return squeeze(x[0], 1); });
  add_case("unsqueeze", "axis -1", in({{3, 4}}), [](V x) { return unsqueeze(x[0], -1); });
  add_case("flatten", "from axis 1 of a permute", in({{2, 3, 2}}), [](V x) {
    return flatten(permute(x[0], {1, 0, 2}), 1);
  });
  add_case("contiguous", "of a transpose", in({{3, 4}}), [](V x) { return contiguous(x[0].t()); });
  add_case("contiguous", "already contiguous", in({{3, 4}}), [](V x) { return contiguous(x[0]); });
  add_case("clone", "of a strided slice", in({{3, 6}}), [](V x) { return clone(slice(x[0], 1, 0, 6, 2)); });
  add_case("expand", "chain: transpose, narrow, expand, mul", in({{4, 1, 3}, {3, 2, 2}}), [](V x) {
    return mul(expand(narrow(transpose(x[0], 0, 2), 2, 1, 2), {3, 2, 2}).t(), x[1]);
  });
  // ---- sparse (RoSA): the pattern moves to the inputs' device ----
  {
    const SparsePattern p = test_pattern(5, 4), pw = test_pattern(4, 6);
    add_case("spmm", "S (5,4) @ x (4,3)", in({{p.nnz}, {4, 3}}),
             [p](V x) { return spmm(p.to(x[0].device()), x[0], x[1]); });
    add_case("sddmm", "(a b^T)|M, a (5,3), b (4,3)", in({{5, 3}, {4, 3}}),
             [p](V x) { return sddmm(p.to(x[0].device()), x[0], x[1]); });
    add_case("csr_add_dense", "W (5,4) + S", in({{p.nnz}, {5, 4}}),
             [p](V x) { return csr_add_dense(p.to(x[0].device()), x[0], x[1]); });
    add_case("sparse_linear", "x (2,3,6) S^T, S (4,6)", in({{2, 3, 6}, {pw.nnz}}),
             [pw](V x) { return sparse_linear(x[0], pw.to(x[0].device()), x[1]); });
    add_case("sp_add_linear", "x (2,3,6) (W0 + S)^T, W0 transposed view", in({{2, 3, 6}, {6, 4}, {pw.nnz}}),
             [pw](V x) { return sp_add_linear(x[0], x[1].t(), pw.to(x[0].device()), x[2]); });
  }
  return t;
}

// Every differentiable op the engine exports; the table must cover each one.
const std::vector<std::string> kRequiredOps = {
    "add",        "sub",           "mul",           "div",
    "pow",        "maximum",       "minimum",       "neg",
    "abs",        "exp",           "log",           "sqrt",
    "rsqrt",      "tanh",          "sigmoid",       "relu",
    "silu",       "swiglu",        "gelu_erf",      "gelu_tanh",
    "clamp",      "where",         "sum",           "mean",
    "max",        "min",           "norm",          "matmul",
    "linear",     "lora_linear",   "softmax",       "log_softmax",
    "layer_norm", "rms_norm",      "embedding",     "index_select",
    "gather",     "cat",           "split",         "stack",
    "dropout",    "cross_entropy", "rope",          "scaled_dot_product_attention",
    "topk",       "add_scalar",    "mul_scalar",    "pow_scalar",
    "rsub",       "rdiv",          "square",        "reshape",
    "view",       "permute",       "transpose",     "narrow",
    "slice",      "expand",        "squeeze",       "unsqueeze",
    "flatten",    "contiguous",    "clone",         "spmm",
    "sddmm",      "csr_add_dense", "sparse_linear", "sp_add_linear"};

}  // namespace rf::test
