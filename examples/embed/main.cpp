// Embedding rankforge in your own program: y = x @ w, a gradient, and one AdamW step.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/ops.h"
#include "nn/optim.h"

int main() {
  rf::manual_seed(1);
  rf::Tensor x = rf::randn({4, 3});
  rf::Tensor w = rf::randn({3, 2}).set_requires_grad();
  rf::Tensor loss = rf::mean(rf::square(rf::matmul(x, w)));
  rf::backward(loss);
  rf::nn::AdamW opt({w}, rf::nn::AdamWOptions{.lr = 0.1f});
  opt.step();
  fmt::print("loss={:.6f} grad={}\n", loss.item(), w.grad().to_vector<float>());
  return 0;
}
