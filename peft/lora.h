#pragma once
// LoraLinear takes a Linear's place under the same name and keeps it as `base_layer`, so parameter
// names are PEFT's in-memory names: "<path>.base_layer.weight", "<path>.lora_A.<adapter>.weight",
// "<path>.lora_B.<adapter>.weight", "<path>.lora_magnitude_vector.<adapter>.weight" (DoRA).
// AdaLoRA adapters (LoraOptions::adalora, PEFT's SVDLinear) keep raw tensors as PEFT's ParameterDicts
// do, without ".weight": "<path>.lora_A.<adapter>" (r, in), "<path>.lora_E.<adapter>" (r, 1),
// "<path>.lora_B.<adapter>" (out, r).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/sparse.h"
#include "engine/ops.h"
#include "nn/layers.h"

namespace rf::peft {

struct LoraOptions {  // one adapter on one module, after rank_pattern / alpha_pattern
  int64_t r = 8;
  double alpha = 8;
  bool use_rslora = false;
  double dropout = 0.0;
  bool use_dora = false;
  bool lora_bias = false;
  std::string init = "true";  // true | false | gaussian | pissa | pissa_niter_<k> | olora
  // AdaLoRA's SVD form: ΔW = B (E ⊙ A) · alpha / (ranknum + 1e-5) (alpha <= 0: ranknum instead), with
  // ranknum = init_r fixed while r shrinks by pruning. init "true": E = 0, A, B ~ N(0, 0.02²);
  // "false": all three N(0, 1) (PEFT's torch.randn). r may be 0 (a module pruned to nothing).
  bool adalora = false;
  int64_t ranknum = 0;
  // RoSA (methods.md §3): a sparse part S on a fixed support next to the LoRA pair, W0 + s·BA + S. A
  // density >= 0 marks a RoSA adapter. Its values (nnz = int(d·out·in)) exist from the start, at 0, so
  // optimizers hold them throughout; the support is set when the masks are made (set_spa_support).
  double rosa_density = -1;
  std::string rosa_impl = "sp_add";  // sp_add: X (W0 ⊕ S)^T | spmm: base(X) + X S^T (both see undropped X)
  bool is_rosa() const { return rosa_density >= 0; }
  double scaling() const;
};

class LoraLinear : public nn::Module {
 public:
  explicit LoraLinear(std::shared_ptr<nn::Linear> base);
  std::string_view type_name() const override { return "LoraLinear"; }
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)

  // Creates the adapter's tensors on the base's device and initialises them (PiSSA / OLoRA also
  // rewrite the base weight, as PEFT). Throws "[peft] ..." for a duplicate name or r > min(in, out) where needed.
  void add_adapter(const std::string& name, const LoraOptions& o);
  void delete_adapter(const std::string& name);
  bool has_adapter(const std::string& name) const { return opts_.count(name) > 0; }
  std::vector<std::string> adapters() const;
  void set_active(const std::vector<std::string>& names);  // unknown names are skipped (module not targeted)
  const std::vector<std::string>& active() const { return active_; }
  const LoraOptions& options(const std::string& name) const;
  void set_scaling(const std::string& name, double s) { scale_[name] = s; }
  double scaling(const std::string& name) const { return scale_.at(name); }

  nn::Linear& base() { return child_as<nn::Linear>(base_slot_); }
  std::shared_ptr<nn::Linear> base_ptr() const { return std::static_pointer_cast<nn::Linear>(child_ptr(base_slot_)); }
  nn::Linear& lora_A(const std::string& name);  // (r, in); LoRA adapters only
  nn::Linear& lora_B(const std::string& name);  // (out, r); LoRA adapters only
  Tensor& magnitude(const std::string& name);   // (out) DoRA
  // The factor tensors whatever the form: A (r, in), B (out, r); E (r, 1) for AdaLoRA adapters only.
  Tensor& A(const std::string& name);
  Tensor& B(const std::string& name);
  Tensor& E(const std::string& name);
  bool is_adalora(const std::string& name) const { return options(name).adalora; }
  // Keeps the AdaLoRA triplets whose flag is set (PEFT's resize_modules_by_rank_pattern): r becomes
  // the kept count, ranknum and so the scale stay. keep has one flag per current row.
  void prune_adalora(const std::string& name, const std::vector<bool>& keep);
  // RoSA's sparse part (peft/rosa_layer.cpp). In memory: "<path>.rosa_spa.<adapter>.values" (nnz).
  bool is_rosa(const std::string& name) const { return options(name).is_rosa(); }
  Tensor& spa_values(const std::string& name);
  // Fixes the support (rows = out, cols = in) and copies its values into spa_values (same tensor, so
  // optimizers keep it). Its nnz must equal the adapter's. Undefined before: the sparse part is off.
  void set_spa_support(const std::string& name, const Csr& support);
  const Csr* spa_support(const std::string& name) const;  // values not kept current: see spa_csr
  Csr spa_csr(const std::string& name);                   // support with the current values (host)
  // AutoLoRA's search form (methods.md §2.1): the r rank-one components weighted by softmax(logits),
  // ΔW x = s · B (softmax(α) ⊙ A x). The logits (r) belong to the strategy, which optimises them
  // with its own optimizer; the layer only reads them. An undefined tensor removes the gate.
  void set_gate_logits(const std::string& name, Tensor logits);
  Tensor gate_logits(const std::string& name) const;  // undefined when none
  // scaling * B A (AdaLoRA: scaling * B (E ⊙ A); gated: scaling * B diag(softmax(α)) A) as (out, in), f32; detached.
  Tensor delta_weight(const std::string& name);

  // Adds the active adapters into the base weight (DoRA: rescales rows and caches the norm so
  // unmerge is exact up to rounding); forward then runs the base alone.
  void merge(const std::vector<std::string>& names);
  void unmerge();
  const std::vector<std::string>& merged() const { return merged_; }

 private:
  Tensor base_out_in_f32();  // current base weight as (out, in) f32, contiguous copy
  void write_base_out_in(const Tensor& w);  // stores a (out, in) weight in the base's layout and dtype
  Tensor dora_weight_norm(const std::string& name);  // ||W + scaling * B A||_row, detached (out)
  void add_svd_adapter(const std::string& name, const LoraOptions& o);
  Tensor& raw_param(size_t container, const std::string& name);
  void drop_raw_param(const char* container_name, const std::string& name);

  size_t base_slot_;
  size_t a_slot_, b_slot_;
  size_t m_slot_ = SIZE_MAX;  // lora_magnitude_vector container, created with the first DoRA adapter
  size_t e_slot_ = SIZE_MAX;  // lora_E container, created with the first AdaLoRA adapter
  std::map<std::string, LoraOptions> opts_;
  std::map<std::string, double> scale_;
  std::vector<std::string> order_;  // adapters in creation order
  std::vector<std::string> active_;
  std::vector<std::string> merged_;
  std::map<std::string, Tensor> dora_norm_cache_;
  std::map<std::string, Tensor> gate_;  // AutoLoRA logits per adapter
  void add_rosa_part(const std::string& name, const LoraOptions& o);
  Tensor rosa_forward(const Tensor& x, Tensor result, const std::string& fused);
  std::string fused_spa_adapter() const;  // the active RoSA adapter whose S goes into W0 ⊕ S, or ""
  size_t spa_slot_ = SIZE_MAX;  // "rosa_spa": a RosaSpa module per RoSA adapter
  struct Spa {
    Csr support;  // host structure (values unused)
    SparsePattern pattern;
  };
  std::map<std::string, Spa> spa_;  // RoSA adapters with a support set: its host CSR and device pattern
};

// DoRA's magnitude holder: a module with one parameter "weight" (PEFT's DoraLinearLayer).
class Magnitude : public nn::Module {
 public:
  explicit Magnitude(Tensor w) { register_parameter("weight", std::move(w)); }
  std::string_view type_name() const override { return "DoraLinearLayer"; }
  Tensor& weight() { return param(0); }
};

}  // namespace rf::peft
