#pragma once
// RoSA (specs/methods.md §3): the self-contained pieces that the layer and trainer build on:
//   - the phase schedule (`schedule` strings of IST-DASLab/peft-rosa's RosaScheduler, §3.3),
//   - gradient collection and top-k mask generation (§3.3),
//   - the saved key layout of the sparse adapter and its CSR <-> Tensor conversion (§3.2, §3.5).
// No autograd, no training loop. Every error is std::invalid_argument("[rosa] ...") on one line.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/safetensors.h"
#include "engine/sparse.h"
#include "engine/tensor.h"
#include "peft/strategy.h"

namespace rf::peft {

// ---- Schedule (§3.3 "Schedule"; peft-rosa scheduler.py _create_schedule / _get_agenda) ----

// What one optimizer step does. generate_masks_after: this step is the last grad-collection
// step, so at its end the masks are generated from the collected gradients and SpA is activated
// with values 0 (upstream _on_step_end: 'grad_collection' in this agenda and not in the next).
struct RosaAgenda {
  bool lora = false;
  bool spa = false;
  bool grad_collection = false;
  bool generate_masks_after = false;
  // Upstream's agenda list, e.g. {"lora", "grad_collection"} (for traces and tests).
  std::vector<std::string> names() const;
};

struct RosaSchedule {
  enum class Kind { Warmup, LoraOnly, SpaOnly };
  Kind kind = Kind::Warmup;
  std::string name;               // as given ("default", "df", "wl64", ...)
  int64_t lora_warmup_steps = 0;  // wlN: N (default/df: 0)
  int64_t spa_num_grads = 1;      // collection steps (micro-batch hooks fire within each)
  bool masks_loaded = false;      // mask_load_path set: no collection phase at all

  RosaAgenda agenda(int64_t step) const;  // step >= 0, counted in optimizer steps from 0
};

// Parses `schedule` with the checks upstream asserts, against the config's density d:
// default|df (= wl0), lora_only (d must be 0), spa_only (d > 0), wl<N> (decimal N >= 0; d > 0).
// spa_num_grads must be >= 1 whenever a collection phase exists.
RosaSchedule parse_rosa_schedule(const std::string& schedule, double d, int64_t spa_num_grads,
                                 bool masks_loaded = false);

// ---- Mask generation (§3.3 "Gradient collection", "Mask") ----

enum class RosaGradAccMode { MeanSquared, Mean };
RosaGradAccMode parse_grad_acc_mode(const std::string& s);  // mean_squared | mean

// Running mean over micro-batch weight gradients G (out, in), squared first in MeanSquared mode
// (upstream ManualGradCollectorHook: one call per backward, i.e. per micro-batch).
class RosaGradAccumulator {
 public:
  RosaGradAccumulator(int64_t out, int64_t in, RosaGradAccMode mode);
  void add(const Tensor& grad);           // grad (out, in), any float dtype, any device
  void add(std::span<const float> grad);  // (out, in) row-major
  int64_t count() const { return count_; }
  int64_t out() const { return out_; }
  int64_t in() const { return in_; }
  std::vector<double> collected() const;  // (out, in): the mean; throws when count() == 0
  // Checkpoints: the running sums and count, restored exactly.
  const std::vector<double>& sums() const { return sum_; }
  void restore(std::vector<double> sums, int64_t count);

 private:
  int64_t out_, in_;
  RosaGradAccMode mode_;
  int64_t count_ = 0;
  std::vector<double> sum_;  // (out, in)
};

// The module's density after density_pattern (first key that matches, as rank_pattern:
// peft/pattern.h pattern_key_matches), else d. Throws unless the result is in [0, 1].
double rosa_density_for(double d, const std::vector<std::pair<std::string, double>>& density_pattern,
                        const std::string& module_name);

// nnz = int(d * numel) (Python truncation, upstream `int(self._d * grad.numel())`): floor, not round.
int64_t rosa_nnz(double d, int64_t out, int64_t in);

// The support of the top-k entries of |scores| (out, in) with k = rosa_nnz(d, out, in), values 0.
// Ties go to the lower flat index (row-major), which makes the mask deterministic where torch.topk
// is not (methods.md §6). NaN scores are rejected.
Csr rosa_topk_mask(std::span<const double> scores, int64_t out, int64_t in, double d);
Csr rosa_mask(const RosaGradAccumulator& acc, double d);  // top-k of |collected()|

// ---- Saved layout (§3.2, §3.5; peft save_and_load keeps every key containing "rosa_") ----

// Field suffixes after "<module>.": rosa_A.weight (r, in), rosa_B.weight (out, r), then
// rosa_spa.{values, row_offs, row_idx, col_idx} and, with the transpose, rosa_spa.{tr_perm,
// tr_row_offs, tr_row_idx, tr_col_idx}.
std::string rosa_key(const std::string& module, const std::string& field);
std::vector<std::string> rosa_spa_fields(bool with_transpose);

// The dtype a field has in the adapter file: col_idx/row_idx/tr_col_idx/tr_row_idx I16 (spops),
// row_offs/tr_row_offs/tr_perm I32, values the rosa_dtype, rosa_A/B the float dtype given.
safetensors::StDType rosa_file_dtype(const std::string& field, DType float_dtype);

// Dimension limit of spops' int16 indices.
constexpr int64_t kRosaMaxDim = 32767;

// S -> "<module>.rosa_spa.*" tensors on the CPU. values in values_dtype (F32, BF16 or F16). The
// engine has no int16 dtype, so I16 fields are I32 tensors here whose every entry is checked to fit
// int16 (rosa_file_dtype says what a writer narrows them to). Throws when out or in exceeds 32767.
std::map<std::string, Tensor> rosa_spa_to_tensors(const Csr& s, const std::string& module, DType values_dtype,
                                                  bool with_transpose);

// Back to a Csr (out, in), validating every field: presence, 1-D shapes, integer dtypes, the CSR
// invariants, row_idx a permutation of rows with non-increasing lengths (any order among equal
// lengths: torch.argsort need not be stable), and tr_* (when present) equal to S's transpose.
Csr rosa_spa_from_tensors(const std::map<std::string, Tensor>& tensors, const std::string& module, int64_t out,
                          int64_t in);

// ---- The strategy (peft/rosa_strategy.cpp) ----

// RoSA's schedule on the trainer hooks, for one ROSA adapter (its config carries every option): LoRA-only
// warm-up, gradient collection on the micro-batches of spa_num_grads steps (the base weights get gradients
// for those steps only), masks at the end of the last collection step, then LoRA and S together. With
// mask_load_path the masks load before the first step; with mask_save_path they are written when made;
// terminate_after_mask_generation ends the run there (done()), the first half of the restart protocol.
std::unique_ptr<RankStrategy> make_rosa_strategy(const std::string& adapter = "default");

// ---- Adapter files (peft/rosa_io.cpp) ----

class LoraLinear;
struct LoraConfig;
// One module's tensors of a ROSA adapter under "<module_key>.": rosa_A.weight, rosa_B.weight and, once the
// support exists, rosa_spa.* (values in rosa_dtype, tr_* when spa_store_transpose).
void rosa_adapter_tensors(std::map<std::string, Tensor>& out, const std::string& module_key, LoraLinear& l,
                          const std::string& adapter, const LoraConfig& c);
// The fields a writer narrows to I16 (col_idx, row_idx and their tr_ twins), by file key.
std::map<std::string, safetensors::StDType> rosa_narrowed_fields(const std::map<std::string, Tensor>& tensors);
// The dense (out, in) Bool masks of the supports, by module path (rankforge's mask file: safetensors, where
// peft-rosa pickles {module: bool mask} with torch.save), and back to supports (values 0).
std::map<std::string, Tensor> rosa_masks_to_tensors(const std::map<std::string, Csr>& supports);
std::map<std::string, Csr> rosa_masks_from_file(const std::string& path);

// ---- The method (peft/rosa_method.cpp) ----

// What `adapter.method: rosa` holds besides the adapter config's RoSA fields (lora.rosa).
struct RosaRunOptions {
  double lora_lr = 0;  // > 0: the LoRA pair's own learning rate (TrainerOptions::group_lr)
  // RoSA's two-run restart protocol in one command (methods.md §3.3): run 1 in <output>/mask_run trains with
  // the schedule until the masks exist and saves them to <output>/rosa_masks.safetensors; run 2 starts again
  // from the pretrained model in <output> with schedule default and those masks.
  bool restart = false;
};
struct MethodConfig;
RosaRunOptions& rosa_options(MethodConfig& c);
const RosaRunOptions& rosa_options(const MethodConfig& c);

}  // namespace rf::peft
