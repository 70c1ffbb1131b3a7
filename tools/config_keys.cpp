// Every `rankforge train` key: type, meaning, the methods that use it, how it reads and writes. The
// generic keys are here; each method's own keys come from its registry entry (peft/method.h).
#include "tools/config_keys.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <type_traits>
#include <variant>

#include "engine/autocast.h"
#include "tools/config_yaml.h"

namespace rf::tools {

bool KeyDef::used_by(const std::string& method) const {
  return methods.empty() || std::find(methods.begin(), methods.end(), method) != methods.end();
}

namespace {

using Methods = std::vector<std::string>;

struct Use {
  Methods methods;
  bool strict = false;
  bool safe = false;
};

// A generic adapter key: used by the methods whose registry entry lists it (registry order). strict:
// given with another method it is an error, else a note (so a LoRA config can switch method).
Use generic(const std::string& leaf, bool strict = false) {
  Use u{{}, strict};
  for (const peft::MethodEntry* e : peft::method_registry())
    if (std::find(e->uses.begin(), e->uses.end(), leaf) != e->uses.end()) u.methods.push_back(e->name);
  return u;
}

template <class T>
const char* type_of() {
  if constexpr (std::is_same_v<T, int64_t>)
    return "integer";
  else if constexpr (std::is_same_v<T, uint64_t>)
    return "integer >= 0";
  else if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>)
    return "number";
  else if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (std::is_same_v<T, std::string>)
    return "string";
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return "list of strings";
  else
    return "list of integers";
}

template <class T>
T read_as(const YAML::Node& n, const std::string& key, const std::string& where) {
  if constexpr (std::is_same_v<T, int64_t>)
    return yaml_int(n, key, where);
  else if constexpr (std::is_same_v<T, uint64_t>)
    return yaml_uint(n, key, where);
  else if constexpr (std::is_same_v<T, double>)
    return yaml_float(n, key, where);
  else if constexpr (std::is_same_v<T, float>)
    return float(yaml_float(n, key, where));
  else if constexpr (std::is_same_v<T, bool>)
    return yaml_bool(n, key, where);
  else if constexpr (std::is_same_v<T, std::string>)
    return yaml_string(n, key, where);
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return yaml_strings(n, key, where);
  else
    return yaml_ints(n, key, where);
}

template <class T>
YAML::Node node_of(const T& v) {
  if constexpr (std::is_floating_point_v<T>)
    return YAML::Node(yaml_number(v));
  else if constexpr (std::is_same_v<T, std::vector<std::string>> || std::is_same_v<T, std::vector<int64_t>>) {
    YAML::Node s(YAML::NodeType::Sequence);
    for (const auto& x : v) s.push_back(x);
    return s;
  } else
    return YAML::Node(v);
}

// A key bound to one field of TrainConfig.
template <class T>
KeyDef bind(const char* key, const char* help, T& (*ref)(TrainConfig&), Use u = {}) {
  KeyDef d{key, type_of<T>(), help, u.methods, u.strict, u.safe};
  d.read = [ref, key = std::string(key)](const YAML::Node& n, const std::string& where, TrainConfig& c) {
    ref(c) = read_as<T>(n, key, where);
  };
  d.write = [ref](const TrainConfig& c) { return node_of(ref(const_cast<TrainConfig&>(c))); };
  return d;
}

KeyDef path(const char* key, const char* help, std::string& (*ref)(TrainConfig&), Use u = {}) {
  KeyDef d = bind(key, help, ref, u);
  d.type = "path";
  d.path = true;
  return d;
}

// A key with its own reading and writing (enums, method-dependent fields, optional values).
KeyDef custom(const char* key, const char* type, const char* help, Use u,
              std::function<void(const YAML::Node&, const std::string&, TrainConfig&)> read,
              std::function<YAML::Node(const TrainConfig&)> write) {
  KeyDef d{key, type, help, u.methods, u.strict, u.safe};
  d.read = std::move(read);
  d.write = std::move(write);
  return d;
}

KeyDef selector(const char* key, const char* help, peft::ModuleSelector peft::LoraConfig::*field) {
  const std::string dotted(key);
  return custom(
      key, "list | regex | all-linear", help, generic(dotted.substr(dotted.find('.') + 1)),
      [field, k = std::string(key)](const YAML::Node& n, const std::string& where, TrainConfig& c) {
        if (n.IsScalar()) {
          const std::string s = n.Scalar();
          c.lora.*field = s == "all-linear" ? peft::ModuleSelector{peft::ModuleSelector::Kind::AllLinear, {}, {}}
                                            : peft::ModuleSelector::pattern(s);
        } else {
          c.lora.*field = peft::ModuleSelector::list(yaml_strings(n, k, where));
        }
      },
      [field](const TrainConfig& c) {
        const auto& s = c.lora.*field;
        switch (s.kind) {
          case peft::ModuleSelector::Kind::AllLinear: return YAML::Node(std::string("all-linear"));
          case peft::ModuleSelector::Kind::Regex: return YAML::Node(s.regex);
          case peft::ModuleSelector::Kind::List: return node_of(s.names);
          default: return YAML::Node(YAML::NodeType::Null);
        }
      });
}

// name -> number mappings in insertion order (rank_pattern, alpha_pattern, density_pattern).
template <class V>
KeyDef pattern_map(const char* key, const char* help, Use u,
                   std::vector<std::pair<std::string, V>>& (*ref)(TrainConfig&)) {
  return custom(
      key, std::is_integral_v<V> ? "mapping name: integer" : "mapping name: number", help, u,
      [ref, k = std::string(key)](const YAML::Node& n, const std::string& where, TrainConfig& c) {
        if (!n.IsMap()) config_fail(where, fmt::format("{}: expected a mapping (module: value)", k));
        auto& out = ref(c);
        out.clear();
        for (const auto& kv : n) {
          const std::string name = kv.first.Scalar(), sub = fmt::format("{}.{}", k, name);
          if constexpr (std::is_integral_v<V>)
            out.emplace_back(name, yaml_int(kv.second, sub, where));
          else
            out.emplace_back(name, yaml_float(kv.second, sub, where));
        }
      },
      [ref](const TrainConfig& c) {
        YAML::Node m(YAML::NodeType::Map);
        for (const auto& [name, v] : ref(const_cast<TrainConfig&>(c))) m[name] = node_of(v);
        return m;
      });
}

// A method's own key (peft/method.h): the YAML value read into the key's type with the parser's
// messages, and written back as the other keys are.
peft::KeyValue read_value(peft::KeyType t, const YAML::Node& n, const std::string& key, const std::string& where) {
  switch (t) {
    case peft::KeyType::Bool: return yaml_bool(n, key, where);
    case peft::KeyType::Integer: return yaml_int(n, key, where);
    case peft::KeyType::Number: return yaml_float(n, key, where);
    case peft::KeyType::Float: return float(yaml_float(n, key, where));
    case peft::KeyType::String:
    case peft::KeyType::Path: return yaml_string(n, key, where);
    case peft::KeyType::NumberMap: {
      if (!n.IsMap()) config_fail(where, fmt::format("{}: expected a mapping (module: value)", key));
      std::vector<std::pair<std::string, double>> out;
      for (const auto& kv : n) {
        const std::string name = kv.first.Scalar();
        out.emplace_back(name, yaml_float(kv.second, fmt::format("{}.{}", key, name), where));
      }
      return out;
    }
  }
  return {};
}

YAML::Node write_value(const peft::KeyValue& v) {
  return std::visit(
      [](const auto& x) -> YAML::Node {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>)
          return YAML::Node(YAML::NodeType::Null);
        else if constexpr (std::is_same_v<T, std::vector<std::pair<std::string, double>>>) {
          YAML::Node m(YAML::NodeType::Map);
          for (const auto& [name, d] : x) m[name] = node_of(d);
          return m;
        } else
          return node_of(x);
      },
      v);
}

KeyDef method_key(const peft::MethodEntry& e, const peft::MethodKey& mk) {
  const std::string key = fmt::format("{}.{}", peft::kMethodSection, mk.name);
  KeyDef d{key, peft::key_type_name(mk.type), mk.help, {e.name}, true};
  d.path = mk.type == peft::KeyType::Path;
  d.read = [mk, key](const YAML::Node& n, const std::string& where, TrainConfig& c) {
    mk.read(c, read_value(mk.type, n, key, where));
  };
  d.write = [mk](const TrainConfig& c) { return write_value(mk.write(c)); };
  return d;
}

#define F(expr)                   \
  +[](TrainConfig & c) -> auto& { \
    return expr;                  \
  }

std::vector<KeyDef> build() {
  const Use safe{{}, false, true};
  std::vector<KeyDef> k;
  // top level
  k.push_back(path("model", "checkpoint folder (config.json + *.safetensors)", F(c.model)));
  k.push_back(path("tokenizer", "tokenizer folder or tokenizer.json (default: model)", F(c.tokenizer)));
  k.push_back(bind("device", "cpu, vulkan, vulkan:N or vulkan:auto (one GPU per MPI rank)", F(c.device), safe));
  k.push_back(bind("seed", "seed of the init, dropout, data order and splits", F(c.seed)));
  k.push_back(
      path("output", "run folder (adapter/, checkpoint/, metrics.jsonl, plots, config.yaml)", F(c.output), safe));
  k.push_back(bind("keep_16bit", "keep a 16-bit checkpoint's frozen weights in 16 bits", F(c.keep_16bit)));
  k.push_back(custom(
      "base_dtype", "string", "f32 | bf16 | f16: the frozen weights' dtype, converted on load tensor by tensor", {},
      [](const YAML::Node& n, const std::string& w, TrainConfig& c) {
        const std::string v = yaml_string(n, "base_dtype", w);
        auto t = float_dtype_from_name(v);
        if (!t) config_fail(w, fmt::format("base_dtype: '{}' is not one of: f32, bf16, f16", v));
        c.base_dtype = std::string(dtype_name(*t));
      },
      [](const TrainConfig& c) { return YAML::Node(c.base_dtype); }));
  // model_quantization (QLoRA)
  k.push_back(bind("model_quantization.type", "none | nf4 | fp4 | int8: hold the frozen Linear weights quantized",
                   F(c.quantization.type)));
  k.push_back(bind("model_quantization.double_quant", "quantize the 4-bit absmax again (bnb_4bit_use_double_quant)",
                   F(c.quantization.double_quant)));
  k.push_back(bind("model_quantization.blocksize", "4-bit block: 32, 64, ..., 4096", F(c.quantization.blocksize)));
  k.push_back(bind("model_quantization.compute_dtype", "bf16 | f32: the dtype the dequantized weight is used in",
                   F(c.quantization.compute_dtype)));
  k.push_back(bind("model_quantization.skip_modules", "modules left unquantized (a name or a dotted suffix)",
                   F(c.quantization.skip_modules)));
  // adapter
  k.push_back(bind("adapter.method", "", F(c.method)));
  k.back().help = fmt::format("{}", fmt::join(peft::method_names(), " | "));
  k.push_back(bind("adapter.r", "rank (AROMA: of each increment; AutoLoRA: default of k)", F(c.lora.r), generic("r")));
  k.push_back(bind("adapter.alpha", "lora_alpha: scaling alpha / r (rsLoRA: alpha / sqrt(r))", F(c.lora.lora_alpha),
                   generic("alpha")));
  k.push_back(bind("adapter.dropout", "dropout on the adapter input (AROMA default 0.1)", F(c.lora.lora_dropout),
                   generic("dropout")));
  k.push_back(selector("adapter.target_modules",
                       "modules to adapt (default: per architecture, PEFT's; aroma: its paper's)",
                       &peft::LoraConfig::target_modules));
  k.push_back(selector("adapter.exclude_modules", "modules never adapted", &peft::LoraConfig::exclude_modules));
  k.push_back(bind("adapter.use_rslora", "scaling alpha / sqrt(r)", F(c.lora.use_rslora), generic("use_rslora", true)));
  k.push_back(bind("adapter.use_dora", "DoRA: a trainable magnitude per output row", F(c.lora.use_dora),
                   generic("use_dora", true)));
  k.push_back(bind("adapter.init", "true | false | gaussian | pissa | pissa_niter_<k> | olora",
                   F(c.lora.init_lora_weights), generic("init", true)));
  k.push_back(bind("adapter.bias", "none | all | lora_only: which biases train", F(c.lora.bias), generic("bias")));
  k.push_back(bind("adapter.lora_bias", "a trainable bias on lora_B", F(c.lora.lora_bias), generic("lora_bias", true)));
  k.push_back(bind("adapter.modules_to_save", "modules trained in full and saved with the adapter",
                   F(c.lora.modules_to_save), generic("modules_to_save")));
  k.push_back(bind("adapter.layers_to_transform", "layer indices to adapt (default: all)",
                   F(c.lora.layers_to_transform), generic("layers_to_transform")));
  k.push_back(bind("adapter.layers_pattern", "name of the layer list for layers_to_transform", F(c.lora.layers_pattern),
                   generic("layers_pattern")));
  k.push_back(pattern_map("adapter.rank_pattern", "per-module r (first matching key wins)",
                          generic("rank_pattern", true), F(c.lora.rank_pattern)));
  k.push_back(pattern_map("adapter.alpha_pattern", "per-module alpha", generic("alpha_pattern", true),
                          F(c.lora.alpha_pattern)));
  // each method's own keys (its registry entry)
  for (const peft::MethodEntry* e : peft::methods_in_key_order())
    for (const peft::MethodKey& mk : e->keys) k.push_back(method_key(*e, mk));
  // data
  k.push_back(path("data.train", "training file: JSONL or plain text", F(c.data.path)));
  k.push_back(path("data.validation", "validation file (default: hold out val_fraction)", F(c.data.val_path)));
  k.push_back(bind("data.format", "auto | text | prompt_completion | classification | plain_text", F(c.data_format)));
  k.push_back(bind("data.val_fraction", "share held out when there is no validation file", F(c.data.val_fraction)));
  k.push_back(bind("data.max_seq_len", "tokens per example (longer ones are cut)", F(c.data.max_seq_len)));
  k.push_back(bind("data.pack", "concatenate examples into full rows", F(c.data.pack)));
  k.push_back(bind("data.add_special", "the tokenizer's BOS/CLS/SEP", F(c.data.add_special)));
  k.push_back(bind("data.add_eos", "append EOS to each example", F(c.data.add_eos)));
  k.push_back(bind("data.labels", "classification: label names in order", F(c.data.label_names)));
  // training
  k.push_back(bind("training.steps", "optimizer steps (0: from epochs)", F(c.steps), safe));
  k.push_back(bind("training.epochs", "epochs when steps is 0", F(c.epochs), safe));
  // Both may change on --resume when the global batch (ranks × batch_size × grad_accum) stays the same,
  // e.g. 2 ranks at 4 resumed by 1 process at 8; load_checkpoint refuses any other change.
  k.push_back(bind("training.batch_size", "examples per micro-batch and rank", F(c.batch_size), safe));
  k.push_back(bind("training.grad_accum", "micro-batches per optimizer step", F(c.trainer.grad_accum), safe));
  // data parallelism (mpirun -np N rankforge train; docs/distributed.md)
  k.push_back(bind("distributed.bucket_mb", "MiB of gradients per fused all-reduce",
                   F(c.trainer.data_parallel.bucket_mb), safe));
  k.push_back(bind("distributed.overlap", "start the all-reduces during the backward",
                   F(c.trainer.data_parallel.overlap), safe));
  k.push_back(bind("distributed.check_every", "compare the ranks' parameter checksums every K steps (0: never)",
                   F(c.trainer.data_parallel.check_every), safe));
  k.push_back(bind("training.optimizer", "adamw | sgd", F(c.trainer.optimizer)));
  k.push_back(bind("training.lr", "peak learning rate", F(c.trainer.lr)));
  k.push_back(bind("training.weight_decay", "decoupled decay (never on biases, norms, DoRA magnitudes)",
                   F(c.trainer.weight_decay)));
  k.push_back(custom(
      "training.betas", "[number, number]", "AdamW betas", {},
      [](const YAML::Node& n, const std::string& w, TrainConfig& c) {
        std::vector<double> b = yaml_floats(n, "training.betas", w);
        if (b.size() != 2) config_fail(w, fmt::format("training.betas must be two numbers, got {}", b.size()));
        c.trainer.beta1 = float(b[0]);
        c.trainer.beta2 = float(b[1]);
      },
      [](const TrainConfig& c) {
        YAML::Node s(YAML::NodeType::Sequence);
        s.push_back(node_of(c.trainer.beta1));
        s.push_back(node_of(c.trainer.beta2));
        return s;
      }));
  k.push_back(bind("training.eps", "AdamW epsilon", F(c.trainer.eps)));
  k.push_back(bind("training.momentum", "SGD momentum", F(c.trainer.momentum)));
  k.push_back(bind("training.max_grad_norm", "clip the global gradient norm (0: none)", F(c.trainer.max_grad_norm)));
  k.push_back(custom(
      "training.precision", "string",
      "f32 | bf16 | f16 | auto: 16-bit GEMM and attention operands with f32 accumulation (f16 adds loss "
      "scaling: training.loss_scale); auto = bf16 where the backend has native bf16 dot products",
      safe,
      [](const YAML::Node& n, const std::string& w, TrainConfig& c) {
        const std::string v = yaml_string(n, "training.precision", w);
        if (!is_precision_name(v))
          config_fail(w, fmt::format("training.precision: '{}' is not one of: f32, bf16, f16, auto", v));
        c.precision = v;
      },
      [](const TrainConfig& c) { return YAML::Node(c.precision); }));
  k.push_back(custom(
      "training.loss_scale", "string or number",
      "f16 only: dynamic (torch's GradScaler: start at loss_scale_init, halve on overflow, double after "
      "loss_scale_growth_interval good steps) or a fixed positive number",
      safe,
      [](const YAML::Node& n, const std::string& w, TrainConfig& c) {
        const std::string v = yaml_string(n, "training.loss_scale", w);
        if (v == "dynamic") {
          c.trainer.loss_scaling.dynamic = true;
          return;
        }
        double x = 0;
        try {
          size_t used = 0;
          x = std::stod(v, &used);
          if (used != v.size()) x = 0;
        } catch (const std::exception&) {}
        if (!(x > 0) || !std::isfinite(x))
          config_fail(w, fmt::format("training.loss_scale: '{}' is neither 'dynamic' nor a positive number", v));
        c.trainer.loss_scaling.dynamic = false;
        c.trainer.loss_scaling.init_scale = x;
      },
      [](const TrainConfig& c) {
        return c.trainer.loss_scaling.dynamic ? YAML::Node("dynamic") : YAML::Node(c.trainer.loss_scaling.init_scale);
      }));
  k.push_back(bind("training.loss_scale_init", "f16 dynamic loss scaling: the first scale",
                   F(c.trainer.loss_scaling.init_scale), safe));
  k.push_back(bind("training.loss_scale_growth_interval",
                   "f16 dynamic loss scaling: good steps in a row before the scale doubles",
                   F(c.trainer.loss_scaling.growth_interval), safe));
  k.push_back(bind("training.gradient_checkpointing",
                   "recompute each block in backward: less memory, ~1/3 more compute", F(c.gradient_checkpointing),
                   safe));
  k.push_back(custom(
      "training.schedule", "string", "constant | linear | cosine | cosine_with_restarts", {},
      [](const YAML::Node& n, const std::string& w, TrainConfig& c) {
        c.trainer.schedule.kind = nn::parse_schedule_kind(yaml_string(n, "training.schedule", w));
      },
      [](const TrainConfig& c) { return YAML::Node(nn::schedule_kind_name(c.trainer.schedule.kind)); }));
  k.push_back(bind("training.warmup_steps", "linear warmup steps", F(c.trainer.schedule.warmup_steps)));
  k.push_back(
      bind("training.min_lr_ratio", "floor of the decay, as a share of lr", F(c.trainer.schedule.min_lr_ratio)));
  k.push_back(
      bind("training.cycle_length", "cosine_with_restarts: steps per cycle", F(c.trainer.schedule.cycle_length)));
  k.push_back(bind("training.restart_warmup_steps", "cosine_with_restarts: warmup of each restart",
                   F(c.trainer.schedule.restart_warmup_steps)));
  // evaluation, logging, checkpoints
  k.push_back(bind("eval.every", "steps between evaluations (0: before and after only)", F(c.eval_every), safe));
  k.push_back(bind("eval.batch_size", "evaluation batch size (0: training.batch_size)", F(c.eval_batch_size), safe));
  k.push_back(bind("eval.max_batches", "batches per evaluation (0: all)", F(c.eval_max_batches), safe));
  k.push_back(bind("log.every", "steps between metrics lines", F(c.log_every), safe));
  k.push_back(bind("log.plots", "write loss.png and ranks.png", F(c.plots), safe));
  k.push_back(bind("checkpoint.every", "steps between checkpoints (0: at the end and on signals)",
                   F(c.checkpoint_every), safe));
  return k;
}

#undef F

}  // namespace

const std::vector<KeyDef>& key_defs() {
  static const std::vector<KeyDef> k = build();
  return k;
}

const KeyDef* find_key(const std::string& dotted) {
  for (const auto& d : key_defs())
    if (d.key == dotted) return &d;
  return nullptr;
}

}  // namespace rf::tools
