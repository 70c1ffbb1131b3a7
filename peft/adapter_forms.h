#pragma once
// The concrete adapter forms (peft/adapter_form.h). PEFT's in-memory names, under the layer's path:
//   low-rank  lora_A.<adapter>.weight (r, in), lora_B.<adapter>.weight (out, r) [+ .bias]
//   DoRA      + lora_magnitude_vector.<adapter>.weight (out)
//   SVD       lora_A.<adapter> (r, in), lora_E.<adapter> (r, 1), lora_B.<adapter> (out, r): raw tensors, as
//             PEFT's ParameterDicts, without ".weight"
//   gated     the low-rank pair; the logits (r) are the AutoLoRA strategy's, not the layer's
//   RoSA      the low-rank pair + rosa_spa.<adapter>.values (nnz)
#include <memory>
#include <optional>

#include "engine/sparse.h"
#include "nn/layers.h"
#include "peft/adapter_form.h"

namespace rf::peft {

class LowRankForm : public AdapterForm {
 public:
  using AdapterForm::AdapterForm;
  FormKind kind() const override { return FormKind::LowRank; }
  void create(LoraLinear& layer) override;
  void remove(LoraLinear& layer) override;
  Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) override;
  Tensor fused_forward(LoraLinear& layer, const Tensor& x) override;
  Tensor delta_weight(LoraLinear& layer) override;
  std::vector<Tensor*> parameters() override;
  nn::Linear& lora_A() { return *a_; }  // (r, in)
  nn::Linear& lora_B() { return *b_; }  // (out, r), bias (out) with lora_bias

 protected:
  // s·B A with B's columns weighted (the gated form), f32 (out, in), detached.
  Tensor low_rank_delta(const Tensor& column_weights);
  std::shared_ptr<nn::Linear> a_, b_;
};

// AutoLoRA's search form (methods.md §2.1): the r rank-one components weighted by softmax(logits),
// ΔW x = s · B (softmax(α) ⊙ A x). Made from a low-rank adapter, whose tensors it takes over (so
// optimizers keep them), and turned back into one when the gate is removed.
class GatedForm final : public LowRankForm {
 public:
  GatedForm(LowRankForm&& plain, Tensor logits) : LowRankForm(std::move(plain)), logits_(std::move(logits)) {}
  FormKind kind() const override { return FormKind::Gated; }
  Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) override;
  Tensor delta_weight(LoraLinear& layer) override;
  const Tensor& logits() const { return logits_; }

 private:
  Tensor logits_;  // (r)
};

// DoRA (PEFT DoraLinearLayer): W' = m ⊙ (W0 + s·B A) / ||W0 + s·B A||_row, the norm detached (§4.3).
class DoraForm final : public LowRankForm {
 public:
  using LowRankForm::LowRankForm;
  FormKind kind() const override { return FormKind::Dora; }
  void create(LoraLinear& layer) override;
  void remove(LoraLinear& layer) override;
  Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) override;
  void merge(LoraLinear& layer) override;  // rescales rows and caches the norm, so unmerge is exact up to rounding
  void unmerge(LoraLinear& layer) override;
  std::vector<Tensor*> parameters() override;
  Tensor& magnitude();  // (out)

 private:
  Tensor weight_norm(LoraLinear& layer);  // ||W + s·B A||_row, detached (out)
  std::shared_ptr<nn::Module> mag_;       // the Magnitude module in lora_magnitude_vector
  Tensor merged_norm_;
};

// AdaLoRA's SVD form (PEFT SVDLinear): ΔW = s·B (E ⊙ A), s = alpha / (ranknum + 1e-5).
class SvdForm final : public AdapterForm {
 public:
  SvdForm(std::string name, LoraOptions o);
  FormKind kind() const override { return FormKind::Svd; }
  void create(LoraLinear& layer) override;
  void remove(LoraLinear& layer) override;
  Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) override;
  Tensor delta_weight(LoraLinear& layer) override;
  std::vector<Tensor*> parameters() override { return {&A(), &E(), &B()}; }
  Tensor& A();  // (r, in)
  Tensor& E();  // (r, 1)
  Tensor& B();  // (out, r)
  // Keeps the triplets whose flag is set (PEFT's resize_modules_by_rank_pattern): r becomes the kept
  // count; ranknum and so the scale stay. keep has one flag per current row.
  void prune(const std::vector<bool>& keep);

 private:
  Tensor& raw(const char* container);
  LoraLinear* layer_ = nullptr;  // set by create: the raw tensors live in the layer's containers
};

// RoSA (methods.md §3.1): W = W0 + s·B A + S, S on a fixed support with trainable values. The
// forward forms of peft-rosa: 'sp_add' (X (W0 ⊕ S)^T, the default for Linear) and 'spmm'
// (base(X) + X S^T). Both read the undropped input; dropout applies to the LoRA branch only.
class RosaForm final : public LowRankForm {
 public:
  RosaForm(std::string name, LoraOptions o);
  FormKind kind() const override { return FormKind::Rosa; }
  void create(LoraLinear& layer) override;
  void remove(LoraLinear& layer) override;
  Tensor forward(LoraLinear& layer, const Tensor& x, const Tensor& result) override;
  Tensor delta_weight(LoraLinear& layer) override;
  std::vector<Tensor*> parameters() override;
  Tensor fused_base(LoraLinear& layer, const Tensor& x) override;
  Tensor& values();  // (nnz), "rosa_spa.<adapter>.values"
  // Fixes the support (rows = out, cols = in) and copies its values into values() (same tensor, so
  // optimizers keep it). Its nnz must equal the adapter's.
  void set_support(LoraLinear& layer, const Csr& support);
  const Csr* support() const { return spa_ ? &spa_->support : nullptr; }

 private:
  struct Spa {
    Csr support;  // host structure (values unused)
    SparsePattern pattern;
  };
  std::optional<Spa> spa_;  // unset: the sparse part is off
  std::shared_ptr<nn::Module> holder_;
};

}  // namespace rf::peft
