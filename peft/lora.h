#pragma once
// LoraLinear takes a Linear's place under the same name and keeps it as `base_layer`, so parameter
// names are PEFT's in-memory names ("<path>.base_layer.weight", "<path>.lora_A.<adapter>.weight", ...:
// each form's names are listed in peft/adapter_forms.h). It holds named adapters of any form
// (peft/adapter_form.h) and sums the active ones over the base output; the forms do the rest.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/sparse.h"
#include "nn/layers.h"
#include "peft/adapter_forms.h"

namespace rf::peft {

// Whether a layer with one plain LoRA adapter runs as one fused op (rf::lora_linear); on by default,
// RANKFORGE_FUSE_LORA=0 turns it off (the composed ops give the same numbers: tests compare them).
bool lora_fusion_enabled();
void set_lora_fusion(bool on);

class LoraLinear : public nn::Module {
 public:
  explicit LoraLinear(std::shared_ptr<nn::Linear> base);
  std::string_view type_name() const override { return "LoraLinear"; }
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)

  // Creates an adapter of o.form on the base's device and initialises it. Throws "[peft] ..." for a
  // duplicate name or options the form does not take.
  void add_adapter(const std::string& name, const LoraOptions& o);
  void delete_adapter(const std::string& name);
  bool has_adapter(const std::string& name) const { return forms_.count(name) > 0; }
  std::vector<std::string> adapters() const { return order_; }
  void set_active(const std::vector<std::string>& names);  // unknown names are skipped (module not targeted)
  const std::vector<std::string>& active() const { return active_; }
  AdapterForm& form(const std::string& name) const;
  FormKind kind(const std::string& name) const { return form(name).kind(); }
  const LoraOptions& options(const std::string& name) const { return form(name).options(); }
  void set_scaling(const std::string& name, double s) { form(name).set_scaling(s); }
  double scaling(const std::string& name) const { return form(name).scaling(); }

  nn::Linear& base() { return child_as<nn::Linear>(base_slot_); }
  std::shared_ptr<nn::Linear> base_ptr() const { return std::static_pointer_cast<nn::Linear>(child_ptr(base_slot_)); }
  // Form accessors: each throws "[peft] adapter '<name>' ..." when the adapter is of another form.
  nn::Linear& lora_A(const std::string& name);  // (r, in); low-rank pairs (LoRA, DoRA, gated, RoSA)
  nn::Linear& lora_B(const std::string& name);  // (out, r)
  Tensor& magnitude(const std::string& name);   // (out) DoRA
  // The factor tensors whatever the form: A (r, in), B (out, r); E (r, 1) for AdaLoRA adapters only.
  Tensor& A(const std::string& name);
  Tensor& B(const std::string& name);
  Tensor& E(const std::string& name);
  bool is_adalora(const std::string& name) const { return kind(name) == FormKind::Svd; }
  void prune_adalora(const std::string& name, const std::vector<bool>& keep);  // SvdForm::prune
  // RoSA's sparse part (RosaForm). In memory: "<path>.rosa_spa.<adapter>.values" (nnz).
  bool is_rosa(const std::string& name) const { return kind(name) == FormKind::Rosa; }
  Tensor& spa_values(const std::string& name);
  // Fixes the support (rows = out, cols = in) and copies its values into spa_values (same tensor, so
  // optimizers keep it). Its nnz must equal the adapter's. Undefined before: the sparse part is off.
  void set_spa_support(const std::string& name, const Csr& support);
  const Csr* spa_support(const std::string& name) const;  // values not kept current: see spa_csr
  Csr spa_csr(const std::string& name);                   // support with the current values (host)
  // AutoLoRA's gate (GatedForm): turns a low-rank adapter into a gated one with these logits (r),
  // which stay the strategy's; an undefined tensor turns it back into a plain one.
  void set_gate_logits(const std::string& name, Tensor logits);
  Tensor gate_logits(const std::string& name) const;                                       // undefined when none
  Tensor delta_weight(const std::string& name) { return form(name).delta_weight(*this); }  // (out, in) f32, detached

  // Adds the active adapters into the base weight; forward then runs the base alone.
  void merge(const std::vector<std::string>& names);
  void unmerge();
  const std::vector<std::string>& merged() const { return merged_; }

  // For the forms (peft/adapter_forms.h).
  Tensor base_out_in_f32();  // current base weight as (out, in) f32, contiguous copy
  // Stores a (out, in) weight in the base's layout and dtype (a quantized base is re-quantized); returns the
  // relative Frobenius error of what was stored.
  double write_base_out_in(const Tensor& w);
  nn::Module& container(const char* name);  // "lora_A", "lora_E", ...: created on first use
  // nn::Module cannot drop a parameter: rebuilds the container without it; the other tensors (same
  // handles, so optimizers keep them) and modules move over unchanged.
  void drop_raw_param(const char* container, const std::string& name);
  const AdapterForm* fused_form() const { return fused_; }  // the form whose fused_base ran in this forward

 private:
  template <class F>
  F& form_as(const std::string& name, const char* what) const;

  size_t base_slot_;
  std::map<std::string, std::unique_ptr<AdapterForm>> forms_;
  std::vector<std::string> order_;  // adapters in creation order
  std::vector<std::string> active_;
  std::vector<std::string> merged_;
  const AdapterForm* fused_ = nullptr;
};

// DoRA's magnitude holder: a module with one parameter "weight" (PEFT's DoraLinearLayer).
class Magnitude : public nn::Module {
 public:
  explicit Magnitude(Tensor w) { register_parameter("weight", std::move(w)); }
  std::string_view type_name() const override { return "DoraLinearLayer"; }
  Tensor& weight() { return param(0); }
};

}  // namespace rf::peft
