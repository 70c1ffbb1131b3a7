// `rankforge bench train`: one LoRA fine-tuning step, the same work as bench/torch_lora_step.py
// (frozen base, AdamW on the adapter, mean cross-entropy over B*T positions, random tokens). GPT-2
// shapes: LoRA on qkv, MLP up and MLP down; LLaMA shapes (--arch llama --config FILE, a Hugging Face
// config.json): LoRA on every linear layer of the blocks. Median step time after a warm-up.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/autocast.h"
#include "engine/dist.h"
#include "engine/json_io.h"
#include "engine/ops.h"
#include "models/loss.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

// A random model whose Linear weights (lm_head aside, as bitsandbytes leaves it) are quantized one
// at a time from an f32 draw, so peak memory holds one layer in f32, never the model; the rest (norms
// 1, everything else N(0, 0.02)) in the model's dtype.
void quantize_random(models::Model& m, const QuantSpec& spec, Device d) {
  NoGradGuard ng;
  for (auto& [path, mod] : m.named_modules())
    if (auto* l = dynamic_cast<nn::Linear*>(mod); l && !spec.skips(path))
      l->set_quantized(quantize_weight(randn({l->out_features(), l->in_features()}, 0.0, 0.02), spec, d));
  for (auto& p : m.named_parameters())
    if (p.tensor->dtype() != DType::I32 && !p.name.ends_with(".absmax") && !p.name.ends_with(".SCB")) {
      const bool norm = p.name.find("norm") != std::string::npos || p.name.find("ln_") != std::string::npos;
      if (norm || p.tensor->dim() == 1)
        p.tensor->fill_(norm && p.name.ends_with("weight") ? 1.0 : 0.0);
      else  // a slice of rows at a time: an f32 draw of a whole embedding would outweigh a quantized layer
        for (int64_t r = 0, n = p.tensor->size(0),
                     step = std::max<int64_t>(1, (int64_t(1) << 20) * n / p.tensor->numel());
             r < n; r += step) {
          Tensor rows = p.tensor->narrow(0, r, std::min(step, n - r));
          rows.copy_(randn(rows.shape(), 0.0, 0.02, DType::F32, d));
        }
    }
}

struct BenchTrainArgs {
  int64_t layers = 12, d_model = 768, heads = 12, vocab = 50257, seq = 256, batch = 4, rank = 8, steps = 6;
  bool checkpointing = false, layers_set = false, double_quant = false;
  std::string arch = "gpt2", config, precision = "f32", base_dtype = "f32";
};

int run_bench_train(const BenchTrainArgs& a, Device d) {
  manual_seed(0);
  const bool llama = a.arch == "llama";
  nlohmann::json cfg = {{"model_type", "gpt2"},
                        {"vocab_size", a.vocab},
                        {"n_positions", std::max<int64_t>(1024, a.seq + 1)},
                        {"n_embd", a.d_model},
                        {"n_layer", a.layers},
                        {"n_head", a.heads},
                        {"resid_pdrop", 0.0},
                        {"embd_pdrop", 0.0},
                        {"attn_pdrop", 0.0},
                        {"activation_function", "gelu_new"}};
  if (llama) {
    if (a.config.empty())
      throw std::invalid_argument("[bench] train --arch llama needs --config (a LLaMA config.json)");
    cfg = parse_json_file(a.config, "bench");
    if (cfg.value("model_type", "") != "llama")
      throw std::invalid_argument(fmt::format("[bench] {}: model_type must be llama for --arch llama", a.config));
    if (a.layers_set) cfg["num_hidden_layers"] = a.layers;
  } else if (!a.config.empty()) {
    throw std::invalid_argument("[bench] train --config is for --arch llama; GPT-2 shapes come from the options");
  }
  const Precision prec = resolve_precision(a.precision, backend_for(d), "bench");
  const std::optional<QuantType> qt = quant_type_from_name(a.base_dtype);
  const DType base = qt ? DType::BF16 : *float_dtype_from_name(a.base_dtype);
  nn::Init init;
  init.device = d;
  init.dtype = base;                    // the frozen base is created in its dtype: peak memory never holds an f32 copy
  init.uninitialized = qt.has_value();  // quantized: filled below, one Linear at a time
  auto model = models::create_model(models::parse_config(cfg, llama ? a.config : "bench"), init);
  if (qt) {
    QuantSpec spec;
    spec.type = *qt;
    spec.double_quant = a.double_quant;
    quantize_random(*model, spec, d);
  }
  const int64_t vocab = model->config().vocab_size;
  peft::PeftModel pm(*model);
  peft::LoraConfig lc;
  lc.r = a.rank;
  lc.lora_alpha = 2.0 * double(a.rank);
  lc.target_modules =
      llama ? peft::ModuleSelector::list({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
            : peft::ModuleSelector::list({"c_attn", "c_fc", "mlp.c_proj"});
  pm.add_adapter("default", lc);
  model->set_gradient_checkpointing(a.checkpointing);
  peft::TrainerOptions o;
  o.precision = prec;
  o.lr = 1e-4f;
  o.max_grad_norm = 0;  // the peer does not clip
  o.schedule.total_steps = a.steps + 1;
  peft::Trainer tr(*model, &pm, nullptr, o);
  // (B, T + 1) tokens: inputs are the first T, targets the last T, as the peer. Under mpirun each
  // rank draws its own batch (the same model: drawn before this reseed).
  if (dist::rank() > 0) manual_seed(uint64_t(dist::rank()));
  Tensor data = rand({a.batch, a.seq + 1}, 0.0, double(vocab) - 0.5).to(DType::I64).to(d);
  Tensor x = narrow(data, 1, 0, a.seq).contiguous(), y = narrow(data, 1, 1, a.seq).contiguous();
  model->eval();  // dropout off, as the peer (its dropouts are 0)
  std::vector<double> times, comm;
  double loss = 0;
  Backend& be = backend_for(d);
  for (int64_t s = 0; s <= a.steps; ++s) {
    dist::reset_comm_stats();
    auto t0 = std::chrono::steady_clock::now();
    auto r = tr.step({[&] {
      Tensor logits = model->forward(models::ModelInputs{x, {}, {}, {}});
      return cross_entropy(reshape(logits, {-1, vocab}), reshape(y, {-1}));
    }});
    be.synchronize();
    loss = r.loss;
    if (s > 0) {
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      comm.push_back(dist::comm_stats().seconds / times.back());
    }
  }
  std::sort(times.begin(), times.end());
  std::sort(comm.begin(), comm.end());
  const double med = times[times.size() / 2];
  const double tps = double(a.batch * a.seq) / med;
  std::string dp;  // mpirun: every rank's tokens/s, their sum, and the share of the step spent in all-reduces
  if (dist::active()) {
    auto gather = [](double v) {
      std::vector<double> out;
      uint64_t bits;
      std::memcpy(&bits, &v, 8);
      for (uint64_t b : dist::allgather(bits)) out.push_back(std::bit_cast<double>(b));
      return out;
    };
    const std::vector<double> per = gather(tps), shares = gather(comm[comm.size() / 2]);
    double sum = 0, share = 0;
    std::vector<std::string> each;
    for (size_t r = 0; r < per.size(); ++r) {
      sum += per[r];
      share = std::max(share, shares[r]);
      each.push_back(fmt::format("{:.1f}", per[r]));
    }
    dp = fmt::format(" ranks={} rank_tokens_per_s={} aggregate_tokens_per_s={:.1f} allreduce_share={:.3f}", per.size(),
                     fmt::join(each, ","), sum, share);
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  const auto& mc = model->config();
  fmt::print(
      "rankforge device={} arch={} L={} D={} V={} T={} B={} trainable={} precision={} base_dtype={} loss={:.3f} "
      "step_s={:.3f} tokens_per_s={:.1f} peak_rss_mb={:.0f} checkpointing={} cpu_peak_alloc_mb={:.0f}{}\n",
      device_str(d), a.arch, mc.num_layers, mc.hidden_size, vocab, a.seq, a.batch, tr.trainable_count(),
      precision_name(prec), a.base_dtype + (a.double_quant ? "+dq" : ""), loss, med, tps, double(ru.ru_maxrss) / 1024.0,
      a.checkpointing ? 1 : 0, double(be.memory_stats().peak_bytes_in_use) / (1024.0 * 1024.0), dp);
  return 0;
}
}  // namespace

void add_bench_train_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static BenchTrainArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* t = bench->add_subcommand(
      "train", "One LoRA training step of a GPT-2- or LLaMA-shaped model (peer: bench/torch_lora_step.py)");
  t->add_option("--arch", a.arch, "gpt2 (shape from the options) or llama (shape from --config)")
      ->check(CLI::IsMember({"gpt2", "llama"}));
  t->add_option("--config", a.config, "--arch llama: a LLaMA config.json (e.g. examples/bench/tinyllama_1b.json)");
  t->add_option("--layers", a.layers, "layers (llama: overrides the config's num_hidden_layers)")
      ->check(CLI::Range(int64_t(1), int64_t(1000)));
  t->add_option("--d-model", a.d_model)->check(CLI::Range(int64_t(8), int64_t(65536)));
  t->add_option("--heads", a.heads)->check(CLI::Range(int64_t(1), int64_t(1024)));
  t->add_option("--vocab", a.vocab)->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  t->add_option("--seq", a.seq)->check(CLI::Range(int64_t(2), int64_t(1) << 16));
  t->add_option("--batch", a.batch)->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  t->add_option("--rank", a.rank)->check(CLI::Range(int64_t(1), int64_t(4096)));
  t->add_option("--steps", a.steps)->check(CLI::Range(int64_t(1), int64_t(100000)));
  t->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  t->add_flag("--checkpointing", a.checkpointing, "recompute each block in backward (activation checkpointing)");
  t->add_option("--precision", a.precision,
                "f32, bf16, f16 (16-bit GEMM and attention operands, f32 accumulation) or auto")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "auto"}));
  t->add_option("--base-dtype", a.base_dtype,
                "the frozen base: f32, bf16, f16, or quantized nf4, fp4, int8 (bitsandbytes layouts, bf16 compute)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "nf4", "fp4", "int8"}));
  t->add_flag("--double-quant", a.double_quant, "nf4/fp4: double-quantize the absmax");
  t->callback([&rc, &device, t] {
    a.layers_set = t->count("--layers") > 0;
    rc = run_bench_train(a, device());
  });
}

}  // namespace rf::tools
