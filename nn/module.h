#pragma once
// Module: named parameters and children under Hugging Face's names, so state_dict() keys equal a
// checkpoint's keys. Children are held by slot so a wrapper (e.g. a LoRA layer) can take a module's
// place under the same name without the parent knowing.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace rf::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Unary modules (Linear, Embedding, norms) override this; containers have their own entry points.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }
  virtual std::string_view type_name() const { return "Module"; }

  // ---- structure ----
  // Registers a parameter; returns its slot. Frozen parameters do not record gradients.
  size_t register_parameter(std::string name, Tensor t);
  // An alias of another module's parameter (tied embeddings): shared, never saved twice.
  size_t tie_parameter(std::string name, Module& owner, size_t owner_slot);
  size_t register_module(std::string name, std::shared_ptr<Module> m);
  Tensor& param(size_t slot);  // resolves ties
  const Tensor& param(size_t slot) const;
  Module& child(size_t slot) const { return *children_[slot].second; }
  template <class M>
  M& child_as(size_t slot) const {
    return dynamic_cast<M&>(child(slot));
  }
  const std::shared_ptr<Module>& child_ptr(size_t slot) const { return children_[slot].second; }
  // Puts m in the slot of the child at a dotted path ("h.0.attn.c_attn"); returns the module it replaced.
  std::shared_ptr<Module> replace(const std::string& path, std::shared_ptr<Module> m);
  Module* find(const std::string& path);  // nullptr when absent
  // Drops a direct child by name (containers keyed by name, e.g. LoRA's per-adapter modules); slots
  // of later children shift, so only use it on modules that look children up by name.
  bool remove_module(const std::string& name);
  // Drops this module's last registered parameter (a storage form giving up its extra tensor, e.g. a
  // quantized Linear's scales); earlier slots keep their numbers.
  void remove_last_parameter();

  // ---- traversal (depth first, registration order) ----
  struct NamedParam {
    std::string name;
    Tensor* tensor;
    Module* owner;
    size_t slot;
    bool tied;
  };
  std::vector<NamedParam> named_parameters(bool include_tied = false);
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  std::vector<Tensor> parameters();  // untied, each once
  // Untied parameters by name: what a checkpoint holds (HF drops tied copies on save too).
  std::map<std::string, Tensor> state_dict();
  int64_t num_parameters();

  // ---- state ----
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  void set_requires_grad(bool on);  // every untied parameter
  void to(Device d);                // moves every parameter (ties follow)

 private:
  struct Param {
    std::string name;
    Tensor tensor;
    Module* tied_owner = nullptr;  // set for aliases
    size_t tied_slot = 0;
  };
  void collect(const std::string& prefix, bool include_tied, std::vector<NamedParam>& out);
  std::vector<Param> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = false;
};

// Strict loading: every untied parameter must come from `source` with the same shape. All missing
// keys, unexpected keys and shape mismatches are reported in one error (`what` names the file).
// `source(name)` returns the tensor or an undefined Tensor; `available` lists what the source holds.
struct LoadReport {
  std::vector<std::string> missing, unexpected, mismatched;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string message(std::string_view what) const;
};
struct StateSource {
  std::vector<std::string> names;                  // keys the source holds
  std::function<Shape(const std::string&)> shape;  // shape of a key without loading it
  std::function<Tensor(const std::string&)> load;  // the tensor, on the right device/dtype
};
// key_map turns a module name into the source's key (e.g. adds a prefix); ignored(key) lists buffers
// old checkpoints carry that the model does not use.
LoadReport load_state(Module& m, const StateSource& src, const std::function<std::string(const std::string&)>& key_map,
                      const std::function<bool(const std::string&)>& ignored, bool strict, std::string_view what);

}  // namespace rf::nn
