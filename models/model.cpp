#include "models/model.h"

#include "engine/file_io.h"

#include <fmt/format.h>

#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/safetensors.h"
#include "models/bnb_io.h"

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

namespace {

// Which Linear layers load quantized, keyed by their checkpoint weight key, and with which settings.
struct QuantPlan {
  std::optional<QuantSpec> spec;
  bool from_file = false;  // a bitsandbytes checkpoint: read its layout rather than quantize
  std::map<std::string, nn::Linear*> layers;
};

QuantPlan plan_quantization(Model& model, const ModelConfig& c, const safetensors::Checkpoint& ck,
                            const LoadOptions& opt, const std::string& dir, bool has_prefix) {
  QuantPlan p;
  const std::string cfg = (std::filesystem::path(dir) / "config.json").string();
  std::optional<QuantSpec> file = bnb_spec_from_config(c.raw, cfg);
  if (opt.quant) opt.quant->validate();
  if (file && opt.quant && file->type != opt.quant->type)
    throw std::invalid_argument(
        fmt::format("[model] {}: the checkpoint is already quantized to {}; model_quantization "
                    "asks for {} (drop it or make the types agree)",
                    dir, quant_type_name(file->type), quant_type_name(opt.quant->type)));
  if (file) {
    if (opt.quant) file->compute = opt.quant->compute;
    p.spec = file;
    p.from_file = true;
  } else {
    p.spec = opt.quant;
  }
  if (!p.spec) return p;
  for (auto& [path, m] : model.named_modules()) {
    auto* l = dynamic_cast<nn::Linear*>(m);
    if (!l) continue;
    const std::string key = model.checkpoint_key(path + ".weight", has_prefix);
    if (p.from_file ? bnb_is_quantized(ck, key) : !p.spec->skips(path)) {
      p.layers[key] = l;
    } else if (p.from_file && ck.contains(key) &&
               (ck.info(key).dtype == safetensors::StDType::U8 || ck.info(key).dtype == safetensors::StDType::I8)) {
      throw std::runtime_error(
          fmt::format("[bnb] {}: {}: a quantized weight without its quant state (.quant_state."
                      "bitsandbytes__nf4|fp4, or .SCB for 8-bit)",
                      ck.file_of(key)->path(), safetensors::quote_name(key)));
    }
  }
  return p;
}

// A float weight straight from the mapping into an (out, in) f32 host vector (Conv1D's (in, out) transposed).
// No Tensor: the caching allocator would keep a resident f32 block per layer size behind.
std::vector<float> host_f32(const safetensors::Checkpoint& ck, const std::string& k, bool transpose) {
  const auto& info = ck.info(k);
  using safetensors::StDType;
  if (info.dtype != StDType::F32 && info.dtype != StDType::BF16 && info.dtype != StDType::F16)
    throw std::runtime_error(fmt::format("[model] {}: {}: dtype {} cannot be quantized (f32, bf16 or f16)",
                                         ck.file_of(k)->path(), safetensors::quote_name(k),
                                         safetensors::dtype_string(info.dtype)));
  const auto b = ck.file_of(k)->bytes(info);
  const size_t n = b.size() / (info.dtype == StDType::F32 ? 4 : 2);
  std::vector<float> flat(n);
  for (size_t i = 0; i < n; ++i) {
    if (info.dtype == StDType::F32) {
      std::memcpy(&flat[i], b.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      flat[i] = info.dtype == StDType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  if (!transpose || info.shape.size() != 2) return flat;
  const size_t r = size_t(info.shape[0]), c = size_t(info.shape[1]);  // stored (in, out)
  std::vector<float> t(n);
  for (size_t i = 0; i < r; ++i)
    for (size_t j = 0; j < c; ++j) t[j * r + i] = flat[i * c + j];
  return t;
}

}  // namespace

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
  const QuantPlan qp = plan_quantization(*model, c, ck, opt, dir, has_prefix);
  if (qp.spec && !opt.base_dtype) lo.float_dtype = qp.spec->compute == DType::F32 ? DType::F32 : DType::BF16;
  nn::StateSource src;
  for (auto& n : names)
    if (!qp.from_file || !is_bnb_aux_key(n)) src.names.push_back(n);
  src.shape = [&](const std::string& k) {
    if (auto it = qp.layers.find(k); it != qp.layers.end()) {  // the file's shape is the packed one
      const nn::Linear& l = *it->second;
      return l.fan_in_fan_out() ? Shape{l.in_features(), l.out_features()} : Shape{l.out_features(), l.in_features()};
    }
    const auto& info = ck.info(k);
    return Shape(info.shape.begin(), info.shape.end());
  };
  std::vector<std::pair<nn::Linear*, QuantWeight>> pending;
  src.load = [&](const std::string& k) {
    auto it = qp.layers.find(k);
    if (it == qp.layers.end()) return ck.load(k, lo);
    nn::Linear& l = *it->second;
    if (qp.from_file) {
      pending.emplace_back(&l, bnb_read_weight(ck, k, l.out_features(), l.in_features(), qp.spec->compute, opt.device));
    } else {  // one layer in f32 on the host at a time, quantized, then dropped with its file pages
      const auto& info = ck.info(k);
      std::vector<float> w = host_f32(ck, k, l.fan_in_fan_out());
      pending.emplace_back(&l, quantize_weight(w.data(), l.out_features(), l.in_features(), *qp.spec, opt.device,
                                               info.dtype == safetensors::StDType::BF16  ? "bfloat16"
                                               : info.dtype == safetensors::StDType::F16 ? "float16"
                                                                                         : "float32"));
      ck.file_of(k)->release(info);
    }
    return empty({0}, DType::F32);  // a placeholder: the slot takes the codes below
  };
  nn::load_state(
      *model, src, [&](const std::string& n) { return model->checkpoint_key(n, has_prefix); },
      [&](const std::string& k) { return model->ignored_key(k); }, opt.strict, dir);
  for (auto& [l, w] : pending) l->set_quantized(std::move(w));
  model->quantization = qp.spec;
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
  if (config.contains("quantization_config") && !m.quantization && !dtype) {
    dtype = DType::BF16;  // loaded quantized, since dequantized (a merge): a plain bf16 model, as PEFT writes it
  }
  config.erase("quantization_config");
  std::map<std::string, safetensors::RawTensor> raw;
  if (m.quantization) {  // bitsandbytes' tensors in place of the word container and scales
    for (auto& [path, mod] : m.named_modules()) {
      auto* l = dynamic_cast<nn::Linear*>(mod);
      if (!l || !l->quantized()) continue;
      if (l->side_rank() > 0)
        throw std::runtime_error(fmt::format(
            "[save] {}: {} carries merged low-rank terms a bitsandbytes file cannot hold; dequantize the model first",
            dir, path));
      const std::string k = path + ".weight";
      state.erase(k);
      state.erase(k + ".absmax");
      state.erase(path + ".SCB");
      bnb_append_weight(l->quant(), k, raw);
    }
    config["quantization_config"] = bnb_config_json(*m.quantization);
  }
  if (dtype) {
    for (auto& [name, t] : state)
      if (is_float(t.dtype()) && t.dtype() != DType::F64) t = t.to(*dtype);
    const char* name = *dtype == DType::BF16 ? "bfloat16" : *dtype == DType::F16 ? "float16" : "float32";
    config["torch_dtype"] = name;
    if (config.contains("dtype")) config["dtype"] = name;  // transformers >= 4.56 spells it so
  }
  safetensors::save_file(state, (fs::path(dir) / "model.safetensors").string(), {{"format", "pt"}}, {}, raw);
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

int64_t dequantize_model(Model& m, DType dtype) {
  int64_t n = 0;
  for (auto& [path, mod] : m.named_modules())
    if (auto* l = dynamic_cast<nn::Linear*>(mod); l && l->quantized()) {
      l->dequantize_storage(dtype);
      ++n;
    }
  m.quantization.reset();
  return n;
}

}  // namespace rf::models
