// Models against the Hugging Face fixtures (tests/fixtures/hf, written by transformers), strict
// loading, config validation, save/load round trips.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/safetensors.h"
#include "models/model.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / fmt::format("rf_models_{}_{}", tag, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// Copies a fixture checkpoint, letting the test rewrite its tensors or config.
fs::path copy_fixture(const std::string& arch, const std::string& tag) {
  fs::path dst = temp_dir(tag);
  fs::copy(fs::path(fixtures_dir()) / "hf" / arch / "base", dst, fs::copy_options::recursive);
  for (auto& e : fs::directory_iterator(dst)) fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  return dst;
}

}  // namespace

TEST_SUITE("golden") {
  TEST_CASE("models: base logits equal transformers' for every fixture architecture") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
        CAPTURE(arch);
        fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
        auto ref = safetensors::load_file((dir / "reference.safetensors").string());
        models::LoadOptions lo;
        lo.device = d;
        auto m = models::load_model((dir / "base").string(), lo);
        models::ModelInputs in;
        in.input_ids = ref.at("input_ids").to(d);
        NoGradGuard ng;
        Tensor logits = m->forward(in).to(Device{});
        double gap = rel_gap(logits, ref.at("base_logits"));
        MESSAGE(fmt::format("{} on {}: max |logit gap| / max |logit| = {:.2e}", arch, device_str(d), gap));
        CHECK(gap < 1e-4);
      }
    });
  }

  TEST_CASE("models: F16 and BF16 checkpoints load, optionally staying 16-bit") {
    for_each_backend([](Device d) {
      // Round the gpt2 fixture to 16 bits, save it, and compare with the f32 model on rounded weights.
      auto m = models::load_model(fs::path(fixtures_dir()) / "hf/gpt2/base");
      for (DType t : {DType::F16, DType::BF16}) {
        CAPTURE(dtype_name(t));
        fs::path dir = temp_dir("half");
        std::map<std::string, Tensor> half;
        for (auto& [k, v] : m->state_dict()) half[k] = v.to(t);
        safetensors::save_file(half, (dir / "model.safetensors").string());
        fs::copy(fs::path(fixtures_dir()) / "hf/gpt2/base/config.json", dir / "config.json");
        auto ref = safetensors::load_file((fs::path(fixtures_dir()) / "hf/gpt2/reference.safetensors").string());
        models::ModelInputs in;
        in.input_ids = ref.at("input_ids").to(d);
        NoGradGuard ng;
        models::LoadOptions up, keep;
        up.device = keep.device = d;
        keep.keep_16bit = true;
        auto a = models::load_model(dir.string(), up), b = models::load_model(dir.string(), keep);
        CHECK(a->state_dict().at("transformer.h.0.attn.c_attn.weight").dtype() == DType::F32);
        CHECK(b->state_dict().at("transformer.h.0.attn.c_attn.weight").dtype() == t);
        Tensor la = a->forward(in).to(Device{}), lb = b->forward(in).to(Device{});
        CHECK(rel_gap(lb, la) < 1e-5);
        // 16-bit weights move the logits, but only by rounding: well within a few percent here.
        CHECK(rel_gap(la, ref.at("base_logits")) < (t == DType::F16 ? 5e-3 : 3e-2));
        fs::remove_all(dir);
      }
    });
  }
}

TEST_SUITE("unit") {
  TEST_CASE("models: state_dict keys equal the checkpoint's keys (tied heads not duplicated)") {
    for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
      CAPTURE(arch);
      fs::path base = fs::path(fixtures_dir()) / "hf" / arch / "base";
      auto ck = safetensors::Checkpoint::open(base.string());
      auto m = models::load_model(base.string());
      std::vector<std::string> keys;
      for (auto& [k, v] : m->state_dict()) keys.push_back(k);
      CHECK(keys == ck.names());
    }
    // Tied: lm_head is wte itself, not a copy.
    auto m = models::load_model((fs::path(fixtures_dir()) / "hf/gpt2/base").string());
    auto all = m->named_parameters(true);
    Tensor *wte = nullptr, *head = nullptr;
    for (auto& p : all) {
      if (p.name == "transformer.wte.weight") wte = p.tensor;
      if (p.name == "lm_head.weight") head = p.tensor;
    }
    REQUIRE((wte && head));
    CHECK(wte->impl() == head->impl());
  }

  TEST_CASE("models: F32 CPU weights alias the file mapping (no copy)") {
    auto ck = safetensors::Checkpoint::open((fs::path(fixtures_dir()) / "hf/llama/base").string());
    auto m = models::load_model((fs::path(fixtures_dir()) / "hf/llama/base").string());
    auto map = ck.files()[0];
    Tensor w = m->state_dict().at("model.layers.0.mlp.up_proj.weight");
    Tensor again = map->load("model.layers.0.mlp.up_proj.weight");
    // Both alias the same file bytes; the model's tensor holds equal values without a copy of its own.
    CHECK(w.to_vector<float>() == again.to_vector<float>());
    CHECK(dynamic_cast<const Buffer*>(&w.buffer()) != nullptr);
  }

  TEST_CASE("models: GPT-2 checkpoints without the transformer. prefix load the same") {
    fs::path dir = copy_fixture("gpt2", "noprefix");
    auto orig = safetensors::load_file((dir / "model.safetensors").string());
    std::map<std::string, Tensor> stripped;
    for (auto& [k, v] : orig) stripped[k.starts_with("transformer.") ? k.substr(12) : k] = v.clone();
    stripped["h.0.attn.bias"] = ones({1, 1, 32, 32});  // a causal-mask buffer old files carry
    orig.clear();
    safetensors::save_file(stripped, (dir / "model.safetensors").string());
    auto a = models::load_model(dir.string());
    auto b = models::load_model((fs::path(fixtures_dir()) / "hf/gpt2/base").string());
    models::ModelInputs in;
    in.input_ids = from_data(std::vector<int64_t>{1, 5, 7, 299, 0}, {1, 5});
    NoGradGuard ng;
    CHECK(max_abs_diff(a->forward(in), b->forward(in)) == 0.0);
    fs::remove_all(dir);
  }

  TEST_CASE("models: strict loading lists every missing, unexpected and mis-shaped key in one error") {
    fs::path dir = copy_fixture("llama", "strict");
    auto sd = safetensors::load_file((dir / "model.safetensors").string());
    std::map<std::string, Tensor> bad;
    for (auto& [k, v] : sd) bad[k] = v.clone();
    sd.clear();
    bad.erase("model.layers.0.mlp.up_proj.weight");
    bad.erase("model.norm.weight");
    bad["model.layers.0.self_attn.extra.weight"] = zeros({2});
    bad["model.layers.1.self_attn.k_proj.weight"] = zeros({24, 47});
    safetensors::save_file(bad, (dir / "model.safetensors").string());
    std::string msg;
    try {
      models::load_model(dir.string());
    } catch (const std::exception& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.starts_with("[load] "));
    CHECK(msg.find("2 missing") != std::string::npos);
    CHECK(msg.find("model.layers.0.mlp.up_proj.weight") != std::string::npos);
    CHECK(msg.find("model.norm.weight") != std::string::npos);
    CHECK(msg.find("1 unexpected (model.layers.0.self_attn.extra.weight)") != std::string::npos);
    CHECK(msg.find("model.layers.1.self_attn.k_proj.weight: checkpoint [24, 47] vs model [24, 48]") !=
          std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
    fs::remove_all(dir);
  }

  TEST_CASE("models: unsupported config values are named with what is supported") {
    auto err = [](nlohmann::json j) {
      try {
        models::parse_config(j, "config.json");
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
      return std::string();
    };
    std::ifstream in(fs::path(fixtures_dir()) / "hf/llama/base/config.json");
    nlohmann::json llama = nlohmann::json::parse(in);
    CHECK(err(llama).empty());
    auto j = llama;
    j["model_type"] = "falcon";
    CHECK(err(j) ==
          "[model] config.json: model_type 'falcon' is not supported (supported: gpt2, llama, qwen2, mistral, bert)");
    j = llama;
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    CHECK(err(j) == "[model] config.json: rope type 'yarn' is not supported (supported: default, linear, llama3)");
    j = llama;
    j["hidden_act"] = "mish";
    CHECK(err(j).find("hidden_act 'mish' is not supported (supported: gelu_new, gelu") != std::string::npos);
    j = llama;
    j["num_key_value_heads"] = 3;
    CHECK(err(j).find("must be a multiple of num_key_value_heads (3)") != std::string::npos);
    j = llama;
    j["architectures"] = {"LlamaForSequenceClassification"};
    CHECK(err(j).find("architecture 'LlamaForSequenceClassification' is not supported") != std::string::npos);
    j = llama;
    j["hidden_size"] = "48";
    CHECK(err(j).find("'hidden_size' must be a non-negative integer") != std::string::npos);
    // v4 layout: top-level rope_theta and rope_scaling of type llama3.
    j = llama;
    j.erase("rope_parameters");
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
    auto c = models::parse_config(j, "config.json");
    CHECK(c.rope.type == "llama3");
    CHECK(c.rope.theta == 500000.0);
    CHECK(c.rope.factor == 8.0);
  }

  TEST_CASE("models: save_model then load_model reproduces the model") {
    for (std::string arch : {"gpt2", "qwen2", "bert"}) {
      CAPTURE(arch);
      auto c = models::load_config((fs::path(fixtures_dir()) / "hf" / arch / "base").string());
      manual_seed(7);
      auto m = models::create_model(c);
      fs::path dir = temp_dir(std::string("save_") + arch);
      models::save_model(*m, dir.string());
      auto back = models::load_model(dir.string());
      models::ModelInputs in;
      in.input_ids = from_data(std::vector<int64_t>{3, 1, 4, 1, 5, 9, 2, 6}, {2, 4});
      NoGradGuard ng;
      CHECK(max_abs_diff(m->forward(in), back->forward(in)) == 0.0);
      fs::remove_all(dir);
    }
  }

  TEST_CASE("models: BERT padding mask hides padded tokens") {
    auto m = models::load_model((fs::path(fixtures_dir()) / "hf/bert/base").string());
    NoGradGuard ng;
    models::ModelInputs a, b;
    a.input_ids = from_data(std::vector<int64_t>{2, 17, 45, 3}, {1, 4});
    b.input_ids = from_data(std::vector<int64_t>{2, 17, 45, 3, 0, 0}, {1, 6});
    b.attention_mask = from_data(std::vector<int64_t>{1, 1, 1, 1, 0, 0}, {1, 6});
    CHECK(max_abs_diff(m->forward(a), m->forward(b)) < 1e-6);
    b.attention_mask = Tensor();
    CHECK(max_abs_diff(m->forward(a), m->forward(b)) > 1e-4);  // without the mask the pads matter
  }
}
