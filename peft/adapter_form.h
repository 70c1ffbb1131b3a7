#pragma once
// Adapter forms (PEFT's LoraLayer / AdaLoraLayer / DoraLinearLayer split): each form of adapter is a
// type that owns its tensors under PEFT's names, its forward, its ΔW and its merge. LoraLinear
// (peft/lora.h) holds named adapters of any form next to the frozen base and only sums them.
//   low-rank  LoRA / rsLoRA, inits true | false | gaussian | pissa | olora   W0 + s·B A
//   DoRA      a low-rank pair plus a magnitude per output row                m ⊙ (W0 + s·B A) / ||·||_row
//   SVD       AdaLoRA's triplets                                            W0 + s·B (E ⊙ A)
//   gated     AutoLoRA's search: a low-rank pair weighted per component      W0 + s·B diag(softmax(α)) A
//   RoSA      a low-rank pair plus a sparse S on a fixed support            W0 + s·B A + S
// The concrete types are in peft/adapter_forms.h; a new form is one class there and one .cpp.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace rf::peft {

class LoraLinear;

// Gated is not asked for in LoraOptions: LoraLinear::set_gate_logits turns a low-rank adapter into
// one (the logits belong to the AutoLoRA strategy, which owns their optimizer).
enum class FormKind { LowRank, Dora, Svd, Gated, Rosa };
std::string_view form_name(FormKind k);  // for messages: "LoRA", "DoRA", "AdaLoRA", "gated LoRA", "RoSA"

struct SvdOptions {
  // The fixed rank of AdaLoRA's scale alpha / (ranknum + 1e-5) (alpha <= 0: ranknum instead): init_r,
  // so pruning (r shrinks) never changes the scale.
  int64_t ranknum = 0;
};

struct RosaOptions {
  // Density of S: nnz = int(density · out · in). Its values exist from the start at 0, so optimizers
  // hold them throughout; the support is set when the masks are made (set_spa_support).
  double density = 0;
  std::string impl = "sp_add";  // sp_add: X (W0 ⊕ S)^T | spmm: base(X) + X S^T (both see undropped X)
};

struct LoraOptions {  // one adapter on one module, after rank_pattern / alpha_pattern
  FormKind form = FormKind::LowRank;
  int64_t r = 8;  // SVD: may be 0 (a module pruned to nothing)
  double alpha = 8;
  bool use_rslora = false;
  double dropout = 0.0;
  bool lora_bias = false;
  // true | false | gaussian | pissa | pissa_niter_<k> | olora. SVD: "true" (E = 0, A, B ~ N(0, 0.02²))
  // or "false" (all three N(0, 1), PEFT's torch.randn).
  std::string init = "true";
  SvdOptions svd;    // form Svd only
  RosaOptions rosa;  // form Rosa only
  double scaling() const;
};

class AdapterForm {
 public:
  AdapterForm(std::string name, LoraOptions o);
  virtual ~AdapterForm() = default;
  virtual FormKind kind() const = 0;
  const std::string& name() const { return name_; }
  const LoraOptions& options() const { return o_; }
  double scaling() const { return scale_; }
  void set_scaling(double s) { scale_ = s; }

  // Makes and initialises the tensors on the base's device and registers them in layer's containers
  // under PEFT's names (PiSSA / OLoRA also rewrite the base weight, as PEFT). Throws "[peft] ...".
  virtual void create(LoraLinear& layer) = 0;
  virtual void remove(LoraLinear& layer) = 0;  // drops its tensors from the layer
  // result (..., out): the base output plus the adapters before this one; returns it plus this
  // adapter's contribution. x (..., in) is the layer input (undropped).
  virtual Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) = 0;
  // s·ΔW as (out, in) f32, detached.
  virtual Tensor delta_weight(LoraLinear& layer) = 0;
  // Adds the adapter into the base weight (and lora_B's bias into the base bias); unmerge undoes it.
  virtual void merge(LoraLinear& layer);
  virtual void unmerge(LoraLinear& layer);
  // The trainable tensors (PeftModel turns requires_grad on for the active adapter).
  virtual std::vector<Tensor*> parameters() = 0;
  // A form that folds itself into the base product (RoSA's sp_add: X (W0 ⊕ S)^T + bias) returns that
  // output here; forward then adds only the rest. Undefined: the base runs alone.
  virtual Tensor fused_base(LoraLinear& layer, const Tensor& x) { return Tensor(); }
  // The whole layer (base plus this adapter) as one fused op, when this is the only active adapter;
  // undefined where the form has none (LowRankForm: rf::lora_linear). LoraLinear::forward asks first.
  virtual Tensor fused_forward(LoraLinear& layer, const Tensor& x) { return Tensor(); }

 protected:
  std::string name_;
  LoraOptions o_;
  double scale_;
};

}  // namespace rf::peft
