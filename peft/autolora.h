#pragma once
// AutoLoRA (methods.md §2; official code ruz048/AutoLoRA@314c6f4). Search phase: every targeted module
// holds k rank-one components weighted by softmax(α), ΔW = (lora_alpha/k) Σ_j softmax(α)_j b_j a_j^T
// (LoraLinear's gate logits); A/B train on the training split, α on a held-out split through a
// bi-level step (meta_step). Rank selection: r_i = #{j : softmax(α)_j ≥ 1/k}. Retrain phase: plain
// LoRA with rank_pattern = the found ranks (scaling lora_alpha / r_i), done by the caller (the CLI runs
// it automatically; autolora_retrain_config builds its adapter config).
//
// Open decisions (methods.md §6), each an option:
// - selection: the paper and finetune/lora_glue.py threshold softmax(α) at 1/k (default); the search
//   script's validation() thresholds the raw α linearly normalised, α_j / Σα ≥ 1/k (`raw`).
// - the hypergradient: Betty's DARTS finite difference as the official code runs it has no inner
//   learning-rate factor ξ (ξ = 1, default); DARTS proper multiplies the second-order term by the
//   inner lr (set inner_lr_factor to it); 0 leaves the first-order term ∇_α L_val(w') alone.
// - weight decay on A/B in the search: the official code drops its script's --weight_decay 0.1. It is the
//   inner optimizer's (TrainerOptions::weight_decay of the search trainer; CLI adapter.search_weight_decay).
//   Without it ΔW is invariant to moving scale between softmax(α)_j and b_j and α gets almost no signal;
//   with it the fit gathers on the larger gates and the threshold follows the needed rank (README).
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/optim.h"
#include "peft/config.h"
#include "peft/strategy.h"

namespace rf::peft {

struct AutoLoraOptions {   // defaults: glue_search.sh and the hard-coded values (methods.md §2.6)
  int64_t k = 8;           // components per module in the search (the search adapter's r)
  double lora_alpha = 16;  // search scaling lora_alpha / k; retrain scaling lora_alpha / r_i
  float outer_lr = 3e-4f;  // Adam on α (no weight decay)
  float outer_beta1 = 0.5f, outer_beta2 = 0.999f, outer_eps = 1e-8f;
  double alpha_init = 1.0;  // torch.ones: every α starts equal (uniform softmax)
  // darts: Betty's second-order finite difference with roll-back (5 passes a step); first_order: the
  // alternating variant of finetune/lora_glue.py (α steps on ∇_α L_val at the current weights).
  std::string hypergradient = "darts";
  double darts_eps = 0.01;            // R: the finite-difference step is ε = R / ‖v‖
  double inner_lr_factor = 1.0;       // ξ on the second-order term (1: the official code, see above)
  std::string selection = "softmax";  // softmax | raw (see above)
  double max_grad_norm = 1.0;         // the trainer's clipping, repeated in the virtual step (0: none)
  std::string adapter;                // empty: the first active adapter
  void validate() const;              // throws "[autolora] ..." one line
  nlohmann::json to_json() const;
};

// c with the search adapter's settings: r = k, lora_alpha, no dropout (the search runs without),
// kaiming A / zero B, no rsLoRA / DoRA / lora_bias / rank_pattern.
LoraConfig autolora_search_config(const AutoLoraOptions& o, LoraConfig c = {});
// The retrain adapter: c (the user's LoRA settings: dropout, bias, modules_to_save, ...) restricted
// to the searched modules, rank_pattern = the found ranks under exact module-path keys, lora_alpha
// kept, so each module's scaling is lora_alpha / r_i as the retrain of the official code.
LoraConfig autolora_retrain_config(LoraConfig c, const std::vector<ModuleRank>& ranks, double lora_alpha);

// The rank a module keeps from its raw α (k values): softmax: #{j : softmax(α)_j ≥ 1/k}, in [1, k];
// raw: #{j : α_j ≥ mean(α)}, which is the script's α_j / Σα ≥ 1/k whenever Σα > 0 (as from the ones
// init) and stays in [1, k] otherwise. Computed in double on the host: all-equal α gives k exactly.
int64_t autolora_select_rank(const std::vector<double>& alpha, const std::string& selection);

// The DARTS hypergradient of Betty (betty/hypergradient/darts.py) at the current weights w (which
// are w' after the virtual step): v = ∇_w L_val, ε = R / ‖v‖,
//   g_α = ∇_α L_val + ξ [∇_α L_tr(w − εv) − ∇_α L_tr(w + εv)] / (2ε)  ≈ ∇_α L_val − ξ ∇²_{α,w} L_tr v.
// L_tr is the mean of the train losses. w and α must be leaves; α must require grad, w too. Leaves w
// as it found it (bit for bit) and every gradient of w and α cleared. ‖v‖ = 0: no second-order term.
struct Hypergradient {
  std::vector<Tensor> g;  // one per α, detached
  double val_loss = 0;    // L_val(w)
  double eps = 0;         // ε used (0 when ‖v‖ = 0)
  double v_norm = 0;
  bool finite = true;  // false: a loss was NaN/Inf (g is then not to be used)
};
Hypergradient darts_hypergradient(const std::vector<Tensor>& w, const std::vector<Tensor>& alpha,
                                  const std::vector<BatchLoss>& train, const BatchLoss& val, double darts_eps,
                                  double xi);

// One bi-level iteration on plain tensors: the body of AutoLoraStrategy::meta_step, for any model.
// darts: cache w (inner.params()) and the inner state, virtual inner step on the train losses
// (clipped as the real step), hypergradient at w', outer Adam step on α, roll back w and the inner
// state. first_order: outer step on ∇_α L_val at the current weights (none at step 0, whose weights
// have not been trained yet, so the order is the script's: train step, then α step). The caller's
// real step follows with the new α. Every gradient is left cleared. Skips the α update (updated =
// false) when a loss or gradient is not finite: the real step then reports it.
struct BilevelReport {
  bool updated = false;
  double val_loss = 0, eps = 0, v_norm = 0;
};
BilevelReport autolora_bilevel_step(const std::vector<Tensor>& alpha, nn::Optimizer& outer, nn::Optimizer& inner,
                                    const std::vector<BatchLoss>& train, const BatchLoss& val, const AutoLoraOptions& o,
                                    int64_t step);

class AutoLoraStrategy final : public RankStrategy {
 public:
  explicit AutoLoraStrategy(AutoLoraOptions o);
  std::string name() const override { return "autolora"; }

  // Creates α (alpha_init, on each module's device) and the outer optimizer for every module of the
  // adapter, and sets them as the layers' gate logits; applies a checkpoint restore waiting for it.
  // Every hook binds; a C++ user may call it early to read or set α.
  void bind(PeftModel& pm);
  void before_training(PeftModel& pm, const std::vector<BatchLoss>& probe, int64_t total_steps) override { bind(pm); }
  void resumed(PeftModel& pm) override { bind(pm); }
  void meta_step(PeftModel& pm, const std::vector<BatchLoss>& train, const BatchLoss& val, nn::Optimizer& inner,
                 int64_t step) override;
  // The ranks the threshold selects from the current α (the search's live result).
  std::vector<ModuleRank> rank_report(PeftModel& pm) const override;
  // α, its Adam state (moments, step counts) and the step counters; load_state validates everything
  // and restores at the next bind.
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override;

  const AutoLoraOptions& options() const { return o_; }
  std::vector<std::string> modules() const;     // module paths, sorted
  Tensor alpha(const std::string& path) const;  // the live logits (k), requires bind
  std::vector<double> alpha_values(const std::string& path) const;
  std::vector<ModuleRank> selected_ranks() const;  // module order
  nn::Optimizer& outer_optimizer();
  int64_t outer_steps() const { return outer_steps_; }
  const BilevelReport& last_report() const { return last_; }

  // Into dir (created): autolora_alpha.safetensors (raw α per module, key = module path, f32) and
  // autolora_ranks.json ({"selection", "k", "ranks": {path: r}, "rank_list": [...] in module order}).
  void save_search(const std::string& dir) const;
  // The search adapter as a plain PEFT LoRA (r = k, same scaling) with softmax(α) folded into B's
  // columns: the same function as the gated search model.
  void export_search_lora(PeftModel& pm, const std::string& dir) const;

 private:
  void require_bound(const char* what) const;
  AutoLoraOptions o_;
  PeftModel* pm_ = nullptr;
  std::string adapter_;
  std::vector<std::string> paths_;  // sorted
  std::vector<Tensor> alpha_;       // per path
  std::unique_ptr<nn::AdamW> outer_;
  int64_t outer_steps_ = 0, meta_calls_ = 0;
  BilevelReport last_;
  bool restore_pending_ = false;
  std::map<std::string, Tensor> pending_tensors_;
  nlohmann::json pending_meta_;
};

std::unique_ptr<RankStrategy> make_autolora_strategy(const AutoLoraOptions& o);

// autolora_ranks.json written by save_search, as (module, rank) in file order. Throws "[autolora] ...".
std::vector<ModuleRank> load_autolora_ranks(const std::string& dir);

// What `adapter.method: autolora` holds (peft/autolora_method.cpp): the search's options and what the
// search-then-retrain protocol of `rankforge train` needs.
struct AutoLoraRunOptions {
  AutoLoraOptions search;
  double val_fraction = 0.3;       // share of the training split that trains α (70/30, seeded by the run's seed)
  int64_t search_steps = 0;        // search steps (0: training.steps); the retrain runs training.steps
  bool stop_after_search = false;  // no retrain
  // AdamW weight decay on A/B during the search; the parse resolves "not given" to training.weight_decay.
  // The official search code drops its script's 0.1; with none, α gets almost no signal (README).
  double search_weight_decay = -1;
};
struct MethodConfig;
AutoLoraRunOptions& autolora_options(MethodConfig& c);
const AutoLoraRunOptions& autolora_options(const MethodConfig& c);

}  // namespace rf::peft
