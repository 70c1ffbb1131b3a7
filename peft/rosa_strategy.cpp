// RoSA's training schedule on the strategy hooks (methods.md §3.3; peft-rosa scheduler.py RosaScheduler and
// hooks.py ManualGradCollectorHook). The per-micro-batch hook reads the dense weight gradient G = dO^T X that
// autograd computes while the base weight requires a gradient (collection steps only), which is exactly
// what upstream's forward/backward hooks compute by hand.
#include <fmt/format.h>

#include <filesystem>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "nn/grad_buckets.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {

[[noreturn]] void fail(const std::string& m) { throw std::invalid_argument("[rosa] " + m); }

class RosaStrategy final : public RankStrategy {
 public:
  explicit RosaStrategy(std::string adapter) : adapter_(std::move(adapter)) {}
  std::string name() const override { return "rosa"; }

  void before_training(PeftModel& pm, const std::vector<BatchLoss>&, int64_t) override {
    setup(pm);
    if (!pending_.empty()) return;  // resumed: the supports come back in resumed()
    if (!cfg_.mask_load_path) return;
    std::map<std::string, Csr> masks = rosa_masks_from_file(*cfg_.mask_load_path);
    for (auto& [path, l] : layers(pm)) {
      auto it = masks.find(path);
      if (it == masks.end()) fail(fmt::format("{}: no mask for module '{}'", *cfg_.mask_load_path, path));
      try {
        l->set_spa_support(adapter_, it->second);
      } catch (const std::invalid_argument& e) {
        fail(fmt::format("{}: {}", *cfg_.mask_load_path, std::string(e.what()).substr(7)));
      }
    }
    masks_made_ = true;
    refresh_snapshot(pm);
  }

  void before_step(PeftModel& pm, int64_t step) override {
    setup(pm);
    const RosaAgenda a = sched_.agenda(step);
    for (auto& [path, l] : layers(pm)) {
      l->lora_A(adapter_).weight().set_requires_grad(a.lora);
      l->lora_B(adapter_).weight().set_requires_grad(a.lora);
      if (a.grad_collection && !masks_made_) {
        // The base weight gets a gradient for this step only: G = dO^T X per micro-batch (a quantized
        // base: its zero stand-in, see nn::Linear::grad_target).
        l->base().grad_target().set_requires_grad(true);
        if (!acc_.count(path))
          acc_.emplace(path, RosaGradAccumulator(l->base().out_features(), l->base().in_features(), mode_));
      }
    }
    collecting_ = a.grad_collection && !masks_made_;
  }

  void after_micro_backward(PeftModel& pm, int64_t) override {
    if (!collecting_) return;
    if (dist::active()) {
      // Data parallelism: the statistic is of the global micro-batch's gradient, so each rank's
      // (share-weighed) G is summed over ranks before it is squared and accumulated. Dense, but only
      // for the few collection steps.
      std::vector<Tensor> ws;
      for (auto& [path, l] : layers(pm)) ws.push_back(l->base().grad_target());
      nn::GradBuckets(ws, {.overlap = false}).finish();
    }
    for (auto& [path, l] : layers(pm)) {
      Tensor& w = l->base().grad_target();
      Tensor g = w.grad();
      if (!g.defined()) continue;  // the module took no part in this micro-batch's loss
      NoGradGuard ng;
      if (loss_scale() != 1.0) g = mul(g, 1.0 / loss_scale());                 // f16 loss scaling: the true gradient
      acc_.at(path).add(l->base().fan_in_fan_out() ? g.t().contiguous() : g);  // (out, in)
      w.zero_grad();
    }
  }

  bool after_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer&) override {
    const RosaAgenda a = sched_.agenda(step - 1);  // the step just taken
    if (!a.generate_masks_after || masks_made_) return false;
    std::map<std::string, Csr> supports;
    for (auto& [path, l] : layers(pm)) {
      if (l->base().quantized()) {
        l->base().drop_grad_probe();
      } else {
        l->base().weight().set_requires_grad(false);
        l->base().weight().zero_grad();
      }
      auto it = acc_.find(path);
      if (it == acc_.end() || it->second.count() == 0)
        fail(fmt::format("module '{}' got no gradient during collection: its mask cannot be made", path));
      const double d = l->options(adapter_).rosa.density;
      Csr m = rosa_mask(it->second, d);
      l->set_spa_support(adapter_, m);  // values 0: SpA starts as a no-op
      supports.emplace(path, std::move(m));
    }
    acc_.clear();
    collecting_ = false;
    masks_made_ = true;
    supports_snapshot_ = supports;
    if (cfg_.mask_save_path && dist::is_main()) {  // data parallelism: rank 0 writes, every rank has the masks
      std::filesystem::path p(*cfg_.mask_save_path);
      if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
      safetensors::save_file(rosa_masks_to_tensors(supports), p.string(), {{"format", "rankforge-rosa-masks"}});
    }
    if (cfg_.terminate_after_mask_generation) done_ = true;
    return false;  // the values were in the optimizer from the start (without gradients until now)
  }

  bool done() const override { return done_; }

  void resumed(PeftModel& pm) override {
    setup(pm);
    for (auto& [path, l] : layers(pm)) {
      auto it = pending_.find(path);
      if (it == pending_.end()) continue;
      Csr s = it->second;
      s.values = spa_values_host(*l);  // the checkpoint's values stay
      l->set_spa_support(adapter_, s);
    }
    pending_.clear();
    refresh_snapshot(pm);
  }

  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override {
    meta["masks_made"] = masks_made_;
    meta["done"] = done_;
    for (const auto& [path, s] : supports_snapshot_) {
      tensors["support." + path + ".row_ptr"] = from_data(s.row_ptr, {s.rows + 1});
      tensors["support." + path + ".col_idx"] = from_data(s.col_idx, {s.nnz()});
      meta["support_shapes"][path] = {s.rows, s.cols};
    }
    for (const auto& [path, a] : acc_) {
      tensors["acc." + path] = from_data(a.sums(), {a.out(), a.in()});
      meta["acc_counts"][path] = a.count();
    }
  }

  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override {
    masks_made_ = meta.value("masks_made", false);
    done_ = meta.value("done", false);
    pending_.clear();
    if (meta.contains("support_shapes"))
      for (const auto& [path, shape] : meta["support_shapes"].items()) {
        Csr s;
        s.rows = shape.at(0).get<int64_t>();
        s.cols = shape.at(1).get<int64_t>();
        s.row_ptr = tensors.at("support." + path + ".row_ptr").to_vector<int32_t>();
        s.col_idx = tensors.at("support." + path + ".col_idx").to_vector<int32_t>();
        s.values.assign(s.col_idx.size(), 0.0f);
        pending_.emplace(path, std::move(s));
      }
    saved_acc_.clear();
    if (meta.contains("acc_counts"))
      for (const auto& [path, n] : meta["acc_counts"].items())
        saved_acc_[path] = {tensors.at("acc." + path).to_vector<double>(), n.get<int64_t>()};
  }

 private:
  // Reads the adapter's config once. The host copy of the supports (for checkpoints) is refreshed only
  // where supports change: here, after mask generation or loading, and on resume — not every step.
  void setup(PeftModel& pm) {
    if (ready_) return;
    const LoraConfig& c = pm.config(adapter_);
    if (!c.is_rosa()) fail(fmt::format("adapter '{}' is {}, not ROSA", adapter_, c.peft_type));
    cfg_ = c.rosa;
    if (!cfg_.schedule)
      fail("the adapter config has no schedule; training needs one (default, lora_only, spa_only, wl<N>)");
    sched_ = parse_rosa_schedule(*cfg_.schedule, cfg_.d, cfg_.spa_num_grads, cfg_.mask_load_path.has_value());
    mode_ = parse_grad_acc_mode(cfg_.grad_acc_mode);
    for (auto& [path, sa] : saved_acc_) {
      LoraLinear* l = pm.lora_layers().at(path);
      RosaGradAccumulator a(l->base().out_features(), l->base().in_features(), mode_);
      a.restore(sa.first, sa.second);
      acc_.emplace(path, std::move(a));
    }
    saved_acc_.clear();
    ready_ = true;
    refresh_snapshot(pm);
  }

  void refresh_snapshot(PeftModel& pm) {
    supports_snapshot_.clear();
    for (auto& [path, l] : layers(pm))
      if (const Csr* s = l->spa_support(adapter_)) supports_snapshot_[path] = *s;
  }

  std::vector<std::pair<std::string, LoraLinear*>> layers(PeftModel& pm) const {
    std::vector<std::pair<std::string, LoraLinear*>> v;
    for (auto& [path, l] : pm.lora_layers())
      if (l->has_adapter(adapter_)) v.emplace_back(path, l);
    return v;
  }

  std::vector<float> spa_values_host(LoraLinear& l) const {
    return l.spa_values(adapter_).detach().to(DType::F32).to(Device{}).to_vector<float>();
  }

  std::string adapter_;
  bool ready_ = false;
  RosaFields cfg_;
  RosaSchedule sched_;
  RosaGradAccMode mode_ = RosaGradAccMode::MeanSquared;
  std::map<std::string, RosaGradAccumulator> acc_;
  std::map<std::string, std::pair<std::vector<double>, int64_t>> saved_acc_;
  std::map<std::string, Csr> pending_, supports_snapshot_;
  bool collecting_ = false, masks_made_ = false, done_ = false;
};

}  // namespace

std::unique_ptr<RankStrategy> make_rosa_strategy(const std::string& adapter) {
  return std::make_unique<RosaStrategy>(adapter);
}

}  // namespace rf::peft
