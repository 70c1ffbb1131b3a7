// End to end through the tape, no hand-written gradients: an MLP regression and a one-block
// causal transformer that memorises a few sequences, both trained with AdamW.
#include <fmt/format.h>

#include <cmath>
#include <random>

#include "nn/optim.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

Tensor param(Tensor t) { return t.set_requires_grad(true); }

// y = sin(x1) + x2 * x3 for x uniform in [-1, 1]^3, as an (n, 1) column.
Tensor regression_target(const Tensor& x) {
  std::vector<float> v = x.to_vector<float>(), y(v.size() / 3);
  for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(v[3 * i]) + v[3 * i + 1] * v[3 * i + 2];
  return f32(y, {int64_t(y.size()), 1});
}

struct Mlp {
  Tensor w1, b1, w2, b2;
  Tensor operator()(const Tensor& x) const { return linear(tanh(linear(x, w1, b1)), w2, b2); }
};

double mse(const Tensor& pred, const Tensor& y) { return mean(square(pred - y)).item(); }

struct Block {
  int64_t vocab, ctx, c, heads;
  double dropout_p = 0.0;  // on both residual branches
  Tensor tok, pos, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, lnf_w, lnf_b,
      head;

  std::vector<Tensor> params() const {
    return {tok,   pos,   ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w,
            ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, lnf_w, lnf_b,  head};
  }

  // ids (B, T) -> logits (B, T, vocab)
  Tensor operator()(const Tensor& ids) const {
    int64_t B = ids.size(0), T = ids.size(1), D = c / heads;
    Tensor positions = arange(0, double(T), 1, DType::I64, ids.device());
    Tensor x = embedding(tok, ids) + embedding(pos, positions);  // (B, T, C) + (T, C)
    Tensor qkv = linear(layer_norm(x, ln1_w, ln1_b), qkv_w, qkv_b);
    std::vector<Tensor> parts = split(qkv, c, -1);
    auto heads_of = [&](const Tensor& t) { return transpose(reshape(t, {B, T, heads, D}), 1, 2); };
    AttnOptions causal;
    causal.causal = true;
    Tensor a = scaled_dot_product_attention(heads_of(parts[0]), heads_of(parts[1]), heads_of(parts[2]), causal);
    x = x + dropout(linear(reshape(transpose(a, 1, 2), {B, T, c}), proj_w, proj_b), dropout_p);
    x = x + dropout(linear(gelu(linear(layer_norm(x, ln2_w, ln2_b), fc1_w, fc1_b)), fc2_w, fc2_b), dropout_p);
    return linear(layer_norm(x, lnf_w, lnf_b), head);
  }
};

Block make_block(int64_t vocab, int64_t ctx, int64_t c, int64_t heads) {
  auto w = [](int64_t out, int64_t in) { return param(randn({out, in}, 0, 1.0 / std::sqrt(double(in)))); };
  Block b;
  b.vocab = vocab;
  b.ctx = ctx;
  b.c = c;
  b.heads = heads;
  b.tok = param(randn({vocab, c}, 0, 0.5));
  b.pos = param(randn({ctx, c}, 0, 0.5));
  b.ln1_w = param(ones({c}));
  b.ln1_b = param(zeros({c}));
  b.qkv_w = w(3 * c, c);
  b.qkv_b = param(zeros({3 * c}));
  b.proj_w = w(c, c);
  b.proj_b = param(zeros({c}));
  b.ln2_w = param(ones({c}));
  b.ln2_b = param(zeros({c}));
  b.fc1_w = w(2 * c, c);
  b.fc1_b = param(zeros({2 * c}));
  b.fc2_w = w(c, 2 * c);
  b.fc2_b = param(zeros({c}));
  b.lnf_w = param(ones({c}));
  b.lnf_b = param(zeros({c}));
  b.head = param(randn({vocab, c}, 0, 0.02));  // near-uniform logits: the first loss is ~ln(vocab)
  return b;
}

// The same weights on another device (fresh leaves).
Block block_on(const Block& src, Device d) {
  Block b = src;
  Tensor* dst[] = {&b.tok,   &b.pos,   &b.ln1_w, &b.ln1_b, &b.qkv_w, &b.qkv_b, &b.proj_w, &b.proj_b, &b.ln2_w,
                   &b.ln2_b, &b.fc1_w, &b.fc1_b, &b.fc2_w, &b.fc2_b, &b.lnf_w, &b.lnf_b,  &b.head};
  for (Tensor* t : dst) *t = param(t->detach().clone().to(d));  // clone: training must not touch src
  return b;
}

// Tokens (n_seq, len + 1) with distinct first tokens, so every prefix identifies its sequence.
Tensor toy_sequences(int64_t vocab, int64_t n_seq, int64_t len) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int64_t> tok(0, vocab - 1);
  std::vector<int64_t> data(size_t(n_seq * (len + 1)));
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t t = 0; t <= len; ++t) data[size_t(s * (len + 1) + t)] = t == 0 ? 3 * s + 1 : tok(gen);
  return i64(data, {n_seq, len + 1});
}

// Trains `steps` AdamW steps from a fixed RNG seed and returns the loss of each step.
std::vector<double> train_curve(const Block& init, Device d, int steps) {
  Block model = block_on(init, d);
  Tensor all = toy_sequences(model.vocab, 4, model.ctx).to(d);
  Tensor inputs = narrow(all, 1, 0, model.ctx).contiguous(), targets = narrow(all, 1, 1, model.ctx).contiguous();
  nn::AdamW opt(model.params(), {3e-3f, 0.9f, 0.999f, 1e-8f, 0.01f});
  manual_seed(1234);  // the dropout masks: the same Philox numbers on every backend
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    Tensor loss = cross_entropy(model(inputs), targets);
    opt.zero_grad();
    backward(loss);
    opt.step();
    losses.push_back(loss.item());
  }
  return losses;
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("a two-layer MLP learns y = sin(x1) + x2*x3") {
    manual_seed(2024);
    Tensor x = rand({512, 3}, -1, 1), y = regression_target(x);
    Tensor x_test = rand({256, 3}, -1, 1), y_test = regression_target(x_test);
    const int64_t hidden = 64;
    Mlp net{param(randn({hidden, 3}, 0, 1.0 / std::sqrt(3.0))), param(zeros({hidden})),
            param(randn({1, hidden}, 0, 1.0 / std::sqrt(double(hidden)))), param(zeros({1}))};
    nn::AdamW opt({net.w1, net.b1, net.w2, net.b2}, {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f});
    // Var(y) is about 0.38 (E sin^2 = 0.27, Var(x2 x3) = 1/9). The best linear fit cannot see the
    // x2*x3 term (uncorrelated with every input), so its MSE stays above 0.11: reaching 0.01 means
    // the hidden layer has learned the product as well as the sine.
    const double threshold = 0.01;
    const int max_steps = 2000;
    double first = 0, last = 0;
    int steps = 0;
    for (; steps < max_steps; ++steps) {
      Tensor loss = mean(square(net(x) - y));
      last = loss.item();
      if (steps == 0) first = last;
      if (last < threshold) break;
      opt.zero_grad();
      backward(loss);
      opt.step();
    }
    double test_mse = [&] {
      NoGradGuard g;
      return mse(net(x_test), y_test);
    }();
    MESSAGE(fmt::format("mlp: mse {:.4f} -> {:.5f} in {} steps, held-out mse {:.5f}", first, last, steps, test_mse));
    CHECK(first > 0.2);
    CHECK(last < threshold);
    CHECK(steps < max_steps);
    CHECK(test_mse < 2 * threshold);  // it learned the function, not the 512 points
  }

  TEST_CASE("a one-block causal transformer overfits a tiny sequence set") {
    const int64_t vocab = 16, n_seq = 4, len = 16;
    manual_seed(7);
    // Random tokens, but distinct first tokens so every prefix identifies its sequence and a
    // perfect next-token fit exists.
    Tensor all = toy_sequences(vocab, n_seq, len);
    Tensor inputs = narrow(all, 1, 0, len).contiguous(), targets = narrow(all, 1, 1, len).contiguous();

    Block model = make_block(vocab, len, 32, 2);
    nn::AdamW opt(model.params(), {3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f});
    const double threshold = 0.05;
    const int max_steps = 600;
    std::vector<double> losses;
    for (int step = 0; step < max_steps; ++step) {
      Tensor loss = cross_entropy(model(inputs), targets);
      losses.push_back(loss.item());
      if (losses.back() < threshold) break;
      opt.zero_grad();
      backward(loss);
      opt.step();
    }
    double first = losses.front(), last = losses.back();
    MESSAGE(fmt::format("transformer: loss {:.3f} -> {:.4f} in {} steps", first, last, losses.size() - 1));
    CHECK(std::abs(first - std::log(double(vocab))) < 0.3);  // untrained: close to uniform
    CHECK(last < threshold);
    CHECK(last < 0.1 * first);
    // Broadly monotone: each quarter of the run ends lower than the one before.
    size_t q = losses.size() / 4;
    REQUIRE(q > 0);
    CHECK(losses[2 * q] < losses[q]);
    CHECK(losses[3 * q] < losses[2 * q]);
    CHECK(last < losses[3 * q]);
  }
}

TEST_SUITE("vulkan") {
  TEST_CASE("a transformer trained 20 steps on Vulkan follows the CPU loss curve within 1e-4") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("skipping: no Vulkan device");
      return;
    }
    manual_seed(11);
    Block init = make_block(16, 16, 32, 2);
    init.dropout_p = 0.1;
    std::vector<double> cpu = train_curve(init, Device{}, 20);
    std::vector<double> vk = train_curve(init, parse_device("vulkan"), 20);
    REQUIRE(vk.size() == cpu.size());
    double worst = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      double rel = std::abs(vk[i] - cpu[i]) / std::abs(cpu[i]);
      worst = std::max(worst, rel);
      CHECK_MESSAGE(rel <= 1e-4, "step " << i << ": vulkan " << vk[i] << " vs cpu " << cpu[i]);
    }
    CHECK(cpu.back() < 0.8 * cpu.front());  // it is actually training
    fmt::print("vulkan training curve: 20 steps, loss {:.4f} -> {:.4f}, worst relative gap to cpu {:.2e}\n",
               cpu.front(), cpu.back(), worst);
  }
}

}  // namespace rf::test
