// `rankforge quantize`: a checkpoint rewritten in bitsandbytes' 4-bit or 8-bit layout (models/bnb_io.h),
// quantized tensor by tensor as it loads, so transformers + bitsandbytes load what it writes. Also the
// quantization flags that `forward` and `generate` share.
#include <fmt/format.h>

#include <filesystem>

#include "models/model.h"
#include "peft/method.h"
#include "tools/commands.h"
#include "tools/run_files.h"

namespace rf::tools {

void add_quant_flags(CLI::App* c, QuantArgs& q, bool required) {
  auto* t = c->add_option("--quantize", q.type, "hold the Linear weights as nf4, fp4 or int8 (bitsandbytes layouts)")
                ->check(CLI::IsMember({"nf4", "fp4", "int8"}));
  if (required) t->required();
  c->add_flag("--double-quant", q.double_quant, "quantize the 4-bit absmax again (bnb_4bit_use_double_quant)");
  c->add_option("--quant-blocksize", q.blocksize, "4-bit block: 32, 64, ..., 4096");
  c->add_option("--compute-dtype", q.compute, "bf16 or f32: the dtype the dequantized weights are used in")
      ->check(CLI::IsMember({"bf16", "f32"}));
  c->add_option("--skip-modules", q.skip, "modules left unquantized (default: lm_head)")->delimiter(',');
}

std::optional<QuantSpec> quant_spec_arg(const QuantArgs& q) {
  if (q.type.empty()) {
    if (q.double_quant) throw std::runtime_error("[rankforge] --double-quant needs --quantize nf4 or fp4");
    return std::nullopt;
  }
  QuantSpec s;
  s.type = *quant_type_from_name(q.type);
  s.double_quant = q.double_quant;
  s.blocksize = q.blocksize;
  s.compute = q.compute == "f32" ? DType::F32 : DType::BF16;
  if (!q.skip.empty()) s.skip_modules = q.skip;
  s.validate();
  return s;
}

namespace {

int run_quantize(const std::string& model, const std::string& output, const QuantArgs& q, bool overwrite) {
  namespace fs = std::filesystem;
  if (fs::exists(output) && fs::weakly_canonical(output) == fs::weakly_canonical(model))
    throw std::runtime_error(fmt::format("[quantize] --output {} is the input model; choose another folder", output));
  if (has_entries(output) && !overwrite)
    throw std::runtime_error(
        fmt::format("[quantize] --output {} is not empty; pass --overwrite to replace it", output));
  models::LoadOptions lo;
  lo.quant = quant_spec_arg(q);
  auto m = models::load_model(model, lo);
  int64_t n = 0;
  for (auto& [path, mod] : m->named_modules())
    if (auto* l = dynamic_cast<nn::Linear*>(mod); l && l->quantized()) ++n;
  DirLock lock(output, "quantize");
  write_dir_atomic(output, [&](const fs::path& tmp) {
    models::save_model(*m, tmp.string());
    peft::copy_tokenizer_files(model, tmp.string());
  });
  fmt::print("[quantize] {} Linear weights as {}{} written to {}\n", n, q.type, q.double_quant ? " (double quant)" : "",
             output);
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app, int& rc) {
  static std::string model, output;
  static QuantArgs q;
  static bool overwrite = false;
  auto* c = app.add_subcommand("quantize",
                               "Rewrite a checkpoint in bitsandbytes' 4-bit or 8-bit layout (transformers loads it)");
  c->add_option("--model", model, "checkpoint directory (f32, f16 or bf16)")->required();
  c->add_option("--output", output, "output directory (new, or empty, or --overwrite)")->required();
  add_quant_flags(c, q, true);
  c->add_flag("--overwrite", overwrite, "replace a non-empty output folder");
  c->callback([&rc] { rc = run_quantize(model, output, q, overwrite); });
}

}  // namespace rf::tools
