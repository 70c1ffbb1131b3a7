#pragma once
// Tape autograd. Each recorded op becomes a Node owned by its output (so an abandoned forward
// frees itself); Nodes carry a recording sequence number, and backward() runs the nodes reachable
// from the root in reverse recording order, which is topological by construction.
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <type_traits>
#include <vector>

#include "engine/tensor.h"

namespace rf {

bool grad_enabled();
void set_grad_enabled(bool on);
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// What a forward keeps for its backward. save() is a no-op when the op is not recorded.
struct OpCtx {
  bool recording = false;
  std::vector<bool> needs_grad;     // per tensor input, in argument order
  std::vector<Shape> input_shapes;  // per tensor input (undefined inputs: empty)
  std::vector<DType> input_dtypes;
  std::vector<Tensor> saved_;
  std::vector<double> scalars;
  std::vector<int64_t> ints;
  std::shared_ptr<void> extra;  // state a plain BackwardFn cannot capture (checkpoint's closure)

  void save(const Tensor& t) {  // detached alias: no reference cycle through grad_fn
    if (recording) saved_.push_back(t.defined() ? t.detach() : Tensor());
  }
  const Tensor& saved(size_t i) const { return saved_.at(i); }
  bool needs(size_t i) const { return i < needs_grad.size() && needs_grad[i]; }
};

// Returns one gradient per tensor input (undefined where not needed); may have broadcast shape.
using BackwardFn = std::vector<Tensor> (*)(OpCtx& ctx, const Tensor& dy);

struct Edge {
  std::shared_ptr<Node> node;        // producer of a non-leaf input
  std::shared_ptr<TensorImpl> leaf;  // or the leaf itself
};

struct Node {
  uint64_t seq = 0;
  std::string_view name;
  BackwardFn backward = nullptr;
  OpCtx ctx;
  std::vector<Edge> edges;  // per tensor input
  bool released = false;    // saved tensors freed after running
};

// Runs backward from root (a scalar when grad is undefined). Leaves accumulate into .grad.
void backward(const Tensor& root, const Tensor& grad = Tensor());

// Overlap of gradient communication with backward (nn/grad_buckets.h): while a hook is installed on
// this thread, the outermost backward() calls it once for each leaf whose gradient is complete for
// that pass (every recorded use has delivered). A graph with checkpointed blocks hides its leaves'
// uses until the recompute, so then no leaf is reported and the caller handles them after the pass.
using LeafGradHook = std::function<void(const TensorImpl& leaf)>;
class LeafGradHookGuard {
 public:
  explicit LeafGradHookGuard(LeafGradHook hook);
  ~LeafGradHookGuard();
  LeafGradHookGuard(const LeafGradHookGuard&) = delete;
  LeafGradHookGuard& operator=(const LeafGradHookGuard&) = delete;

 private:
  LeafGradHook hook_;
  LeafGradHook* prev_;
};

// Activation checkpointing: runs fn(inputs) without recording and keeps only the inputs and the RNG
// state at entry. Backward re-runs fn with grad on detached copies of the inputs (same requires_grad),
// replaying the same dropout masks, and backprops through that graph: parameters used inside fn get
// their gradients there, bitwise as in the plain graph. The global RNG stream is restored afterwards.
// fn is called again during backward, so it must capture by value whatever does not outlive the call.
// Without grad mode this is just fn(inputs).
using CheckpointFn = std::function<Tensor(const std::vector<Tensor>&)>;
Tensor checkpoint(CheckpointFn fn, const std::vector<Tensor>& inputs);

// Collects the tensor arguments of an op call.
namespace detail {
inline void collect(std::vector<const Tensor*>& v, const Tensor& t) { v.push_back(&t); }
inline void collect(std::vector<const Tensor*>& v, const std::vector<Tensor>& ts) {
  for (auto& t : ts) v.push_back(&t);
}
template <class T>
requires(!std::is_same_v<std::decay_t<T>, Tensor> &&
         !std::is_same_v<std::decay_t<T>, std::vector<Tensor>>) inline void collect(std::vector<const Tensor*>&,
                                                                                    const T&) {}
void record(std::string_view name, BackwardFn fn, OpCtx&& ctx, const std::vector<const Tensor*>& inputs, Tensor& out);
}  // namespace detail

// Op: a struct with kName, static Tensor forward(OpCtx&, args...) and static backward(OpCtx&, dy).
// forward runs with grad mode off, so composites inside it are not recorded twice.
template <class Op, class... Args>
Tensor apply(const Args&... args) {
  std::vector<const Tensor*> inputs;
  (detail::collect(inputs, args), ...);
  OpCtx ctx;
  if (grad_enabled()) {
    for (const Tensor* t : inputs) {
      bool need = t->defined() && t->requires_grad() && is_float(t->dtype());
      ctx.needs_grad.push_back(need);
      ctx.recording = ctx.recording || need;
    }
  }
  if (ctx.recording) {
    for (const Tensor* t : inputs) {
      ctx.input_shapes.push_back(t->defined() ? t->shape() : Shape{});
      ctx.input_dtypes.push_back(t->defined() ? t->dtype() : DType::F32);
    }
  }
  Tensor out;
  {
    NoGradGuard guard;
    out = Op::forward(ctx, args...);
  }
  if (ctx.recording) detail::record(Op::kName, &Op::backward, std::move(ctx), inputs, out);
  return out;
}

}  // namespace rf
