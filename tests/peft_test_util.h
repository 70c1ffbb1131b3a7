// Helpers shared by the PEFT unit tests (test_peft.cpp, test_peft_adapters.cpp): fixture models,
// host f64 references, one-line error checks.
#pragma once
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "models/model.h"
#include "peft/linalg.h"
#include "peft/peft_model.h"
#include "tests/test_util.h"

namespace rf::test::peftt {

namespace fs = std::filesystem;
using peft::LoraConfig;

// References are computed in f64 on the CPU with plain engine ops, apart from the peft/ code under test
// (which runs in f32 on the tested device).
inline Tensor h(const Tensor& t) { return t.detach().to(Device{}).to(DType::F64).contiguous(); }
inline Tensor w_out_in(nn::Linear& l) { return l.fan_in_fan_out() ? h(l.weight()).t().contiguous() : h(l.weight()); }
inline void randomize(Tensor& t, double lo = -1, double hi = 1) {
  NoGradGuard ng;
  t.copy_(rand(t.shape(), lo, hi, DType::F32, t.device()));
}

// A model of independent linear maps under target-like names: all PeftModel and the strategies need.
struct TinySpec {
  std::string name;
  int64_t in, out;
  bool bias = false, conv1d = false;
};
class Tiny final : public models::Model {
 public:
  Tiny(const std::vector<TinySpec>& specs, double std, Device d = {}) : Model(cfg()) {
    for (const auto& s : specs)
      register_module(s.name,
                      std::make_shared<nn::Linear>(s.in, s.out, s.bias, nn::Init{.std = std, .device = d}, s.conv1d));
  }
  Tensor forward(const models::ModelInputs&, models::KVCache*) override {
    throw std::logic_error("Tiny: call a module");
  }
  Tensor run(const std::string& name, const Tensor& x) { return (*find(name))(x); }

 private:
  static models::ModelConfig cfg() {
    models::ModelConfig c;
    c.model_type = "tiny";
    return c;
  }
};

inline std::string fixture(const std::string& arch, const char* part) {
  return (fs::path(fixtures_dir()) / "hf" / arch / part).string();
}
inline std::unique_ptr<models::Model> load(const std::string& arch, Device d = {}) {
  auto m = models::load_model(fixture(arch, "base"), models::LoadOptions{.device = d});
  m->eval();
  return m;
}
struct Adapted {  // a fixture model and its PeftModel (destroyed first: it refers to the model)
  std::unique_ptr<models::Model> m;
  std::unique_ptr<peft::PeftModel> pm;
};
inline Adapted adapted(const std::string& arch, const std::optional<LoraConfig>& c = std::nullopt, Device d = {}) {
  Adapted a{load(arch, d), nullptr};
  a.pm = std::make_unique<peft::PeftModel>(*a.m);
  if (c) a.pm->add_adapter("default", *c);
  return a;
}
inline Tensor logits(models::Model& m) {
  NoGradGuard ng;
  Tensor ids = i64({5, 17, 42, 7, 99, 3, 250, 11}, {1, 8}).to(m.device());
  return m.forward(models::ModelInputs{ids, {}, {}, {}}).to(DType::F32).to(Device{});
}
inline fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / fmt::format("rf_peft_{}_{}", tag, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
inline std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline std::string error_of(const std::function<void()>& f) {  // "" when f does not throw
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
// f throws a one-line message holding every part (shown when it does not).
inline bool throws_with(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  std::string msg = error_of(f);
  bool ok = !msg.empty() && msg.find('\n') == std::string::npos;
  for (const auto& p : parts) ok = ok && msg.find(p) != std::string::npos;
  if (!ok) MESSAGE("message: '" << msg << "'");
  return ok;
}
inline std::set<std::string> targeted(const peft::PeftModel& pm) {
  std::set<std::string> s;
  for (const auto& [path, l] : pm.lora_layers()) s.insert(path);
  return s;
}
inline std::map<std::string, Tensor> cloned_state(models::Model& m) {  // merges write in place: keep copies
  std::map<std::string, Tensor> out;
  for (auto& [k, t] : m.state_dict()) out[k] = t.detach().clone();
  return out;
}
inline std::map<std::string, std::string> module_types(models::Model& m) {
  std::map<std::string, std::string> out;
  for (auto& [n, mod] : m.named_modules()) out[n] = std::string(mod->type_name());
  return out;
}

// Same f32 bits (resume checks).
inline bool bits_equal(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<float>(), y = b.to_vector<float>();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}
// Singular values above 1e-4 of the largest.
inline int64_t numeric_rank(const Tensor& m) {
  auto s = std::get<1>(peft::svd(m)).to_vector<double>();
  return std::count_if(s.begin(), s.end(), [&](double v) { return v > 1e-4 * s[0]; });
}

}  // namespace rf::test::peftt
