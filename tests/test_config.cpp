// The train config (tools/train_config.*): errors that name the line or the --set argument, the
// right section for a misplaced key, duplicates, keys of another method, the resolved config.yaml
// as a fixed point for every method, paths against the config's folder, the --resume comparison,
// and --list-keys from the same table.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "peft/aroma.h"
#include "peft/autolora.h"
#include "tools/config_keys.h"
#include "tools/train_config.h"

namespace fs = std::filesystem;
using namespace rf::tools;

namespace {

const std::string kHead = "model: m\ndata:\n  train: t.jsonl\n";

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {},
                     const std::string& file = "q.yaml") {
  try {
    parse_train_config(yaml, file, sets);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("config: a type error names the value's line, or the --set argument") {
    const std::string yaml = kHead + "training:\n  lr: 1.0e-3\n  steps: abc\n";
    std::string e = error_of(yaml);
    CAPTURE(e);
    CHECK(has(e, "[config] q.yaml:6: training.steps: 'abc' is not an integer"));
    CHECK(e.find('\n') == std::string::npos);
    e = error_of(kHead + "adapter:\n  use_dora: maybe\n");
    CHECK(has(e, "q.yaml:5: adapter.use_dora: 'maybe' is not true or false"));
    e = error_of(kHead + "training:\n  lr: [1, 2]\n");
    CHECK(has(e, "q.yaml:5: training.lr: expected a number, got a list"));
    e = error_of(kHead, {"training.steps=abc"});
    CHECK(has(e, "--set 'training.steps=abc': training.steps: 'abc' is not an integer"));
    e = error_of(kHead, {"training.steps"});
    CHECK(has(e, "--set 'training.steps': must be key=value"));
    e = error_of(kHead + "seed: -3\n");
    CHECK(has(e, "q.yaml:4: seed: '-3' must be >= 0"));
    e = error_of(kHead + "training:\n  batch_size: 0\n");
    CHECK(has(e, "q.yaml:5: training.batch_size: must be >= 1"));
    e = error_of(kHead + "data:\n  format: csv\n");  // also a duplicate section: that is reported first
    CHECK(has(e, "'data' is given twice (lines 2 and 4)"));
    e = error_of("model: m\ndata:\n  train: t.jsonl\n  format: csv\n");
    CHECK(has(e, "q.yaml:4: data.format: 'csv' is not one of"));
    e = error_of("model: m\ndata:\n  train: t\ntraining:\n  steps: 5\n   lr: 3\n");
    CHECK(has(e, "q.yaml:6: invalid YAML"));
    // Control characters in a key or in yaml-cpp's message are escaped: still one line (found by fuzz_config).
    e = error_of("\"a\\nb\": 1\n");
    CHECK(has(e, "unknown key 'a\\nb'"));
    CHECK(e.find('\n') == std::string::npos);
    e = error_of(std::string("\xff\x00\n", 3));
    CHECK(has(e, "invalid YAML"));
    CHECK(e.find('\n') == std::string::npos);
  }

  TEST_CASE("config: an unknown key points at its section first, then at the nearest name") {
    CHECK(has(error_of(kHead + "lr: 1\n"), "q.yaml:4: unknown key 'lr': 'lr' belongs under training:"));
    CHECK(has(error_of(kHead + "training:\n  seed: 1\n"),
              "unknown key 'training.seed': 'seed' belongs at the top level"));
    CHECK(has(error_of(kHead + "trainng:\n  lr: 1\n"), "unknown key 'trainng'; did you mean 'training'?"));
    CHECK(has(error_of(kHead + "training:\n  lrr: 1\n"), "unknown key 'training.lrr'; did you mean 'training.lr'?"));
    CHECK(has(error_of(kHead, {"lr=1"}), "--set 'lr=1': unknown key 'lr': 'lr' belongs under training:"));
    CHECK(has(error_of(kHead + "training: 5\n"), "'training' is a section"));
    // batch_size lives in two sections: both are named
    CHECK(has(error_of(kHead + "batch_size: 4\n"), "'batch_size' belongs under training: or under eval:"));
  }

  TEST_CASE("config: a key or section given twice is an error naming both lines") {
    std::string e = error_of(kHead + "training:\n  lr: 1\ntraining:\n  steps: 3\n");
    CHECK(has(e, "q.yaml:6: 'training' is given twice (lines 4 and 6)"));
    e = error_of(kHead + "training:\n  lr: 1\n  lr: 2\n");
    CHECK(has(e, "q.yaml:6: 'training.lr' is given twice (lines 5 and 6)"));
  }

  TEST_CASE(
      "config: a key of another method is an error naming the methods that use it; unused generic keys are notes") {
    std::string e = error_of(kHead + "adapter:\n  method: lora\n  init_r: 12\n");
    CHECK(has(e, "q.yaml:6: adapter.init_r applies to adapter.method adalora only (this config's method is lora)"));
    e = error_of(kHead + "adapter:\n  method: aroma\n  use_dora: true\n");
    CHECK(has(e, "adapter.use_dora applies to adapter.method lora, gelora only (this config's method is aroma)"));
    CHECK(has(error_of(kHead, {"adapter.k=4"}),
              "--set 'adapter.k=4': adapter.k applies to adapter.method autolora only"));
    TrainConfig c = parse_train_config(kHead + "adapter:\n  method: adalora\n  r: 8\n", "q.yaml");
    REQUIRE(c.notes.size() == 1);
    CHECK(has(c.notes[0], "q.yaml:6: adapter.r is not used by adapter.method adalora"));
    CHECK(parse_train_config(kHead + "adapter:\n  r: 8\n", "q.yaml").notes.empty());
  }

  TEST_CASE("config: the resolved config.yaml parses back to itself for every method") {
    const std::vector<std::string> extra = {
        "adapter:\n  method: lora\n  r: 6\n  target_modules: [c_attn, c_fc]\n  rank_pattern: {c_fc: 3}\n  "
        "alpha_pattern:\n    c_fc: 1.5\n",
        "adapter:\n  method: lora\n  use_dora: true\n  target_modules: '.*\\.(q|v)_proj'\n",
        "adapter:\n  method: lora\n  init: pissa\n  target_modules: all-linear\n  layers_to_transform: [0, 2]\n  "
        "layers_pattern: [h]\n",
        "adapter:\n  method: adalora\n  init_r: 12\n  target_r: 4\n  tinit: 3\n  tfinal: 2\n",
        "adapter:\n  method: aroma\n  r: 2\n  convergence_threshold: 0.002\n",
        "adapter:\n  method: gelora\n  id_pooling: last\n  rank_budget: 12\n",
        "adapter:\n  method: autolora\n  k: 6\n  hypergradient: first_order\n  search_weight_decay: 1\n",
        "adapter:\n  method: rosa\n  d: 0.01\n  schedule: wl30\n  lora_lr: 7.0e-4\n  density_pattern: {c_attn: 0.02}\n "
        " mask_save_path: masks.st\n",
        "adapter:\n  method: full\n"};
    for (const auto& e : extra) {
      CAPTURE(e);
      const std::string text =
          "model: m\ndata:\n  train: t.jsonl\n  validation: v.jsonl\n  labels: [a, b]\n" + e +
          "training:\n  lr: 3.0e-3\n  betas: [0.85, 0.99]\n  schedule: cosine\n  warmup_steps: 3\n";
      TrainConfig c = parse_train_config(text, "/work/cfg/q.yaml");
      const std::string dumped = dump_train_config(c);
      TrainConfig again = parse_train_config(dumped, "/elsewhere/config.yaml");
      CHECK(again.notes.empty());
      CHECK(dump_train_config(again) == dumped);
      CHECK(again.model == "/work/cfg/m");  // absolute: the dump runs from any folder
      CHECK(again.trainer.lr == c.trainer.lr);
      CHECK(again.trainer.beta1 == 0.85f);
      CHECK(again.lora.r == c.lora.r);
      CHECK(again.lora.target_modules.to_json() == c.lora.target_modules.to_json());
      CHECK(again.lora.rank_pattern == c.lora.rank_pattern);
      CHECK(rf::peft::autolora_options(again).search.outer_lr == rf::peft::autolora_options(c).search.outer_lr);
      CHECK(rf::peft::aroma_options(again).r ==
            rf::peft::aroma_options(c).r);  // AROMA keeps its own default r unless the method is aroma
      CHECK(again.lora.rosa.mask_save_path == c.lora.rosa.mask_save_path);
      CHECK(again.data.label_names == c.data.label_names);
      CHECK(again.trainer.group_lr == c.trainer.group_lr);
      // every key the method uses is written, defaults included
      for (const auto& d : key_defs())
        if (d.used_by(c.method)) CHECK_MESSAGE(has(dumped, d.key.substr(d.key.find('.') + 1) + ":"), d.key);
    }
    // Values the old writer got wrong: target_modules as a quoted JSON string, dropped sections.
    const std::string d =
        dump_train_config(parse_train_config(kHead + "adapter:\n  target_modules: all-linear\n", "q.yaml"));
    CHECK(has(d, "target_modules: all-linear"));
    CHECK(has(d, "checkpoint:\n  every: 50"));
    CHECK(has(d, "eval:\n  every: 50"));
  }

  TEST_CASE("config: base_dtype names a floating dtype; not with keep_16bit or full fine-tuning") {
    CHECK(parse_train_config(kHead + "base_dtype: bfloat16\n", "q.yaml").base_dtype == "bf16");
    CHECK(parse_train_config(kHead, "q.yaml").base_dtype == "f32");
    CHECK(has(error_of(kHead + "base_dtype: int8\n"), "q.yaml:4: base_dtype: 'int8' is not one of: f32, bf16, f16"));
    CHECK(has(error_of(kHead + "base_dtype: f16\nkeep_16bit: true\n"), "base_dtype: excludes keep_16bit"));
    CHECK(has(error_of(kHead + "base_dtype: bf16\nadapter:\n  method: full\n"),
              "base_dtype: applies to adapter methods"));
  }

  TEST_CASE("config: precision f16 with dynamic or fixed loss scaling; bad scales name their line") {
    const auto c = parse_train_config(kHead + "training:\n  precision: f16\n", "q.yaml");
    CHECK(c.precision == "f16");
    CHECK(c.trainer.loss_scaling.dynamic);
    CHECK(c.trainer.loss_scaling.init_scale == 65536.0);
    const auto fixed = parse_train_config(kHead + "training:\n  precision: f16\n  loss_scale: 1024\n", "q.yaml");
    CHECK_FALSE(fixed.trainer.loss_scaling.dynamic);
    CHECK(fixed.trainer.loss_scaling.init_scale == 1024.0);
    const auto grow = parse_train_config(
        kHead + "training:\n  loss_scale: dynamic\n  loss_scale_init: 128\n  loss_scale_growth_interval: 50\n",
        "q.yaml");
    CHECK(grow.trainer.loss_scaling.dynamic);
    CHECK(grow.trainer.loss_scaling.init_scale == 128.0);
    CHECK(grow.trainer.loss_scaling.growth_interval == 50);
    CHECK(has(error_of(kHead + "training:\n  loss_scale: banana\n"),
              "q.yaml:5: training.loss_scale: 'banana' is neither 'dynamic' nor a positive number"));
    CHECK(has(error_of(kHead + "training:\n  loss_scale: -2\n"), "is neither 'dynamic' nor a positive number"));
    CHECK(has(error_of(kHead + "training:\n  loss_scale_growth_interval: 0\n"),
              "loss_scale_growth_interval must be >= 1, got 0"));
    CHECK(has(error_of(kHead + "training:\n  precision: fp8\n"), "is not one of: f32, bf16, f16, auto"));
  }

  TEST_CASE("config: paths resolve against the config's folder; --set paths against the working directory") {
    TrainConfig c = parse_train_config("model: ../m\ntokenizer: tok\ndata:\n  train: d/t.jsonl\n", "/a/b/q.yaml");
    CHECK(c.model == "/a/m");
    CHECK(c.tokenizer == "/a/b/tok");
    CHECK(c.data.path == "/a/b/d/t.jsonl");
    CHECK(c.output == "/a/b/runs/run");  // the default output too
    CHECK(parse_train_config("model: m\noutput: /abs/run\ndata:\n  train: t\n", "/a/q.yaml").output == "/abs/run");
    c = parse_train_config("model: m\ndata:\n  train: t\n", "/a/q.yaml", {"output=runs/x"});
    CHECK(c.output == (fs::current_path() / "runs/x").lexically_normal().string());
    CHECK(c.tokenizer == "/a/m");  // default: the model
  }

  TEST_CASE("config: --resume compares every key but the ones documented as safe to change") {
    TrainConfig c = parse_train_config(kHead + "training:\n  lr: 1.0e-3\n  steps: 10\n", "/a/q.yaml");
    const std::string saved = dump_train_config(c);
    CHECK(changed_config_keys(saved, "config.yaml", c).empty());
    TrainConfig more = parse_train_config(kHead + "training:\n  lr: 1.0e-3\n  steps: 20\n", "/a/q.yaml",
                                          {"log.every=3", "device=vulkan"});
    CHECK(changed_config_keys(saved, "config.yaml", more).empty());
    TrainConfig other =
        parse_train_config(kHead + "training:\n  lr: 2.0e-3\n  steps: 10\n", "/a/q.yaml", {"adapter.r=4"});
    auto changed = changed_config_keys(saved, "config.yaml", other);
    REQUIRE(changed.size() == 2);
    CHECK(has(changed[0], "adapter.r (8 -> 4)"));
    CHECK(has(changed[1], "training.lr (0.001 -> 0.002)"));
    TrainConfig ada = parse_train_config(kHead + "adapter:\n  method: adalora\n", "/a/q.yaml");
    changed = changed_config_keys(saved, "config.yaml", ada);
    CHECK(has(changed.at(0), "adapter.method (lora -> adalora)"));
  }

  TEST_CASE("config: --list-keys prints every key of the parser's table with type and default") {
    const std::string all = format_config_keys("");
    for (const auto& d : key_defs()) CHECK_MESSAGE(has(all, " " + d.key.substr(d.key.find('.') + 1) + " "), d.key);
    const std::string training = format_config_keys("training");
    CHECK(has(training, "training:\n"));
    CHECK(!has(training, "adapter:"));
    CHECK(has(training, "  lr "));
    CHECK(has(training, "0.0002"));
    CHECK(has(training, "[may change on --resume]"));
    CHECK(has(format_config_keys("adapter"), "[adalora]"));
    CHECK(has(format_config_keys("top"), "(required)"));
    bool threw = false;
    try {
      format_config_keys("trainig");
    } catch (const std::runtime_error& e) {
      threw = has(e.what(), "unknown section 'trainig'");
    }
    CHECK(threw);
    // The defaults come from the parser: AdaLoRA's alpha is AdaLoraConfig's 8, LoRA's is 16.
    for (const auto& i : config_key_infos())
      if (i.key == "adapter.alpha") CHECK(i.default_value == "16");
  }
}
