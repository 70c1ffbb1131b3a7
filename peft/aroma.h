#pragma once
// AROMA (methods.md §1): each targeted module trains one low-rank LoRA pair at a time; when every
// module's inner loop is done, the pairs are merged into the base weight (W += s B A), re-initialised
// (A kaiming, B = 0) and their optimizer moments reset, until each module's newest increment is
// negligible (‖s B A‖_F / ‖W‖_F below a threshold): that last increment is discarded and the module
// stops training. The adapter is a plain LoRA adapter the caller creates (PeftModel::add_adapter with
// r and lora_alpha from AromaOptions, see lora_config_for; `rankforge train` targets
// aroma_default_targets unless target_modules is set).
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/config.h"
#include "peft/strategy.h"

namespace rf::peft {

struct AromaOptions {                      // defaults: the GLUE scripts (MRPC), methods.md §1.6
  int64_t r = 1;                           // rank of each increment (the adapter's r)
  double alpha = 4;                        // lora_alpha: scaling alpha / r
  int64_t lora_check_frequency = 10;       // inner loop: compare B A every this many steps
  int64_t max_steps_before_reset = 200;    // inner-loop cap = cycle length C = T_in of fixed_period
  double lora_change_threshold = 0.1;      // inner loop: ‖P - P_prev‖ / ‖P_prev‖ below this = stabilised
  double convergence_threshold = 1e-3;     // outer loop: mean ‖s B A‖ / ‖W‖ below this = converged
  int64_t convergence_window = 1;          // relative norms averaged (decided once the window is full)
  int64_t convergence_patience = 1;        // consecutive all-converged resets before done()
  std::string moment_reset = "prune";      // zero | prune (keep a random prune_keep of the moments)
  double prune_keep = 0.001;               // ReLoRA's random_pruning_(0.999)
  std::string inner_criterion = "legacy";  // legacy (keeps P - P_prev: the official runs, §1.3) | intended (P_prev = P)
  std::string variant = "adaptive";        // adaptive (GLUE) | fixed_period (commonsense: reset every T_in steps)
  uint64_t seed = 0;                       // re-init and pruning draw from their own Philox stream
  std::string adapter;                     // empty: the first active adapter
  void validate() const;                   // throws "[aroma] ..." one line
  nlohmann::json to_json() const;
};

// c with AROMA's adapter settings: r, lora_alpha, kaiming/zero init, no rsLoRA / DoRA / lora_bias.
LoraConfig lora_config_for(const AromaOptions& o, LoraConfig c = {});

// The target_modules AROMA uses when none are given ('.'-suffixes): the GLUE script's
// ["query","key","value","dense"] on bert (every encoder linear plus the pooler's dense: 73 modules on
// a 12-layer model), every block linear on gpt2 (c_attn, c_proj, c_fc), and the commonsense script's
// q/k/v/up/down_proj on llama, mistral and qwen2 (methods.md §1.2, §1.4). Throws "[aroma] ..." for
// other model types.
std::vector<std::string> aroma_default_targets(const std::string& model_type);

// One merged increment: the base weight received scale * b a.
struct AromaComponent {
  double scale = 1;
  Tensor b;  // (out, r) host f32
  Tensor a;  // (r, in) host f32
};

// The merges as one PEFT LoRA adapter: per module A = [a_1; ...; a_k] (k r, in) and
// B = [s_1 b_1, ..., s_k b_k] (out, k r) with scaling 1 (rank_pattern = alpha_pattern = k r),
// so B A = Σ s_p b_p a_p = W_final - W0 up to the rounding of the in-place merges.
struct AromaAdapter {
  LoraConfig config;
  std::map<std::string, Tensor> tensors;  // PEFT file keys ("base_model.model.<path>.lora_A.weight"), host f32
};

class AromaStrategy final : public RankStrategy {
 public:
  explicit AromaStrategy(AromaOptions o);
  std::string name() const override { return "aroma"; }

  // Gives the strategy its PeftModel outside the hooks. A resumed run must call it right after
  // load_state (the trainer calls no hook before the first forward, and the forward must already see
  // the re-applied merges); a pending restore is applied here. before_training binds too.
  void bind(PeftModel& pm);

  void before_training(PeftModel& pm, const std::vector<BatchLoss>& probe, int64_t total_steps) override;
  void resumed(PeftModel& pm) override { bind(pm); }
  void after_backward(PeftModel& pm, int64_t step) override;
  // The inner-loop check and, when every module is ready, merge / re-init / moment reset: between
  // backward and the optimizer update, as the official training_step (methods.md §1.2, §1.8).
  void before_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer& opt) override;
  std::vector<ModuleRank> rank_report(PeftModel& pm) const override;  // merges per module
  bool done() const override { return counter_ >= o_.convergence_patience; }
  nlohmann::json step_metrics() const override { return {{"aroma_resets", resets_}}; }
  // Holds every counter, history, previous product, converged flag, the RNG position, the merged
  // components (load_state re-applies them to the ORIGINAL base weights: the resumed run reloads the
  // model) and, when bound, the live A/B.
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override;

  const AromaOptions& options() const { return o_; }
  int64_t resets() const { return resets_; }  // global check-merge-reinit rounds so far
  std::vector<std::string> modules() const;   // module paths, sorted
  int64_t merges(const std::string& path) const { return int64_t(state(path).components.size()); }
  bool converged(const std::string& path) const { return state(path).converged; }
  const std::vector<AromaComponent>& components(const std::string& path) const { return state(path).components; }

  // include_live: also the current pair of each non-converged module (when B != 0), so the adapter
  // reproduces the trained function; without it the adapter holds exactly the merges.
  AromaAdapter export_adapter(PeftModel& pm, bool include_live = true) const;
  // Whether export_adapter(pm, true) has an increment to write: a merge, or a live pair with B != 0.
  bool exportable(PeftModel& pm) const;
  // adapter_config.json + adapter_model.safetensors in dir (created), loadable by PEFT and
  // PeftModel::load_adapter onto the ORIGINAL base model.
  void export_lora(PeftModel& pm, const std::string& dir, bool include_live = true) const;

 private:
  struct ModuleState {
    int64_t steps_since_check = 0;
    Tensor prev_product;  // (out, in) f32 on the module's device; undefined until the first check
    bool stabilized = false;
    bool converged = false;
    std::vector<double> history;             // the last convergence_window relative norms
    std::vector<AromaComponent> components;  // merged increments, in merge order
  };
  const ModuleState& state(const std::string& path) const;
  void init_modules(PeftModel& pm);
  void require_restored() const;
  void apply_restore(PeftModel& pm);
  bool check_module(PeftModel& pm, const std::string& path, ModuleState& st);
  void merge_check_reinit(PeftModel& pm, const std::string& path, ModuleState& st);
  Tensor kaiming(const Shape& s, Device d);
  uint64_t next_seed();

  AromaOptions o_;
  PeftModel* pm_ = nullptr;
  std::string adapter_;
  std::map<std::string, ModuleState> mods_;
  int64_t resets_ = 0;
  int64_t counter_ = 0;      // consecutive resets after which every module was converged
  uint64_t rng_offset_ = 0;  // counters of the Philox stream used so far
  // load_state output waiting for the PeftModel: the live A/B to copy back (by module path).
  bool restore_pending_ = false;
  std::map<std::string, std::pair<Tensor, Tensor>> pending_live_;
};

std::unique_ptr<RankStrategy> make_aroma_strategy(const AromaOptions& o);

namespace aroma_detail {  // shared by aroma.cpp and aroma_state.cpp: training and replay must match bit for bit
Tensor host_copy(const Tensor& t);                                   // detached f32 contiguous copy on the CPU
Tensor component_delta(const AromaComponent& c, Device d);           // c.scale * c.b c.a on d, (out, in)
void add_to_base(LoraLinear& l, const AromaComponent& c, Device d);  // W += s b a (quantized: a side term)
}  // namespace aroma_detail

// The options of `adapter.method: aroma` in a MethodConfig (peft/method.h, peft/aroma_method.cpp).
struct MethodConfig;
AromaOptions& aroma_options(MethodConfig& c);
const AromaOptions& aroma_options(const MethodConfig& c);

}  // namespace rf::peft
