#pragma once
// Mixed precision (autocast): the one place that says which ops compute in 16 bits. Backends only
// see dtypes: an op listed Lower casts its f32 operands to bf16 and asks for an f32 result, so any
// backend whose matmul takes 16-bit operands (Backend::matmul_takes_16bit_ab) shares this policy.
//
// Precision bf16 or f16 picks the 16-bit dtype; the policy is the same for both (torch's f16 and
// bf16 autocast lists agree on these ops). f16 training also needs loss scaling (nn/grad_scaler.h).
// Policy, after torch.autocast's CPU lists (16-bit GEMMs, f32 for anything that sums many terms or
// exponentiates):
//   Lower (16-bit operands, f32 accumulation and f32 output): matmul, linear, the attention products;
//        swiglu computes in f32 but keeps its saved inputs (GEMM outputs) in bf16, as torch would.
//   F32: softmax, log_softmax, layer_norm, rms_norm, cross_entropy and every loss, sum/mean and other
//        reductions, elementwise ops, the optimizer. These run in f32 because all inputs they see are
//        f32: unlike torch, a Lower op hands back f32 (its bf16 copies live only as GEMM operands and
//        saved-for-backward tensors), so nothing downstream ever sees a bf16 activation.
//   Activations are therefore stored in 16 bits exactly where the graph keeps a Lower op's operands
//   for backward (the GEMM inputs and attention's q, k, v); everything else stays f32.
//   Gradients of a bf16 operand are carried in f32 (autograd does not round them to 16 bits), so the
//   adapter's master weights, their gradients and the AdamW state stay f32 end to end.
#include <span>
#include <string_view>

#include "engine/dtype.h"

namespace rf {

class Backend;

enum class Precision : uint8_t { F32, BF16, F16 };
std::string_view precision_name(Precision p);
// The 16-bit dtype of a precision (F32 for F32).
DType precision_dtype(Precision p);
// Whether s is a precision name: f32 | bf16 | f16 | auto.
bool is_precision_name(std::string_view s);
// The precision named s for work on backend be: "auto" -> auto_precision(be); "bf16"/"f16" where be
// has no 16-bit GEMMs of that dtype, or an unknown name, throws "[<where>] ...".
Precision resolve_precision(std::string_view s, const Backend& be, std::string_view where);
// BF16 where the backend's 16-bit GEMMs run on native dot products (CPU: AVX512_BF16 or AMX-BF16 with
// oneDNN), F32 elsewhere; see README "Mixed precision" for the evidence behind this default.
Precision auto_precision(const Backend& be);

enum class AutocastKind : uint8_t { Lower, F32 };
struct AutocastRule {
  std::string_view op;
  AutocastKind kind;
};
// The policy table above, for documentation and tests.
std::span<const AutocastRule> autocast_policy();

// The calling thread's autocast precision (F32 = off).
Precision autocast_precision();
// Dtype `op` casts its float operands to under the current state on backend `be`: BF16 or F16 (the
// precision's) for a Lower op while autocast is on and the backend takes 16-bit GEMM operands of that
// dtype, else F32. Unlisted ops get F32.
DType autocast_dtype(std::string_view op, const Backend& be);

// Scoped: sets the thread's autocast precision, restores the previous one on exit. Activation
// checkpointing records the precision of the forward and re-applies it in the recompute.
class AutocastGuard {
 public:
  explicit AutocastGuard(Precision p);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  Precision prev_;
};

}  // namespace rf
