// A character-level causal transformer (one block) trained with the engine's tape and AdamW:
// the smallest complete fine-tuning loop a library user writes. Prints the loss curve.
// The device is one argument: `train_tiny --device vulkan` (or RANKFORGE_DEVICE=vulkan); nothing
// else in the program changes.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "nn/optim.h"

using namespace rf;

namespace {

const char* kText =
    "rankforge trains low-rank adapters on a tape autograd engine. "
    "the tape records each op, and backward walks it in reverse. "
    "every gradient is checked against finite differences. ";

struct Model {
  int64_t C, H;
  Tensor wte, wpe, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, fc_w, fc_b, out_w, lnf_w, lnf_b, head_w;
  std::vector<Tensor> params() {
    return {wte, wpe, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, fc_w, fc_b, out_w, lnf_w, lnf_b, head_w};
  }

  Tensor operator()(const Tensor& ids) {  // ids (B, T) -> logits (B, T, V)
    const int64_t B = ids.size(0), T = ids.size(1);
    Tensor x = embedding(wte, ids) + narrow(wpe, 0, 0, T);           // (B, T, C)
    Tensor qkv = linear(layer_norm(x, ln1_w, ln1_b), qkv_w, qkv_b);  // (B, T, 3C)
    auto parts = split(qkv, C, -1);
    auto heads = [&](const Tensor& t) { return t.reshape({B, T, H, C / H}).transpose(1, 2); };  // (B, H, T, D)
    Tensor a = scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), {.causal = true});
    x = x + linear(a.transpose(1, 2).reshape({B, T, C}), proj_w);
    x = x + linear(gelu(linear(x, fc_w, fc_b), GeluApprox::Tanh), out_w);
    return linear(layer_norm(x, lnf_w, lnf_b), head_w);
  }
};

Device dev;  // set once from the command line
Tensor param(const Shape& s, double std) { return randn(s, 0.0, std, DType::F32, dev).set_requires_grad(); }
Tensor param_full(const Shape& s, double v) { return full(s, v, DType::F32, dev).set_requires_grad(); }

}  // namespace

int run() {
  manual_seed(42);
  const std::string text = kText;
  std::vector<char> vocab;
  for (char c : text)
    if (std::find(vocab.begin(), vocab.end(), c) == vocab.end()) vocab.push_back(c);
  std::vector<int64_t> ids;
  for (char c : text) ids.push_back(std::find(vocab.begin(), vocab.end(), c) - vocab.begin());

  const int64_t V = int64_t(vocab.size()), C = 64, H = 4, T = 32, B = 8;
  Model m{C,
          H,
          param({V, C}, 0.02),
          param({T, C}, 0.02),
          param_full({C}, 1),
          param_full({C}, 0),
          param({3 * C, C}, 0.02),
          param_full({3 * C}, 0),
          param({C, C}, 0.02),
          param({4 * C, C}, 0.02),
          param_full({4 * C}, 0),
          param({C, 4 * C}, 0.02),
          param_full({C}, 1),
          param_full({C}, 0),
          param({V, C}, 0.02)};
  nn::AdamW opt(m.params(), nn::AdamWOptions{.lr = 3e-3f, .weight_decay = 0.0f});

  // Fixed windows of the text: inputs and next-character targets.
  std::vector<int64_t> xs, ys;
  const int64_t stride = int64_t(ids.size() - T - 1) / (B - 1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      xs.push_back(ids[size_t(b * stride + t)]);
      ys.push_back(ids[size_t(b * stride + t + 1)]);
    }
  Tensor x = from_data(xs, {B, T}, dev), y = from_data(ys, {B, T}, dev);

  fmt::print("tiny char transformer on {}: vocab {}, C {}, heads {}, {} sequences of {}\n", device_str(dev), V, C, H, B,
             T);
  double loss_v = 0;
  for (int step = 0; step <= 200; ++step) {
    Tensor loss = cross_entropy(m(x), y);
    loss_v = loss.item();
    if (step % 25 == 0) fmt::print("step {:4d}  loss {:.4f}\n", step, loss_v);
    opt.zero_grad();
    backward(loss);
    opt.step();
  }
  fmt::print("final_loss={:.4f}\n", loss_v);
  return loss_v < 0.5 ? 0 : 1;
}

int main(int argc, char** argv) try {
  std::string spec;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--device" && i + 1 < argc)
      spec = argv[++i];
    else if (a.rfind("--device=", 0) == 0)
      spec = a.substr(9);
    else
      throw std::invalid_argument("usage: train_tiny [--device cpu|vulkan|vulkan:N]");
  }
  dev = spec.empty() ? default_device() : parse_device(spec);
  return run();
} catch (const std::exception& e) {
  fmt::print(stderr, "[train_tiny] {}\n", e.what());
  return 2;
}
