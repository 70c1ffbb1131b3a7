#include "models/model.h"

#include "engine/file_io.h"

#include <fmt/format.h>

#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/safetensors.h"

namespace rf::models {

std::unique_ptr<Model> make_gpt2(const ModelConfig& c, const nn::Init& init);
std::unique_ptr<Model> make_llama(const ModelConfig& c, const nn::Init& init);
std::unique_ptr<Model> make_bert(const ModelConfig& c, const nn::Init& init);

std::unique_ptr<Model> create_model(const ModelConfig& c, const nn::Init& init) {
  nn::Init i = init;
  if (!init.uninitialized && init.std == 0.02) i.std = c.initializer_range;
  switch (c.arch) {
    case Arch::GPT2: return make_gpt2(c, i);
    case Arch::Llama: return make_llama(c, i);
    case Arch::Bert: return make_bert(c, i);
  }
  throw std::logic_error("[model] unknown architecture");
}

std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& opt) {
  require_directory(dir, "model", "a checkpoint folder (config.json + *.safetensors)");
  ModelConfig c = load_config(dir);
  auto ck = safetensors::Checkpoint::open(dir);
  // Storage only: every tensor is replaced by the checkpoint's (aliasing the file mapping on the CPU).
  nn::Init init;
  init.uninitialized = true;
  auto model = create_model(c, init);
  const std::string prefix = model->key_prefix();
  std::vector<std::string> names = ck.names();
  bool has_prefix = prefix.empty();
  for (auto& n : names) has_prefix = has_prefix || n.starts_with(prefix);
  safetensors::LoadOptions lo;
  lo.device = opt.device;
  lo.keep_16bit = opt.keep_16bit;
  lo.float_dtype = opt.base_dtype;
  if (opt.base_dtype && *opt.base_dtype != DType::F32 && *opt.base_dtype != DType::F16 &&
      *opt.base_dtype != DType::BF16)
    throw std::invalid_argument(
        fmt::format("[model] {}: base dtype must be f32, f16 or bf16, got {}", dir, dtype_name(*opt.base_dtype)));
  nn::StateSource src;
  src.names = names;
  src.shape = [&](const std::string& k) {
    const auto& info = ck.info(k);
    return Shape(info.shape.begin(), info.shape.end());
  };
  src.load = [&](const std::string& k) { return ck.load(k, lo); };
  nn::load_state(
      *model, src, [&](const std::string& n) { return model->checkpoint_key(n, has_prefix); },
      [&](const std::string& k) { return model->ignored_key(k); }, opt.strict, dir);
  // Tied heads and anything left out by a non-strict load still live on the CPU: move them.
  model->to(opt.device);
  model->eval();
  return model;
}

void save_model(Model& m, const std::string& dir, std::optional<DType> dtype) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(fmt::format("[save] {}: cannot create directory: {}", dir, ec.message()));
  auto state = m.state_dict();
  nlohmann::json config = m.config().raw;
  if (dtype) {
    for (auto& [name, t] : state)
      if (is_float(t.dtype()) && t.dtype() != DType::F64) t = t.to(*dtype);
    const char* name = *dtype == DType::BF16 ? "bfloat16" : *dtype == DType::F16 ? "float16" : "float32";
    config["torch_dtype"] = name;
    if (config.contains("dtype")) config["dtype"] = name;  // transformers >= 4.56 spells it so
  }
  safetensors::save_file(state, (fs::path(dir) / "model.safetensors").string(), {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

}  // namespace rf::models
