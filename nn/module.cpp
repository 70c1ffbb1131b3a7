#include "nn/module.h"

#include <fmt/format.h>

#include <algorithm>

#include <set>
#include <stdexcept>

#include "engine/autograd.h"

namespace rf::nn {

Tensor Module::forward(const Tensor&) {
  throw std::logic_error(fmt::format("[nn] {} has no single-tensor forward", type_name()));
}

size_t Module::register_parameter(std::string name, Tensor t) {
  params_.push_back({std::move(name), std::move(t)});
  return params_.size() - 1;
}

void Module::remove_last_parameter() {
  if (!params_.empty()) params_.pop_back();
}

size_t Module::tie_parameter(std::string name, Module& owner, size_t owner_slot) {
  params_.push_back({std::move(name), Tensor(), &owner, owner_slot});
  return params_.size() - 1;
}

size_t Module::register_module(std::string name, std::shared_ptr<Module> m) {
  children_.emplace_back(std::move(name), std::move(m));
  return children_.size() - 1;
}

Tensor& Module::param(size_t slot) {
  Param& p = params_.at(slot);
  return p.tied_owner ? p.tied_owner->param(p.tied_slot) : p.tensor;
}
const Tensor& Module::param(size_t slot) const { return const_cast<Module*>(this)->param(slot); }

Module* Module::find(const std::string& path) {
  Module* m = this;
  size_t start = 0;
  while (m && start <= path.size() && !path.empty()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Module* next = nullptr;
    for (auto& [n, c] : m->children_)
      if (n == part) next = c.get();
    m = next;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return path.empty() ? this : m;
}

bool Module::remove_module(const std::string& name) {
  auto it = std::find_if(children_.begin(), children_.end(), [&](const auto& c) { return c.first == name; });
  if (it == children_.end()) return false;
  children_.erase(it);
  return true;
}

std::shared_ptr<Module> Module::replace(const std::string& path, std::shared_ptr<Module> m) {
  size_t dot = path.rfind('.');
  Module* parent = dot == std::string::npos ? this : find(path.substr(0, dot));
  std::string leaf = dot == std::string::npos ? path : path.substr(dot + 1);
  if (parent)
    for (auto& [n, c] : parent->children_)
      if (n == leaf) return std::exchange(c, std::move(m));
  throw std::invalid_argument(fmt::format("[nn] no module named '{}'", path));
}

void Module::collect(const std::string& prefix, bool include_tied, std::vector<NamedParam>& out) {
  for (size_t i = 0; i < params_.size(); ++i) {
    bool tied = params_[i].tied_owner != nullptr;
    if (!tied || include_tied) out.push_back({prefix + params_[i].name, &param(i), this, i, tied});
  }
  for (auto& [n, c] : children_) c->collect(prefix + n + ".", include_tied, out);
}

std::vector<Module::NamedParam> Module::named_parameters(bool include_tied) {
  std::vector<NamedParam> out;
  collect("", include_tied, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out{{prefix, this}};
  for (auto& [n, c] : children_) {
    auto sub = c->named_modules(prefix.empty() ? n : prefix + "." + n);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::parameters() {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(*p.tensor);
  return out;
}

std::map<std::string, Tensor> Module::state_dict() {
  std::map<std::string, Tensor> out;
  for (auto& p : named_parameters()) out.emplace(p.name, *p.tensor);
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.tensor->numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::set_requires_grad(bool on) {
  for (auto& p : named_parameters()) p.tensor->set_requires_grad(on);
}

void Module::to(Device d) {
  for (auto& p : named_parameters()) {
    bool rg = p.tensor->requires_grad();
    Tensor moved = p.tensor->detach().to(d);
    if (rg) moved.set_requires_grad(true);
    *p.tensor = moved;
  }
}

namespace {
std::string list(const std::vector<std::string>& names, size_t limit = 12) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += fmt::format(", ... and {} more", names.size() - limit);
  return s;
}
}  // namespace

std::string LoadReport::message(std::string_view what) const {
  std::string s = fmt::format("[load] {}: checkpoint does not match the model:", what);
  if (!missing.empty()) s += fmt::format(" {} missing ({});", missing.size(), list(missing));
  if (!unexpected.empty()) s += fmt::format(" {} unexpected ({});", unexpected.size(), list(unexpected));
  if (!mismatched.empty()) s += fmt::format(" {} shape mismatches ({});", mismatched.size(), list(mismatched, 6));
  s.pop_back();
  return s;
}

LoadReport load_state(Module& m, const StateSource& src, const std::function<std::string(const std::string&)>& key_map,
                      const std::function<bool(const std::string&)>& ignored, bool strict, std::string_view what) {
  LoadReport r;
  std::set<std::string> have(src.names.begin(), src.names.end()), used;
  auto params = m.named_parameters(true);
  // Check everything first so a failed load changes nothing.
  for (auto& p : params) {
    std::string key = key_map(p.name);
    if (!have.count(key)) {
      if (!p.tied) r.missing.push_back(key);
      continue;
    }
    used.insert(key);
    Shape want = p.tensor->shape(), got = src.shape(key);
    if (want != got)
      r.mismatched.push_back(
          fmt::format("{}: checkpoint [{}] vs model [{}]", key, fmt::join(got, ", "), fmt::join(want, ", ")));
  }
  for (auto& k : src.names)
    if (!used.count(k) && !ignored(k)) r.unexpected.push_back(k);
  if (!r.mismatched.empty() || (strict && !r.ok())) throw std::runtime_error(r.message(what));
  NoGradGuard ng;
  for (auto& p : params) {
    std::string key = key_map(p.name);
    if (p.tied || !have.count(key)) continue;  // a tied copy in the file is the same tensor in HF
    bool rg = p.tensor->requires_grad();
    Tensor t = src.load(key);
    if (rg) t.set_requires_grad(true);
    *p.tensor = t;
  }
  return r;
}

}  // namespace rf::nn
