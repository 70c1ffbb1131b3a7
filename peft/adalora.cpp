#include "peft/adalora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "peft/pattern.h"

namespace rf::peft {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[peft] adalora: " + why); }

const char* kParts[] = {"lora_A", "lora_E", "lora_B"};

Tensor& part(LoraLinear& l, const std::string& adapter, int i) {
  return i == 0 ? l.A(adapter) : i == 1 ? l.E(adapter) : l.B(adapter);
}

Tensor identity(int64_t n, Device d) {
  std::vector<float> v(size_t(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0f;
  return from_data(v, {n, n}, d);
}

// Sets E_i = 0 where keep_i is false (PEFT's masked_fill_); the kept values are untouched bit for bit.
void zero_pruned(Tensor& e, const std::vector<bool>& keep) {
  NoGradGuard ng;
  std::vector<float> v = e.to_vector<float>();
  if (v.size() != keep.size()) fail(fmt::format("a mask of {} flags for lora_E of {} rows", keep.size(), v.size()));
  for (size_t i = 0; i < v.size(); ++i)
    if (!keep[i]) v[i] = 0.0f;
  e.copy_(from_data(v, e.shape(), e.device()));
}
}  // namespace

AdaLoraBudget adalora_budget(int64_t t, int64_t init_bgt, int64_t target_bgt, int64_t tinit, int64_t tfinal,
                             int64_t total_step, int64_t deltaT) {
  if (t <= tinit) return {init_bgt, false};
  if (t > total_step - tfinal) return {target_bgt, true};
  // Python float arithmetic, then int() truncation, as PEFT.
  const double c = 1.0 - double(t - tinit) / double(total_step - tfinal - tinit);
  const double b = double(init_bgt - target_bgt) * std::pow(c, 3.0) + double(target_bgt);
  return {int64_t(std::trunc(b)), t % deltaT == 0};
}

Tensor adalora_orth_penalty(PeftModel& pm, const std::string& adapter) {
  Tensor total;
  int64_t n = 0;
  for (auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(adapter)) continue;
    for (int i : {0, 2}) {
      ++n;  // an empty factor (rank 0) counts with a zero term, as in PEFT
      const Tensor& p = part(*l, adapter, i);
      if (p.numel() == 0) continue;
      Tensor c = i == 0 ? matmul(p, p.t()) : matmul(p.t(), p);  // (r, r)
      Tensor d = norm(sub(c, identity(c.size(0), c.device())), 2.0);
      total = total.defined() ? add(total, d) : d;
    }
  }
  return total.defined() ? mul(total, 1.0 / double(n)) : Tensor();
}

AdaLoraStrategy::AdaLoraStrategy(const AdaLoraFields& o, int64_t target_total) : o_(o), target_total_(target_total) {
  if (target_total < 0) fail(fmt::format("target_total must be >= 0, got {}", target_total));
  LoraConfig c;
  c.peft_type = "ADALORA";
  c.adalora = o;
  c.adalora.rank_pattern.reset();
  c.validate();
}

const std::string& AdaLoraStrategy::adapter(PeftModel& pm) {
  if (adapter_.empty()) {
    if (pm.active_adapters().empty()) fail("no active adapter");
    const std::string& a = pm.active_adapters()[0];
    if (!pm.config(a).is_adalora())
      fail(fmt::format("adapter '{}' is {}; the adalora method needs an ADALORA adapter", a, pm.config(a).peft_type));
    adapter_ = a;
  }
  return adapter_;
}

void AdaLoraStrategy::setup(PeftModel& pm) {
  if (ready_) return;
  const std::string& a = adapter(pm);
  total_ = o_.total_step > 0 ? o_.total_step : trainer_total_;
  if (total_ <= 0) fail("total_step is unset: set it in the adapter config or plan the number of steps");
  if (o_.tinit >= total_ - o_.tfinal)
    fail(fmt::format("tinit {} must be < total_step - tfinal = {} - {}", o_.tinit, total_, o_.tfinal));
  AdaLoraFields& f = pm.adalora_fields(a);
  if (f.total_step <= 0) f.total_step = total_;  // saved configs carry it, as PEFT requires
  init_bgt_ = 0;
  int64_t n = 0;
  for (auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(a)) continue;
    const int64_t r = l->A(a).size(0);
    if (r != o_.init_r)
      fail(fmt::format("module {} has {} rows, not init_r = {} (a pruned adapter cannot be trained on)", path, r,
                       o_.init_r));
    init_bgt_ += r;  // PEFT's init_bgt: the rows of every lora_A
    ++n;
  }
  if (n == 0) fail(fmt::format("adapter '{}' has no module", a));
  target_bgt_ = target_total_ > 0 ? target_total_ : o_.target_r * n;
  if (target_bgt_ > init_bgt_)
    fail(fmt::format("the final budget {} exceeds the {} triplets the adapter starts with", target_bgt_, init_bgt_));
  last_budget_ = init_bgt_;
  if (rank_pattern_) f.rank_pattern = rank_pattern_;  // restored by load_state
  ready_ = true;
}

void AdaLoraStrategy::before_training(PeftModel& pm, const std::vector<BatchLoss>&, int64_t total_steps) {
  trainer_total_ = total_steps;
  setup(pm);
}

Tensor AdaLoraStrategy::extra_loss(PeftModel& pm) {
  if (o_.orth_reg_weight == 0) return Tensor();
  Tensor p = adalora_orth_penalty(pm, adapter(pm));
  return p.defined() ? mul(p, o_.orth_reg_weight) : p;
}

bool AdaLoraStrategy::after_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer&) {
  update_and_allocate(pm, step - 1);
  return false;
}

void AdaLoraStrategy::update_ipt(PeftModel& pm) {
  NoGradGuard ng;
  const std::string& a = adapter_;
  for (auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(a)) continue;
    for (int i = 0; i < 3; ++i) {
      const Tensor& p = part(*l, a, i);
      const std::string key = path + "." + kParts[i];
      Tensor g = p.grad().defined() ? p.grad() : zeros_like(p);
      Tensor ipt = abs(mul(p.detach(), g));
      Tensor& avg = ipt_[key];
      Tensor& unc = unc_[key];
      if (!avg.defined()) avg = zeros_like(ipt);
      if (!unc.defined()) unc = zeros_like(ipt);
      if (avg.device() != ipt.device()) avg = avg.to(ipt.device());  // loaded on the host
      if (unc.device() != ipt.device()) unc = unc.to(ipt.device());
      avg = add(mul(avg, o_.beta1), mul(ipt, 1.0 - o_.beta1));
      unc = add(mul(unc, o_.beta2), mul(abs(sub(ipt, avg)), 1.0 - o_.beta2));
    }
  }
}

std::map<std::string, std::vector<float>> AdaLoraStrategy::triplet_scores(PeftModel& pm) const {
  NoGradGuard ng;
  std::map<std::string, std::vector<float>> out;
  const std::string a = adapter_.empty() && !pm.active_adapters().empty() ? pm.active_adapters()[0] : adapter_;
  for (auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(a)) continue;
    auto score = [&](const char* p) -> Tensor {
      auto i = ipt_.find(path + "." + p);
      auto u = unc_.find(path + "." + p);
      if (i == ipt_.end() || u == unc_.end()) fail(fmt::format("no importance scores yet for {}.{}", path, p));
      return mul(i->second, u->second);
    };
    std::vector<float> e = score("lora_E").to_vector<float>();              // (r, 1)
    std::vector<float> ra = mean(score("lora_A"), {1}).to_vector<float>();  // (r): mean over the row of A
    std::vector<float> cb = mean(score("lora_B"), {0}).to_vector<float>();  // (r): mean over the column of B
    std::vector<float> s(e.size());
    for (size_t k = 0; k < s.size(); ++k) s[k] = e[k] + (ra[k] + cb[k]);  // PEFT's _combine_ipt order
    out[path] = std::move(s);
  }
  return out;
}

void AdaLoraStrategy::mask_to_budget(PeftModel& pm, int64_t budget) {
  auto scores = triplet_scores(pm);
  std::vector<float> all;
  for (auto& [p, s] : scores) all.insert(all.end(), s.begin(), s.end());
  const int64_t k = init_bgt_ - budget;
  // kthvalue(all, k): every triplet scoring <= the k-th smallest is pruned, ties included. k = 0 (a
  // budget still at init_bgt, which PEFT's kthvalue rejects) prunes nothing.
  float thr = -std::numeric_limits<float>::infinity();
  if (k > 0) {
    if (k > int64_t(all.size())) fail(fmt::format("budget {} is below zero", budget));
    std::nth_element(all.begin(), all.begin() + (k - 1), all.end());
    thr = all[size_t(k - 1)];
  }
  RankMasks masks;
  for (auto& [path, s] : scores) {
    std::vector<bool> keep(s.size());
    for (size_t i = 0; i < s.size(); ++i) keep[i] = !(s[i] <= thr);
    zero_pruned(pm.lora_layers().at(path)->E(adapter_), keep);
    masks.emplace_back(path + ".lora_E", std::move(keep));
  }
  rank_pattern_ = masks;
  pm.adalora_fields(adapter_).rank_pattern = std::move(masks);
  last_budget_ = budget;
}

void AdaLoraStrategy::apply_masks(PeftModel& pm) {
  if (!rank_pattern_) return;
  for (const auto& [key, keep] : *rank_pattern_) {
    const std::string path = key.substr(0, key.size() - std::string(".lora_E").size());
    auto it = pm.lora_layers().find(path);
    if (it == pm.lora_layers().end()) fail(fmt::format("rank_pattern key '{}' names no module", key));
    zero_pruned(it->second->E(adapter_), keep);
  }
}

void AdaLoraStrategy::update_and_allocate(PeftModel& pm, int64_t t) {
  setup(pm);
  const int64_t final_t = total_ - o_.tfinal;
  auto budget = [&](int64_t s) {
    return adalora_budget(s, init_bgt_, target_bgt_, o_.tinit, o_.tfinal, total_, o_.deltaT);
  };
  if (t < final_t) {
    update_ipt(pm);
    AdaLoraBudget b = budget(t);
    if (b.mask) mask_to_budget(pm, b.budget);
    last_budget_ = b.budget;
  } else if (t == final_t) {
    // As PEFT: no EMA update at this step; the schedule gives target_bgt here.
    mask_to_budget(pm, budget(t).budget);
    ipt_.clear();
    unc_.clear();
  } else {
    apply_masks(pm);
  }
}

std::vector<ModuleRank> AdaLoraStrategy::rank_report(PeftModel& pm) const {
  std::vector<ModuleRank> out;
  std::string a = adapter_;
  if (a.empty() && !pm.active_adapters().empty()) a = pm.active_adapters()[0];
  for (auto& [path, r] : pm.ranks(a)) {
    int64_t kept = r;
    if (rank_pattern_)
      for (const auto& [key, keep] : *rank_pattern_)
        if (key == path + ".lora_E") kept = std::count(keep.begin(), keep.end(), true);
    out.push_back({path, kept});
  }
  return out;
}

void AdaLoraStrategy::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  NoGradGuard ng;
  for (auto& [k, t] : ipt_) tensors["ipt." + k] = t.detach().to(Device{}).contiguous().clone();
  for (auto& [k, t] : unc_) tensors["unc." + k] = t.detach().to(Device{}).contiguous().clone();
  nlohmann::json rp = nullptr;
  if (rank_pattern_) {
    rp = nlohmann::json::object();
    for (const auto& [k, m] : *rank_pattern_) rp[k] = std::vector<bool>(m);
  }
  meta = {{"adapter", adapter_}, {"total_step", total_}, {"rank_pattern", rp}};
}

void AdaLoraStrategy::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  ipt_.clear();
  unc_.clear();
  for (auto& [k, t] : tensors) {
    if (k.starts_with("ipt."))
      ipt_[k.substr(4)] = t.to(DType::F32).contiguous();
    else if (k.starts_with("unc."))
      unc_[k.substr(4)] = t.to(DType::F32).contiguous();
    else
      fail(fmt::format("unexpected state tensor '{}'", k));
  }
  rank_pattern_.reset();
  if (meta.contains("rank_pattern") && !meta["rank_pattern"].is_null()) {
    RankMasks m;
    for (const auto& [k, v] : meta["rank_pattern"].items()) m.emplace_back(k, v.get<std::vector<bool>>());
    rank_pattern_ = std::move(m);
  }
  if (meta.contains("adapter") && !meta["adapter"].get<std::string>().empty())
    adapter_ = meta["adapter"].get<std::string>();
  // A resumed trainer does not call before_training again: keep the step count the run planned.
  if (meta.contains("total_step") && meta["total_step"].get<int64_t>() > 0)
    trainer_total_ = meta["total_step"].get<int64_t>();
  ready_ = false;  // setup runs again with the model at the next hook (and pushes rank_pattern into its config)
}

std::unique_ptr<RankStrategy> make_adalora_strategy(const AdaLoraFields& options, int64_t target_total) {
  return std::make_unique<AdaLoraStrategy>(options, target_total);
}

std::unique_ptr<RankStrategy> make_adalora_strategy(const LoraConfig& c) {
  if (!c.is_adalora()) fail(fmt::format("the adapter config is {}, not ADALORA", c.peft_type));
  return make_adalora_strategy(c.adalora);
}

LoraExport adalora_to_lora(PeftModel& pm, const std::string& name) {
  const LoraConfig& c = pm.config(name);
  if (!c.is_adalora()) fail(fmt::format("adapter '{}' is {}, not ADALORA", name, c.peft_type));
  NoGradGuard ng;
  std::map<std::string, Tensor> st = pm.adapter_state_dict(name);  // cut by rank_pattern, as saved
  LoraExport ex;
  const std::string pre = kPeftPrefix;
  std::vector<std::pair<std::string, int64_t>> kept;
  for (auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(name)) continue;
    const std::string key = pre + path;
    Tensor a = st.at(key + ".lora_A"), e = st.at(key + ".lora_E"), b = st.at(key + ".lora_B");
    for (const char* p : kParts) st.erase(key + "." + p);
    const int64_t k = a.size(0);
    if (k == 0) continue;  // ΔW = 0; PEFT's LoRA has no rank-0 modules
    // The whole scale goes into A, so the LoRA scaling can be 1 (alpha = r) whatever k is.
    ex.tensors[key + ".lora_A.weight"] = mul(mul(a, e), l->scaling(name)).to(Device{}).contiguous();  // (k, in)
    ex.tensors[key + ".lora_B.weight"] = b.detach().to(Device{}).contiguous();                        // (out, k)
    kept.emplace_back(path, k);
  }
  if (kept.empty()) fail(fmt::format("adapter '{}' keeps no triplet: nothing to export", name));
  for (auto& [k, t] : st) ex.tensors[k] = t.detach().to(Device{}).contiguous();  // biases, modules_to_save
  LoraConfig& lc = ex.config;
  lc = c;
  lc.peft_type = "LORA";
  lc.adalora = {};
  lc.init_lora_weights = "true";
  int64_t r = 0;
  for (auto& [p, k] : kept) r = std::max(r, k);
  lc.r = r;
  lc.lora_alpha = double(r);
  lc.rank_pattern.clear();
  lc.alpha_pattern.clear();
  std::vector<std::string> targets;
  for (auto& [p, k] : kept) {
    targets.push_back(p);
    if (k == r) continue;
    lc.rank_pattern.emplace_back(p, k);  // exact paths: matched by (.*\.)?(path)$
    lc.alpha_pattern.emplace_back(p, double(k));
  }
  target_exactly(lc, std::move(targets));
  lc.validate();
  return ex;
}

void save_adalora_as_lora(PeftModel& pm, const std::string& dir, const std::string& name) {
  LoraExport ex = adalora_to_lora(pm, name);
  write_adapter_files(dir, ex.tensors, ex.config);
}

}  // namespace rf::peft
