#include "engine/autograd.h"

#include <fmt/format.h>

#include <atomic>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "engine/autocast.h"
#include "engine/ops.h"

namespace rf {

namespace {
thread_local bool g_grad_enabled = true;
thread_local LeafGradHook* g_leaf_hook = nullptr;
thread_local int g_backward_depth = 0;
std::atomic<uint64_t> g_seq{1};
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

namespace detail {

void record(std::string_view name, BackwardFn fn, OpCtx&& ctx, const std::vector<const Tensor*>& inputs, Tensor& out) {
  auto node = std::make_shared<Node>();
  node->seq = g_seq.fetch_add(1, std::memory_order_relaxed);
  node->name = name;
  node->backward = fn;
  node->edges.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!ctx.needs_grad[i]) continue;
    const Tensor& t = *inputs[i];
    if (t.impl()->grad_fn)
      node->edges[i].node = t.impl()->grad_fn;
    else
      node->edges[i].leaf = t.impl_ptr();
  }
  node->ctx = std::move(ctx);
  // An op may hand back one of its inputs unchanged; the output needs its own identity.
  for (const Tensor* t : inputs)
    if (t->defined() && t->impl() == out.impl()) {
      out = make_view(out, out.shape(), out.strides(), out.offset());
      break;
    }
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

}  // namespace detail

namespace {

// Adds g into acc (allocating on first use); gradients never alias a live forward tensor.
void accumulate(Tensor& acc, const Tensor& g) {
  if (!acc.defined())
    acc = g;
  else
    acc = add(acc, g);
}

Tensor fit_gradient(Tensor g, const Shape& shape, DType dtype, std::string_view op) {
  Tensor r = g.shape() == shape ? std::move(g) : sum_to(g, shape);
  if (r.shape() != shape)
    throw std::logic_error(fmt::format("[backward] {} returned a gradient of shape {} for an input of shape {}", op,
                                       shape_str(r.shape()), shape_str(shape)));
  // A 16-bit input (an autocast GEMM operand) keeps its f32 gradient: rounding it to 16 bits would
  // only lose precision before the cast back to the f32 master tensor.
  const bool keep_f32 = r.dtype() == DType::F32 && (dtype == DType::BF16 || dtype == DType::F16);
  if (r.dtype() != dtype && !keep_f32) r = cast(r, dtype);
  return r;
}

// A leaf's .grad must own its storage: users clip or scale it in place, and a backward may hand
// the same tensor to several inputs (add returns dy twice) or return a view of another gradient.
void accumulate_leaf(TensorImpl& leaf, Tensor g) {
  if (!leaf.grad) {
    bool owned = g.impl_ptr().use_count() == 1 && g.buffer_ptr().use_count() == 1 && g.is_contiguous();
    leaf.grad = owned ? g.impl_ptr() : clone(g).impl_ptr();
  } else {
    leaf.grad = add(Tensor(leaf.grad), g).impl_ptr();
  }
}

// Uses of each leaf in the graph below start, for the leaf hook; false when a checkpoint node hides
// some of them.
bool count_leaf_uses(Node* start, std::unordered_map<const TensorImpl*, int>& uses) {
  std::vector<Node*> stack{start};
  std::unordered_map<Node*, bool> seen{{start, true}};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->name == "checkpoint") return false;
    for (const Edge& e : n->edges) {
      if (e.leaf) ++uses[e.leaf.get()];
      if (e.node && seen.emplace(e.node.get(), true).second) stack.push_back(e.node.get());
    }
  }
  return true;
}

struct DepthScope {
  DepthScope() { ++g_backward_depth; }
  ~DepthScope() { --g_backward_depth; }
};

}  // namespace

LeafGradHookGuard::LeafGradHookGuard(LeafGradHook hook) : hook_(std::move(hook)), prev_(g_leaf_hook) {
  g_leaf_hook = &hook_;
}
LeafGradHookGuard::~LeafGradHookGuard() { g_leaf_hook = prev_; }

void backward(const Tensor& root, const Tensor& grad) {
  if (!root.defined() || !root.requires_grad())
    throw std::invalid_argument("[backward] tensor does not require grad (was it computed under NoGradGuard?)");
  Tensor g = grad;
  if (!g.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument(fmt::format(
          "[backward] implicit gradient needs a scalar, got shape {}; pass a gradient", shape_str(root.shape())));
    g = ones(root.shape(), root.dtype(), root.device());
  } else if (g.shape() != root.shape()) {
    throw std::invalid_argument(fmt::format("[backward] gradient shape {} differs from tensor shape {}",
                                            shape_str(g.shape()), shape_str(root.shape())));
  }
  NoGradGuard no_grad;
  // A backward's precision comes from its forward (the recorded dtypes), never from the autocast
  // state around backward(): an f32 op under a bf16 autocast region (AdaLoRA's orthogonality
  // penalty) keeps f32 gradients.
  AutocastGuard f32(Precision::F32);
  DepthScope depth;
  LeafGradHook* hook = g_backward_depth == 1 ? g_leaf_hook : nullptr;
  if (!root.impl()->grad_fn) {  // a leaf: its gradient is just g
    accumulate_leaf(*root.impl(), g.dtype() == root.dtype() ? g : cast(g, root.dtype()));
    if (hook) (*hook)(*root.impl());
    return;
  }
  std::unordered_map<const TensorImpl*, int> leaf_uses;
  if (hook && !count_leaf_uses(root.impl()->grad_fn.get(), leaf_uses)) hook = nullptr;
  // Reverse recording order is topological: a node's seq exceeds that of every node it consumes.
  auto later = [](Node* a, Node* b) { return a->seq < b->seq; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  std::unordered_map<Node*, Tensor> grads;
  std::vector<std::shared_ptr<Node>> keep;  // nodes stay alive while queued
  Node* start = root.impl()->grad_fn.get();
  grads[start] = g.dtype() == root.dtype() ? g : cast(g, root.dtype());
  ready.push(start);
  keep.push_back(root.impl()->grad_fn);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    if (n->released)
      throw std::logic_error(
          fmt::format("[backward] the graph through '{}' was already used by a backward pass; "
                      "run the forward again",
                      n->name));
    auto it = grads.find(n);
    Tensor dy = std::move(it->second);
    grads.erase(it);
    std::vector<Tensor> dxs = n->backward(n->ctx, dy);
    dy = Tensor();
    n->ctx.saved_.clear();  // free what the forward kept as soon as it has served
    n->released = true;
    if (dxs.size() != n->edges.size())
      throw std::logic_error(
          fmt::format("[backward] {} returned {} gradients for {} inputs", n->name, dxs.size(), n->edges.size()));
    for (size_t i = 0; i < dxs.size(); ++i) {
      Edge& e = n->edges[i];
      const bool last_use = hook && e.leaf && --leaf_uses[e.leaf.get()] == 0;
      if (!dxs[i].defined() || (!e.node && !e.leaf)) {
        if (last_use && e.leaf->grad) (*hook)(*e.leaf);
        continue;
      }
      Tensor dx = fit_gradient(std::move(dxs[i]), n->ctx.input_shapes[i], n->ctx.input_dtypes[i], n->name);
      if (e.leaf) {
        accumulate_leaf(*e.leaf, dx.dtype() == e.leaf->dtype ? std::move(dx) : cast(dx, e.leaf->dtype));
        if (last_use) (*hook)(*e.leaf);
      } else {
        Node* p = e.node.get();
        auto [pos, inserted] = grads.try_emplace(p);
        accumulate(pos->second, dx);
        if (inserted) {
          ready.push(p);
          keep.push_back(e.node);
        }
      }
    }
  }
}

namespace {

struct CheckpointState {
  CheckpointFn fn;
  RngState rng;         // at the forward's entry, so the recompute draws the same dropout masks
  Precision precision;  // autocast state of the forward: backward may run outside the guard
};

// Sets grad mode and the RNG stream for the recompute; puts both back however it ends.
class RecomputeScope {
 public:
  explicit RecomputeScope(RngState replay) : grad_(grad_enabled()), rng_(rng_take(0)) {
    rng_restore(replay);
    set_grad_enabled(true);
  }
  ~RecomputeScope() {
    set_grad_enabled(grad_);
    rng_restore(rng_);
  }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;

 private:
  bool grad_;
  RngState rng_;
};

std::vector<Tensor> checkpoint_backward(OpCtx& ctx, const Tensor& dy) {
  auto& st = *static_cast<CheckpointState*>(ctx.extra.get());
  std::vector<Tensor> xs;
  for (size_t i = 0; i < ctx.saved_.size(); ++i) {
    Tensor x = ctx.saved(i).defined() ? ctx.saved(i).detach() : Tensor();
    if (ctx.needs(i)) x.set_requires_grad(true);
    xs.push_back(std::move(x));
  }
  Tensor y;
  {
    RecomputeScope scope(st.rng);
    AutocastGuard autocast(st.precision);
    y = st.fn(xs);
  }
  std::vector<Tensor> dxs(xs.size());
  if (!y.requires_grad()) return dxs;  // nothing inside needed a gradient after all
  backward(y, dy);                     // parameters accumulate here; the inputs' gradients land on the detached copies
  for (size_t i = 0; i < xs.size(); ++i)
    if (ctx.needs(i)) dxs[i] = xs[i].grad();
  return dxs;
}

}  // namespace

Tensor checkpoint(CheckpointFn fn, const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return fn(inputs);
  OpCtx ctx;
  ctx.recording = true;
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : inputs) {
    ptrs.push_back(&t);
    ctx.needs_grad.push_back(t.defined() && t.requires_grad() && is_float(t.dtype()));
    ctx.input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    ctx.input_dtypes.push_back(t.defined() ? t.dtype() : DType::F32);
    ctx.save(t);
  }
  RngState entry = rng_take(0);
  Tensor out;
  {
    NoGradGuard guard;
    out = fn(inputs);
  }
  // Recorded even when no input needs a gradient: parameters inside fn may (a LoRA block over frozen
  // embeddings). Whether they do is only known when the recompute builds the graph.
  if (!out.defined() || !is_float(out.dtype())) return out;
  ctx.extra = std::make_shared<CheckpointState>(CheckpointState{std::move(fn), entry, autocast_precision()});
  detail::record("checkpoint", &checkpoint_backward, std::move(ctx), ptrs, out);
  return out;
}

}  // namespace rf
