#pragma once
// AdaLoRA (methods.md §5; PEFT's RankAllocator and AdaLoraModel.update_and_allocate): the rank
// strategy that prunes the singular triplets of SVD-form adapters (LoraLinear with
// LoraOptions::adalora, created by PeftModel::add_adapter for peft_type "ADALORA") to a budget.
//
// Step mapping. PEFT's documented loop (examples/conditional_generation/peft_adalora_seq2seq.py)
// calls update_and_allocate(global_step) after optimizer.step() with global_step = 0 for the first
// step, then increments it. Our after_optimizer_step gets `step` = optimizer steps done (1 after the
// first), so the allocation step is t = step - 1: the schedule, the masks and the final mask happen at
// the same optimizer update as in PEFT's loop. With total_step = N optimizer steps, t runs 0..N-1, so
// (as in PEFT) the final mask at t = N - tfinal only happens when tfinal >= 1.
//
// Per call at allocation step t (T = total_step, F = tfinal):
//   t <  T-F: EMAs of I = |w·g| (post-step weights, the step's clipped gradients): Ī ← β1 Ī + (1-β1) I,
//             Ū ← β2 Ū + (1-β2) |I - Ī|; then, when the cubic budget schedule says so, mask to budget.
//   t == T-F: final mask to target_r·n (with the EMAs of the previous step), EMAs cleared.
//   t >  T-F: the final rank_pattern is re-applied (E = 0 where pruned).
// Masking is soft: E entries are set to 0 and keep training (the optimizer is never rebuilt).
// Every mask is written to the adapter's config (rank_pattern), so save_adapter writes the tensors cut
// to the kept triplets, as PEFT's save_pretrained.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/config.h"
#include "peft/peft_model.h"
#include "peft/strategy.h"

namespace rf::peft {

// PEFT's RankAllocator.budget_schedule at allocation step t: the budget of kept triplets and whether
// to mask. t <= tinit: (init_bgt, no); t > total - tfinal: (target_bgt, yes); else
// int((init_bgt - target_bgt)·(1 - (t - tinit)/(total - tfinal - tinit))³ + target_bgt), masking when
// t % deltaT == 0.
struct AdaLoraBudget {
  int64_t budget = 0;
  bool mask = false;
};
AdaLoraBudget adalora_budget(int64_t t, int64_t init_bgt, int64_t target_bgt, int64_t tinit, int64_t tfinal,
                             int64_t total_step, int64_t deltaT);

// Mean over every A and B of the adapter of ||C - I||_F (C = A Aᵀ for A, Bᵀ B for B; not squared, as
// PEFT's AdaLoraModel.forward), differentiable. Undefined when the adapter has no module.
Tensor adalora_orth_penalty(PeftModel& pm, const std::string& adapter);

class AdaLoraStrategy final : public RankStrategy {
 public:
  // o: the adapter config's AdaLoRA fields. total_step 0 takes the trainer's planned step count.
  // target_total > 0: the final budget in kept triplets over all modules instead of PEFT's target_r · n
  // (a total that need not be a multiple of the module count; `bench ranks --budget`).
  explicit AdaLoraStrategy(const AdaLoraFields& o, int64_t target_total = 0);
  std::string name() const override { return "adalora"; }
  void before_training(PeftModel& pm, const std::vector<BatchLoss>& probe, int64_t total_steps) override;
  // orth_reg_weight · adalora_orth_penalty (undefined when the weight is 0).
  Tensor extra_loss(PeftModel& pm) override;
  // update_and_allocate(pm, step - 1); always false: masked entries stay trainable.
  bool after_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer& opt) override;
  // Kept triplets per module: the current mask's count, or the module's rank before any mask.
  std::vector<ModuleRank> rank_report(PeftModel& pm) const override;
  // Tensors "ipt.<path>.lora_X" / "unc.<path>.lora_X" (the EMAs, on the host); meta holds the adapter,
  // total_step and rank_pattern, so a resumed run continues bit-identically.
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override;

  // PEFT's update_and_allocate(global_step = t) on the first active adapter.
  void update_and_allocate(PeftModel& pm, int64_t t);
  // Triplet scores S_i = s(E_i) + mean_j s(A_ij) + mean_j s(B_ji), s = Ī·Ū, per module path (f32 as PEFT).
  std::map<std::string, std::vector<float>> triplet_scores(PeftModel& pm) const;
  const std::optional<RankMasks>& rank_pattern() const { return rank_pattern_; }
  int64_t init_budget() const { return init_bgt_; }
  int64_t target_budget() const { return target_bgt_; }
  int64_t total_step() const { return total_; }
  int64_t last_budget() const { return last_budget_; }

 private:
  const std::string& adapter(PeftModel& pm);
  void setup(PeftModel& pm);
  void update_ipt(PeftModel& pm);
  void mask_to_budget(PeftModel& pm, int64_t budget);
  void apply_masks(PeftModel& pm);

  AdaLoraFields o_;
  int64_t target_total_ = 0;
  std::string adapter_;
  bool ready_ = false;
  int64_t trainer_total_ = 0, total_ = 0, init_bgt_ = 0, target_bgt_ = 0, last_budget_ = 0;
  std::map<std::string, Tensor> ipt_, unc_;  // "<path>.lora_A|E|B" -> Ī, Ū (same shape as the tensor)
  std::optional<RankMasks> rank_pattern_;    // keys "<path>.lora_E", as the config's
};

// The strategy for an ADALORA adapter config (throws "[peft] ..." for another peft_type).
std::unique_ptr<RankStrategy> make_adalora_strategy(const LoraConfig& adapter_config);
std::unique_ptr<RankStrategy> make_adalora_strategy(const AdaLoraFields& options, int64_t target_total = 0);

// A plain LoRA adapter with the same ΔW as the AdaLoRA adapter as saved (triplets outside rank_pattern
// dropped, as PEFT's save): per module A' = s·(E ⊙ A) (k, in), B' = B (out, k) with k kept triplets and
// s = lora_alpha/(init_r + 1e-5); r = the largest k, lora_alpha = r, rank_pattern and alpha_pattern
// {path: k} elsewhere, so PEFT's LoRA scaling is 1 everywhere. Modules with k = 0 are left out.
struct LoraExport {
  LoraConfig config;
  std::map<std::string, Tensor> tensors;  // file keys, on the host
};
LoraExport adalora_to_lora(PeftModel& pm, const std::string& name = "default");
// Writes the export as PEFT LoRA files (adapter_config.json + adapter_model.safetensors) into dir.
void save_adalora_as_lora(PeftModel& pm, const std::string& dir, const std::string& name = "default");

}  // namespace rf::peft
