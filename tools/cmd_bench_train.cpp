// `rankforge bench train`: one LoRA fine-tuning step of a GPT-2-shaped decoder, the same work as
// bench/torch_lora_step.py (frozen base, LoRA r/alpha on qkv, MLP up and MLP down, AdamW on the
// adapter, mean cross-entropy over B*T positions, random tokens). Median step time after a warm-up.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_backend.h"
#include "engine/ops.h"
#include "models/loss.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {
struct BenchTrainArgs {
  int64_t layers = 12, d_model = 768, heads = 12, vocab = 50257, seq = 256, batch = 4, rank = 8, steps = 6;
  bool checkpointing = false;
};

int run_bench_train(const BenchTrainArgs& a, Device d) {
  manual_seed(0);
  nlohmann::json cfg = {{"model_type", "gpt2"}, {"vocab_size", a.vocab}, {"n_positions", std::max<int64_t>(1024, a.seq + 1)},
                        {"n_embd", a.d_model}, {"n_layer", a.layers}, {"n_head", a.heads}, {"resid_pdrop", 0.0},
                        {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"activation_function", "gelu_new"}};
  nn::Init init;
  init.device = d;
  auto model = models::create_model(models::parse_config(cfg, "bench"), init);
  peft::PeftModel pm(*model);
  peft::LoraConfig lc;
  lc.r = a.rank;
  lc.lora_alpha = 2.0 * double(a.rank);
  lc.target_modules = peft::ModuleSelector::list({"c_attn", "c_fc", "mlp.c_proj"});
  pm.add_adapter("default", lc);
  model->set_gradient_checkpointing(a.checkpointing);
  peft::TrainerOptions o;
  o.lr = 1e-4f;
  o.max_grad_norm = 0;  // the peer does not clip
  o.schedule.total_steps = a.steps + 1;
  peft::Trainer tr(*model, &pm, nullptr, o);
  // (B, T + 1) tokens: inputs are the first T, targets the last T, as the peer.
  Tensor data = rand({a.batch, a.seq + 1}, 0.0, double(a.vocab) - 0.5).to(DType::I64).to(d);
  Tensor x = narrow(data, 1, 0, a.seq).contiguous(), y = narrow(data, 1, 1, a.seq).contiguous();
  model->eval();  // dropout off, as the peer (its dropouts are 0)
  std::vector<double> times;
  double loss = 0;
  Backend& be = backend_for(d);
  for (int64_t s = 0; s <= a.steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = tr.step({[&] {
      Tensor logits = model->forward(models::ModelInputs{x, {}, {}, {}});
      return cross_entropy(reshape(logits, {-1, a.vocab}), reshape(y, {-1}));
    }});
    be.synchronize();
    loss = r.loss;
    if (s > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  fmt::print("rankforge device={} L={} D={} V={} T={} B={} trainable={} loss={:.3f} step_s={:.3f} tokens_per_s={:.0f} "
             "peak_rss_mb={:.0f} checkpointing={} cpu_peak_alloc_mb={:.0f}\n",
             device_str(d), a.layers, a.d_model, a.vocab, a.seq, a.batch, tr.trainable_count(), loss, med,
             double(a.batch * a.seq) / med, double(ru.ru_maxrss) / 1024.0, a.checkpointing ? 1 : 0,
             double(cpu::allocator_stats().peak_bytes_in_use) / (1024.0 * 1024.0));
  return 0;
}
}  // namespace

void add_bench_train_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static BenchTrainArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* t = bench->add_subcommand("train", "One LoRA training step of a GPT-2-shaped model (peer: bench/torch_lora_step.py)");
  t->add_option("--layers", a.layers)->check(CLI::Range(int64_t(1), int64_t(1000)));
  t->add_option("--d-model", a.d_model)->check(CLI::Range(int64_t(8), int64_t(65536)));
  t->add_option("--heads", a.heads)->check(CLI::Range(int64_t(1), int64_t(1024)));
  t->add_option("--vocab", a.vocab)->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  t->add_option("--seq", a.seq)->check(CLI::Range(int64_t(2), int64_t(1) << 16));
  t->add_option("--batch", a.batch)->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  t->add_option("--rank", a.rank)->check(CLI::Range(int64_t(1), int64_t(4096)));
  t->add_option("--steps", a.steps)->check(CLI::Range(int64_t(1), int64_t(100000)));
  t->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  t->add_flag("--checkpointing", a.checkpointing, "recompute each block in backward (activation checkpointing)");
  t->callback([&rc, &device] { rc = run_bench_train(a, device()); });
}

}  // namespace rf::tools
