// bitsandbytes checkpoints (models/bnb_io.h, issue 19): what `rankforge quantize` writes is checked by an
// independent reader (tests/bnb_layout_ref.py, bitsandbytes' key set, JSON state and numerics through
// tests/quant_ref.py) and loads back bit for bit; re-saving a loaded file reproduces it byte for byte;
// quantize-on-load and the written file give the same logits; every malformed piece is one clear line.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "backends/cpu/cpu_backend.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "tests/ref_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

fs::path fixture(const std::string& arch) { return fs::path(fixtures_dir()) / "hf" / arch / "base"; }

fs::path tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / fmt::format("rf_bnb_{}_{}", tag, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

QuantSpec spec(QuantType t, bool dq, int bs) {
  QuantSpec s;
  s.type = t;
  s.double_quant = dq;
  s.blocksize = bs;
  s.compute = DType::F32;
  return s;
}

models::ModelInputs inputs() {
  models::ModelInputs in;
  in.input_ids = from_data(std::vector<int64_t>{1, 5, 9, 2, 7, 3, 11, 4}, {2, 4});
  return in;
}

std::vector<std::pair<std::string, nn::Linear*>> quantized_layers(models::Model& m) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (auto& [path, mod] : m.named_modules())
    if (auto* l = dynamic_cast<nn::Linear*>(mod); l && l->quantized()) out.emplace_back(path, l);
  return out;
}

// Rewrites dir/model.safetensors through `edit` on its raw tensors (config.json edited by `cfg`).
void rewrite(const fs::path& from, const fs::path& to,
             const std::function<void(std::map<std::string, safetensors::RawTensor>&)>& edit,
             const std::function<void(nlohmann::json&)>& cfg = nullptr) {
  fs::create_directories(to);
  auto f = safetensors::File::open((from / "model.safetensors").string());
  std::map<std::string, safetensors::RawTensor> raw;
  for (const auto& t : f->header().tensors) {
    auto b = f->bytes(t);
    raw[t.name] = {t.dtype, t.shape,
                   std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(b.data()),
                                        reinterpret_cast<const uint8_t*>(b.data()) + b.size())};
  }
  edit(raw);
  safetensors::save_file({}, (to / "model.safetensors").string(), {{"format", "pt"}}, {}, raw);
  nlohmann::json c = nlohmann::json::parse(slurp(from / "config.json"));
  if (cfg) cfg(c);
  write_file_atomic((to / "config.json").string(), c.dump(2));
}

std::string load_error(const fs::path& dir) {
  try {
    models::load_model(dir.string());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("bnb: quantize writes bitsandbytes' layout, checked by an independent reader, and loads back exactly") {
  struct Case {
    const char* arch;
    QuantType t;
    bool dq;
    int bs;
  };
  for (const Case& c : {Case{"llama", QuantType::NF4, false, 64}, Case{"gpt2", QuantType::NF4, true, 32},
                        Case{"llama", QuantType::FP4, true, 128}, Case{"gpt2", QuantType::Int8, false, 64}}) {
    CAPTURE(std::string(c.arch));
    CAPTURE(std::string(quant_type_name(c.t)));
    CAPTURE(c.dq);
    const fs::path dir = tmp_dir(fmt::format("{}_{}_{}", c.arch, quant_type_name(c.t), c.dq));
    models::LoadOptions lo;
    lo.quant = spec(c.t, c.dq, c.bs);
    auto m = models::load_model(fixture(c.arch).string(), lo);
    REQUIRE(m->quantization);
    REQUIRE(!quantized_layers(*m).empty());
    models::save_model(*m, (dir / "q").string());

    // The independent reader: key set, JSON state, tables, and the bytes bitsandbytes would write for
    // the source weights; it leaves the dequantized weights for us.
    fs::create_directories(dir / "deq");
    // GPT-2 stores its Conv1D weights (in, out): bitsandbytes quantizes them transposed.
    const std::string cmd =
        fmt::format("{} {} {} {} {} {} > {} 2>&1", python_with_numpy(), test_script("bnb_layout_ref.py").string(),
                    (dir / "q").string(), fixture(c.arch).string(), (dir / "deq").string(),
                    std::string(c.arch) == "gpt2" ? "conv1d" : "linear", (dir / "ref.log").string());
    const int rc = std::system(cmd.c_str());
    REQUIRE_MESSAGE(rc == 0, slurp(dir / "ref.log"));

    auto back = models::load_model((dir / "q").string());
    REQUIRE(back->quantization);
    // On the CPU the codes are the file's bytes, mapped (borrowed memory has no allocator capacity), not a copy.
    for (auto& [path, l] : quantized_layers(*back))
      CHECK_MESSAGE(static_cast<cpu::CpuBuffer&>(l->weight().buffer()).capacity() == 0, path);
    CHECK(back->quantization->type == c.t);
    auto layers = quantized_layers(*back);
    CHECK(layers.size() == quantized_layers(*m).size());
    for (auto& [path, l] : layers) {
      CAPTURE(path);
      const std::string key = back->checkpoint_key(path + ".weight", true);
      const std::string ref = slurp(dir / "deq" / (key + ".f32"));
      const std::vector<float> mine = l->weight_out_in().contiguous().to_vector<float>();
      REQUIRE(ref.size() == mine.size() * 4);
      CHECK(std::memcmp(ref.data(), mine.data(), ref.size()) == 0);
      if (is_4bit(c.t)) CHECK((l->quant().nested != nullptr) == c.dq);
    }
    // Same logits from the file as from quantizing on load; a re-save reproduces the file byte for byte.
    CHECK(allclose(back->forward(inputs()), m->forward(inputs()), 0.0, 0.0));
    models::save_model(*back, (dir / "q2").string());
    CHECK(slurp(dir / "q" / "model.safetensors") == slurp(dir / "q2" / "model.safetensors"));
    fs::remove_all(dir);
  }
}

TEST_CASE("bnb: malformed quantized checkpoints are refused with one line naming the file and tensor") {
  const fs::path dir = tmp_dir("bad");
  models::LoadOptions lo;
  lo.quant = spec(QuantType::NF4, true, 64);
  models::save_model(*models::load_model(fixture("llama").string(), lo), (dir / "ok").string());
  models::LoadOptions lo8;
  lo8.quant = spec(QuantType::Int8, false, 64);
  models::save_model(*models::load_model(fixture("llama").string(), lo8), (dir / "ok8").string());
  CHECK(load_error(dir / "ok").empty());
  const std::string w = "model.layers.0.self_attn.q_proj.weight";
  const std::string qs = w + ".quant_state.bitsandbytes__nf4";
  struct Bad {
    const char* name;
    const char* from;
    std::function<void(std::map<std::string, safetensors::RawTensor>&)> edit;
    std::function<void(nlohmann::json&)> cfg;
    std::string want;
  };
  auto json_state = [&](const std::string& text) {
    return [=](auto& t) {
      t[qs] = {safetensors::StDType::U8, {text.size()}, std::vector<uint8_t>(text.begin(), text.end())};
    };
  };
  const std::vector<Bad> cases = {
      {"packed size", "ok",
       [&](auto& t) {
         t[w].bytes.pop_back();
         t[w].shape = {t[w].bytes.size(), 1};
       },
       nullptr, "holds 1151 values, expected 1152"},
      {"no quant state", "ok", [&](auto& t) { t.erase(qs); }, nullptr, "without its quant state"},
      {"bad JSON", "ok", json_state("{\"quant_type\": \"nf4\", \"blocksize"), nullptr, "not a JSON object"},
      {"state shape", "ok",
       json_state(
           R"({"quant_type":"nf4","blocksize":64,"dtype":"float32","shape":[16,32],"nested_blocksize":256,"nested_offset":0.1})"),
       nullptr, "is not the model's"},
      {"no nested absmax", "ok", [&](auto& t) { t.erase(w + ".nested_absmax"); }, nullptr, "missing (nested absmax)"},
      {"custom table", "ok", [&](auto& t) { t[w + ".quant_map"].bytes[0] ^= 1; }, nullptr, "custom code tables"},
      {"absmax dtype", "ok", [&](auto& t) { t[w + ".absmax"].dtype = safetensors::StDType::I8; }, nullptr,
       "dtype I8 where U8 is expected"},
      {"gptq", "ok", nullptr, [](auto& c) { c["quantization_config"]["quant_method"] = "gptq"; },
       "quant_method 'gptq' is not supported"},
      {"8-bit format", "ok8", [&](auto& t) { t["model.layers.0.self_attn.q_proj.weight_format"].bytes = {1}; }, nullptr,
       "only 0 (row) is supported"},
      {"8-bit SCB", "ok8", [&](auto& t) { t.erase("model.layers.0.self_attn.q_proj.SCB"); }, nullptr,
       "without its quant state"},
  };
  for (const Bad& b : cases) {
    CAPTURE(std::string(b.name));
    const fs::path d = dir / b.name;
    rewrite(
        dir / b.from, d, b.edit ? b.edit : [](auto&) {}, b.cfg);
    const std::string e = load_error(d);
    CHECK_MESSAGE(e.find(b.want) != std::string::npos, e);
    CHECK(e.find('\n') == std::string::npos);
    CHECK((e.starts_with("[bnb] ") || e.starts_with("[model] ")));
    CHECK((e.find("model.safetensors") != std::string::npos || e.find("config.json") != std::string::npos));
  }
  fs::remove_all(dir);
}
