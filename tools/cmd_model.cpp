// `rankforge forward`, `generate`, `init` and `bench load`: the model commands.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/generate.h"
#include "models/loss.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "peft/peft_model.h"
#include "tools/commands.h"
#include "tools/run_files.h"

namespace rf::tools {

namespace {

struct ModelArgs {
  std::string model, input, output, prompt, tokenizer, config, adapter;
  bool keep_16bit = false, greedy = false, print_ids = false, loss_grads = false, overwrite = false;
  std::string dtype, base_dtype;  // init --dtype; forward / generate --base-dtype
  QuantArgs quant;                // forward / generate --quantize ...
  std::string precision = "f32";  // forward / generate --precision (autocast)
  std::vector<int64_t> labels;
  models::SamplingOptions sampling;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_ids;
  uint64_t seed = 0;
  int repeats = 3;
};

// f32 | bf16 | f16 for a dtype option; empty: unset.
std::optional<DType> dtype_arg(const char* who, const char* flag, const std::string& v) {
  if (v.empty()) return std::nullopt;
  auto t = float_dtype_from_name(v);
  if (!t) throw std::runtime_error(fmt::format("[{}] {} '{}' is not one of: f32, bf16, f16", who, flag, v));
  return t;
}

// An optional (B, T) integer input tensor from the input file, as I64 on device d.
Tensor int_input(const safetensors::File& f, const std::string& name, const Shape& want, Device d, bool required) {
  const auto* info = f.find(name);
  if (!info) {
    if (required) throw std::runtime_error(fmt::format("[forward] {}: no '{}' tensor", f.path(), name));
    return Tensor();
  }
  Tensor t = f.load(*info);
  if (!is_int(t.dtype()) && t.dtype() != DType::Bool)
    throw std::runtime_error(
        fmt::format("[forward] {}: '{}' must be an integer tensor, got {}", f.path(), name, dtype_name(t.dtype())));
  if (t.dim() != 2 || (!want.empty() && t.shape() != want))
    throw std::runtime_error(fmt::format("[forward] {}: '{}' must be [B, T]{}, got [{}]", f.path(), name,
                                         want.empty() ? "" : fmt::format(" = [{}]", fmt::join(want, ", ")),
                                         fmt::join(t.shape(), ", ")));
  return t.to(DType::I64).to(d);
}

int run_forward(const ModelArgs& a, Device d) {
  auto f = safetensors::File::open(a.input);
  models::ModelInputs in;
  in.input_ids = int_input(*f, "input_ids", {}, d, true);
  in.attention_mask = int_input(*f, "attention_mask", in.input_ids.shape(), d, false);
  in.token_type_ids = int_input(*f, "token_type_ids", in.input_ids.shape(), d, false);
  models::LoadOptions lo;
  lo.device = d;
  lo.keep_16bit = a.keep_16bit;
  lo.base_dtype = dtype_arg("model", "--base-dtype", a.base_dtype);
  lo.quant = quant_spec_arg(a.quant);
  auto m = models::load_model(a.model, lo);
  std::vector<int64_t> ids = in.input_ids.to_vector<int64_t>();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= m->config().vocab_size)
      throw std::runtime_error(fmt::format("[forward] {}: input_ids[{}] = {} is outside the vocabulary [0, {})",
                                           a.input, i, ids[i], m->config().vocab_size));
  std::unique_ptr<peft::PeftModel> pm;
  if (!a.adapter.empty()) {
    pm = std::make_unique<peft::PeftModel>(*m);
    std::vector<std::string> notes;
    pm->load_adapter(a.adapter, "default", a.loss_grads, &notes);
    for (auto& n : notes) fmt::print(stderr, "[forward] note: {}\n", n);
  }
  m->eval();
  AutocastGuard autocast(resolve_precision(a.precision, backend_for(d), "forward"));
  std::map<std::string, Tensor> out;
  if (!a.loss_grads) {
    NoGradGuard ng;
    out["logits"] = m->forward(in).to(DType::F32).to(Device{});
  } else {
    if (!pm) m->set_requires_grad(true);  // no adapter: gradients of every weight
    Tensor logits = m->forward(in);
    Tensor loss;
    if (logits.dim() == 2) {  // classifier: class 0 per row unless --labels
      std::vector<int64_t> y = a.labels.empty() ? std::vector<int64_t>(size_t(logits.size(0)), 0) : a.labels;
      if (int64_t(y.size()) != logits.size(0))
        throw std::runtime_error(fmt::format("[forward] --labels has {} values for {} rows", y.size(), logits.size(0)));
      for (int64_t v : y)
        if (v < 0 || v >= logits.size(1))
          throw std::runtime_error(fmt::format("[forward] label {} is outside [0, {})", v, logits.size(1)));
      loss = models::classification_loss(logits, from_data(y, {int64_t(y.size())}).to(d));
    } else {
      if (!a.labels.empty())
        throw std::runtime_error("[forward] --labels is for classifiers; causal LMs use the inputs shifted");
      Tensor labels = in.input_ids;
      if (in.attention_mask.defined())
        labels = where(eq(in.attention_mask, zeros_like(in.attention_mask)), full(labels.shape(), -100, DType::I64, d),
                       labels);
      loss = models::causal_lm_loss(logits, labels);
    }
    backward(loss);
    out["logits"] = logits.detach().to(DType::F32).to(Device{});
    out["loss"] = loss.detach().to(DType::F32).to(Device{});
    if (pm) {
      for (auto& [name, p] : pm->trainable_parameters())
        if (p.grad().defined()) out[pm->memory_name(name)] = p.grad().to(DType::F32).to(Device{}).contiguous();
    } else {
      for (auto& p : m->named_parameters())
        if (p.tensor->grad().defined()) out[p.name] = p.tensor->grad().to(DType::F32).to(Device{}).contiguous();
    }
  }
  safetensors::save_file(out, a.output, {{"format", "pt"}});
  fmt::print(stderr, "[forward] wrote logits [{}]{} to {}\n", fmt::join(out["logits"].shape(), ", "),
             a.loss_grads ? fmt::format(", loss {:.6f} and {} gradients", out["loss"].item(), out.size() - 2) : "",
             a.output);
  return 0;
}

int run_generate(const ModelArgs& a, Device d) {
  models::LoadOptions lo;
  lo.device = d;
  lo.keep_16bit = a.keep_16bit;
  lo.base_dtype = dtype_arg("model", "--base-dtype", a.base_dtype);
  lo.quant = quant_spec_arg(a.quant);
  auto m = models::load_model(a.model, lo);
  auto tok = models::load_tokenizer(a.tokenizer.empty() ? a.model : a.tokenizer);
  // The adapter runs unmerged (LoraLinear around the frozen base), as `forward --adapter` does.
  std::unique_ptr<peft::PeftModel> pm;
  if (!a.adapter.empty()) {
    pm = std::make_unique<peft::PeftModel>(*m);
    std::vector<std::string> notes;
    pm->load_adapter(a.adapter, "default", false, &notes);
    for (auto& n : notes) fmt::print(stderr, "[generate] note: {}\n", n);
  }
  AutocastGuard autocast(resolve_precision(a.precision, backend_for(d), "generate"));
  models::SamplingOptions s = a.sampling;
  s.greedy = a.greedy;
  s.seed = a.seed;
  s.stop_ids = a.stop_ids;
  if (s.stop_ids.empty()) s.stop_ids = m->config().eos_token_ids;
  for (const auto& text : a.stop) {
    auto ids = tok->encode(text);
    if (ids.size() != 1)
      throw std::runtime_error(fmt::format("[generate] stop text '{}' is {} tokens; it must be one", text, ids.size()));
    s.stop_ids.push_back(ids[0]);
  }
  std::vector<int64_t> prompt = tok->encode(a.prompt, true);
  std::vector<int64_t> out;
  std::string text;
  size_t printed = 0;
  bool at_line_start = a.prompt.empty() || a.prompt.back() == '\n';
  auto emit = [&](size_t upto) {  // streams text[printed, upto) to stdout
    if (upto <= printed) return;
    std::fwrite(text.data() + printed, 1, upto - printed, stdout);
    std::fflush(stdout);
    at_line_start = text[upto - 1] == '\n';
    printed = upto;
  };
  // The text ends its line, flushed, before anything else is written: with stdout and stderr on one
  // terminal or file, a status or error line never continues the generated text's last line.
  auto end_line = [&] {
    if (!at_line_start) std::fputc('\n', stdout);
    std::fflush(stdout);
  };
  fmt::print("{}", a.prompt);
  std::fflush(stdout);
  models::Generation gen;
  try {
    gen = models::generate(*m, prompt, s, [&](int64_t t) {
      out.push_back(t);
      text = tok->decode(out, true);
      emit(models::utf8_complete_prefix(text));
      return true;
    });
  } catch (...) {
    end_line();
    throw;
  }
  end_line();
  if (a.print_ids) fmt::print("{}\n", nlohmann::json(gen.tokens).dump());
  std::fflush(stdout);
  fmt::print(stderr, "[generate] {} new tokens, stopped: {}\n", gen.tokens.size(), gen.stop_reason);
  return 0;
}

int run_init(const ModelArgs& a) {
  auto c = models::load_config(a.config);
  manual_seed(a.seed);
  if (has_entries(a.output) && !a.overwrite)
    throw std::runtime_error(fmt::format("[init] --output {} is not empty; pass --overwrite to replace it", a.output));
  const std::optional<DType> dtype = dtype_arg("init", "--dtype", a.dtype);
  nn::Init init;
  if (dtype) init.dtype = *dtype;  // drawn in that dtype (f32 chunks of 4M): an 8B bf16 model never exists in f32
  auto m = models::create_model(c, init);
  DirLock lock(a.output, "init");
  write_dir_atomic(a.output, [&](const std::filesystem::path& tmp) { models::save_model(*m, tmp.string(), dtype); });
  fmt::print("[init] {} ({}) with {} parameters written to {}\n", c.architecture, c.model_type, m->num_parameters(),
             a.output);
  return 0;
}

size_t rss_bytes() {  // resident set size from /proc (Linux)
  std::ifstream in("/proc/self/statm");
  size_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

int run_bench_load(const ModelArgs& a, Device d) {
  namespace fs = std::filesystem;
  size_t file_bytes = 0;
  for (auto& e : fs::directory_iterator(a.model))
    if (e.path().extension() == ".safetensors") file_bytes += e.file_size();
  const size_t rss0 = rss_bytes();
  models::LoadOptions lo;
  lo.device = d;
  double best = 1e30;
  size_t rss = 0;
  int64_t params = 0;
  for (int i = 0; i < a.repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto m = models::load_model(a.model, lo);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    // Read every weight once (a checksum) so the whole mapping is resident, as after a first forward.
    double sum = 0;
    for (auto& p : m->named_parameters())
      for (float v : p.tensor->to_vector<float>()) sum += v;
    params = m->num_parameters();
    rss = std::max(rss, rss_bytes() - rss0);
    if (std::isnan(sum)) fmt::print(stderr, "[bench] the checkpoint holds NaN weights\n");
  }
  fmt::print("load {}: {} parameters, files {:.1f} MiB\n", a.model, params, double(file_bytes) / (1 << 20));
  fmt::print("load_seconds={:.4f} rss_growth_mib={:.1f} rss_over_file={:.3f}\n", best, double(rss) / (1 << 20),
             double(rss) / double(std::max<size_t>(file_bytes, 1)));
  return 0;
}

}  // namespace

void add_model_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static ModelArgs a;
  auto* fw = app.add_subcommand("forward", "Logits of a Hugging Face checkpoint for input_ids from a safetensors file");
  fw->add_option("--model", a.model, "checkpoint directory (config.json + safetensors)")->required();
  fw->add_option("--input", a.input,
                 "safetensors file with input_ids (I64 [B,T]), optional attention_mask, token_type_ids")
      ->required();
  fw->add_option("--output", a.output, "safetensors file to write logits (F32) to")->required();
  fw->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  fw->add_flag("--keep-16bit", a.keep_16bit, "keep F16/BF16 weights 16-bit in memory");
  fw->add_option("--base-dtype", a.base_dtype, "store the weights as f32, bf16 or f16 (converted on load)");
  fw->add_option("--precision", a.precision,
                 "f32, bf16, f16 (16-bit GEMM and attention operands, f32 accumulation) or auto")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "auto"}));
  fw->add_option("--adapter", a.adapter, "PEFT LoRA adapter directory to apply");
  fw->add_flag("--loss-grads", a.loss_grads,
               "also write 'loss' and the gradient of every trainable adapter tensor (PEFT in-memory names)");
  fw->add_option("--labels", a.labels, "classifier labels per row (default: class 0)")->delimiter(',');
  add_quant_flags(fw, a.quant, false);
  fw->callback([&rc, &device] { rc = run_forward(a, device()); });

  auto* gen = app.add_subcommand("generate", "Generate text from a prompt with a KV cache, streaming to stdout");
  gen->add_option("--model", a.model, "checkpoint directory")->required();
  gen->add_option("--prompt", a.prompt, "prompt text")->required();
  gen->add_option("--tokenizer", a.tokenizer, "tokenizer directory (default: the model directory)");
  gen->add_option("--max-new-tokens", a.sampling.max_new_tokens, "tokens to generate")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  gen->add_flag("--greedy", a.greedy, "argmax decoding (same as --temperature 0)");
  gen->add_option("--temperature", a.sampling.temperature, "softmax temperature")->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", a.sampling.top_k, "keep the k most likely tokens (0: off)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
  gen->add_option("--top-p", a.sampling.top_p, "nucleus sampling mass (1: off)")->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", a.seed, "sampling seed");
  gen->add_option("--stop", a.stop, "stop text (one token each; default: the config's eos_token_id)");
  gen->add_option("--stop-id", a.stop_ids, "stop token id");
  gen->add_option("--adapter", a.adapter, "PEFT LoRA adapter directory to apply (unmerged)");
  gen->add_flag("--print-ids", a.print_ids, "print the generated ids as a JSON array at the end");
  gen->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  gen->add_flag("--keep-16bit", a.keep_16bit, "keep F16/BF16 weights 16-bit in memory");
  gen->add_option("--base-dtype", a.base_dtype, "store the weights as f32, bf16 or f16 (converted on load)");
  gen->add_option("--precision", a.precision,
                  "f32, bf16, f16 (16-bit GEMM and attention operands, f32 accumulation) or auto")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "auto"}));
  add_quant_flags(gen, a.quant, false);
  gen->callback([&rc, &device] { rc = run_generate(a, device()); });

  auto* init = app.add_subcommand("init", "Write a freshly initialised checkpoint for a config.json");
  init->add_option("--config", a.config, "config.json (or a directory holding one)")->required();
  init->add_option("--output", a.output, "output directory")->required();
  init->add_option("--seed", a.seed, "initialisation seed");
  init->add_flag("--overwrite", a.overwrite, "replace a non-empty output folder");
  init->add_option("--dtype", a.dtype, "f32 (default), bf16 or f16: the dtype of the written weights");
  init->callback([&rc] { rc = run_init(a); });

  if (auto bench = app.get_subcommand_ptr("bench")) {
    auto* load = bench->add_subcommand("load", "Checkpoint load time and resident memory");
    load->add_option("--model", a.model, "checkpoint directory")->required();
    load->add_option("--repeats", a.repeats, "loads (the best time is printed)")->check(CLI::Range(1, 1000));
    load->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
    load->callback([&rc, &device] { rc = run_bench_load(a, device()); });
  }
}

}  // namespace rf::tools
