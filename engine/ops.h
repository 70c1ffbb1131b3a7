#pragma once
// Every front-end op, declared once. Each is an Op struct (forward + backward) in engine/ops/*.cpp,
// recorded on the tape by apply<Op>. Float inputs stored as F16/BF16 are upcast to F32 first.
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/quant_weight.h"
#include "engine/sparse.h"
#include "engine/tensor.h"

namespace rf {

// ---- views (share storage; reshape copies only when no view exists) ----
Tensor reshape(const Tensor& x, Shape s);  // one -1 allowed
Tensor view(const Tensor& x, Shape s);     // throws when the strides do not allow a view
Tensor permute(const Tensor& x, std::vector<int64_t> dims);
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, Shape s);  // NumPy broadcast of x to s (-1 keeps a dim)
Tensor squeeze(const Tensor& x, int64_t axis);
Tensor unsqueeze(const Tensor& x, int64_t axis);
Tensor flatten(const Tensor& x, int64_t start = 0, int64_t end = -1);
Tensor contiguous(const Tensor& x);     // recorded identity when x is already contiguous
Tensor cast(const Tensor& x, DType t);  // differentiable between float types
Tensor clone(const Tensor& x);          // contiguous copy, differentiable

// ---- elementwise ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);      // a > 0 where b needs a gradient
Tensor maximum(const Tensor& a, const Tensor& b);  // ties send the gradient to a
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double e);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor rdiv(double s, const Tensor& a);  // s / a
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up, saving only gate and up
enum class GeluApprox { None, Tanh };                 // None = exact erf form
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::None);
Tensor square(const Tensor& x);
Tensor clamp(const Tensor& x, double lo, double hi);                 // gradient passes where lo <= x <= hi
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond Bool, broadcasts
// Comparisons: Bool results, not differentiable.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// Raw unary/binary without autograd (used by backward formulas and kernels' tests).
Tensor unary_raw(UnaryOp op, const Tensor& x, double a = 0, double b = 0);
Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b);

// ---- reductions (axes empty = all; keepdim keeps reduced axes as 1) ----
Tensor sum(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);  // ties share the gradient
Tensor min(const Tensor& x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);  // I64
Tensor norm(const Tensor& x, double p = 2.0, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor sum_to(const Tensor& x, const Shape& s);  // sums broadcast axes away

// ---- linear algebra ----
// (..., M, K) @ (..., K, N) with broadcast batch dims; transposed views are used without copies.
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());  // x @ w^T + b; w (out, in)
// A LoRA layer as one op: x @ w^T + b + scale * (xd @ a^T) @ bw^T, xd = x after dropout (or x itself);
// a (r, in), bw (out, r). Undefined when the dtypes need the composed path (mixed dtypes outside autocast).
Tensor lora_linear(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xd, const Tensor& a,
                   const Tensor& bw, double scale);

// ---- fused ----
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-5);  // over last axis
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps = 1e-6);
// x (B, H, T, D); cos, sin (T, D) or (B, T, D), HF layout (halves duplicated).
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);
// cos/sin tables for positions [0, T) (positions undefined) or given positions (T) / (B, T) I64.
std::pair<Tensor, Tensor> rope_tables(int64_t T, int64_t D, double theta = 10000.0, const Tensor& positions = Tensor(),
                                      DType t = DType::F32, Device d = {});
struct AttnOptions {
  bool causal = false;
  Tensor key_mask;     // optional (B, Tk) Bool, true = attend
  double scale = 0.0;  // 0 means 1/sqrt(D)
};
// q (B, H, Tq, D), k/v (B, Hk, Tk, D/Dv) with H % Hk == 0. Backward recomputes scores blockwise.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttnOptions& opt = {});
enum class Reduction { Mean, Sum, None };
// logits (..., C), targets (...) integer. Mean divides by the count of non-ignored targets.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::Mean);

// ---- indexing and joining ----
Tensor embedding(const Tensor& weight, const Tensor& ids);  // weight (V, C), ids any shape -> (..., C)
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& ids);
Tensor gather(const Tensor& x, int64_t axis, const Tensor& idx);
Tensor cat(const std::vector<Tensor>& xs, int64_t axis);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);
std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t axis);  // equal chunks of size (last may be smaller)
Tensor stack(const std::vector<Tensor>& xs, int64_t axis);
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k);       // along last axis: (values, I64 indices)
Tensor dropout(const Tensor& x, double p, bool training = true);  // inverted dropout, Philox mask

// ---- sparse (a fixed pattern p of S (rows, cols) with trainable values (nnz); engine/sparse.h) ----
// S @ x: x (cols, n) -> (rows, n). Gradients: values by SDDMM, x by SpMM with S^T.
Tensor spmm(const SparsePattern& p, const Tensor& values, const Tensor& x);
// (a @ b^T) at the support: a (rows, k), b (cols, k) -> (nnz).
Tensor sddmm(const SparsePattern& p, const Tensor& a, const Tensor& b);
// d + S as a dense (rows, cols) tensor.
Tensor csr_add_dense(const SparsePattern& p, const Tensor& values, const Tensor& d);
// x S^T: x (..., cols) -> (..., rows), through SpMM (RoSA's 'spmm' impl).
Tensor sparse_linear(const Tensor& x, const SparsePattern& p, const Tensor& values);
// x (w0 + S)^T without a bias: x (..., in), w0 (out, in) -> (..., out) (RoSA's 'sp_add' impl). The backward
// gives values their gradient by SDDMM at the support, (dO^T X)|_M, never the dense dO^T X; w0 gets one only
// when it requires it.
Tensor sp_add_linear(const Tensor& x, const Tensor& w0, const SparsePattern& p, const Tensor& values);

// ---- quantized frozen weights (engine/quant_weight.h) ----
// x (..., in) @ W^T + b for a quantized W (out, in), dequantized a tile at a time in the backend, in w.compute
// (bf16 as well while autocast lowers "linear"). Gradients reach x and b, and `probe` when given: an (out, in)
// tensor that stands in for W in backward only (it takes no part in the forward), whose gradient is dL/dW =
// dy^T x, so a strategy can collect the dense weight gradient of a quantized layer (RoSA's masks).
Tensor quant_linear(const Tensor& x, const QuantWeight& w, const Tensor& b = Tensor(), const Tensor& probe = Tensor());

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(s, a); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv(s, a); }
inline Tensor operator-(const Tensor& x) { return neg(x); }

}  // namespace rf
