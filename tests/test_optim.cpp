// Optimizer updates checked against the textbook formulas computed on the host; parameter groups,
// saved state (bit-exact resume through a safetensors file), state resets and gradient clipping.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "engine/safetensors.h"
#include "nn/optim.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

// Gives p the gradient c (loss = sum(p * c)).
void set_gradient(const Tensor& p, const Tensor& c) { backward(sum(mul(p, c))); }

// Bit-for-bit equality (memcmp), so -0 vs 0 or any last-bit drift counts as a difference.
template <class T>
bool bits_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Deterministic, nowhere-zero gradient values for step k.
std::vector<float> grad_values(size_t n, int k) {
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = float(std::sin(1.0 + 0.7 * double(i) + 1.3 * k)) + (i % 2 ? 0.05f : -0.05f);
  return g;
}

// Everything save_state reports, on the host, to check that a failed load changed nothing.
struct Snapshot {
  std::map<std::string, std::vector<double>> tensors;
  nlohmann::json meta;
  bool operator==(const Snapshot&) const = default;
};
Snapshot snapshot(const nn::Optimizer& o) {
  std::map<std::string, Tensor> ts;
  Snapshot s;
  o.save_state(ts, s.meta);
  for (auto& [k, t] : ts) s.tensors[k] = t.to_vector<double>();
  return s;
}

// save_state -> safetensors file + JSON text -> back, as a checkpoint does.
std::pair<std::map<std::string, Tensor>, nlohmann::json> round_trip(const nn::Optimizer& o) {
  std::map<std::string, Tensor> ts;
  nlohmann::json meta;
  o.save_state(ts, meta);
  for (auto& [k, t] : ts) CHECK_MESSAGE(t.device() == Device{}, k);  // safetensors writes host memory
  auto path = std::filesystem::temp_directory_path() / fmt::format("rf_optim_state_{}.safetensors", ::getpid());
  safetensors::save_file(ts, path.string());
  auto loaded = safetensors::load_file(path.string());
  std::map<std::string, Tensor> owned;  // detach from the mapping before the file goes
  for (auto& [k, t] : loaded) owned[k] = t.clone();
  std::filesystem::remove(path);
  return {owned, nlohmann::json::parse(meta.dump())};
}

// Host AdamW for one parameter, as torch.optim.AdamW, in double.
struct HostAdamW {
  std::vector<double> p, m, v;
  int t = 0;
  explicit HostAdamW(const std::vector<float>& init) : p(init.begin(), init.end()), m(init.size()), v(init.size()) {}
  void step(const std::vector<float>& g, double lr, double wd, const nn::AdamWOptions& o) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1.0 - lr * wd;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * double(g[i]) * g[i];
      double mh = m[i] / (1 - std::pow(double(o.beta1), t)), vh = v[i] / (1 - std::pow(double(o.beta2), t));
      p[i] -= lr * mh / (std::sqrt(vh) + o.eps);
    }
  }
};

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("sgd: plain, momentum and weight decay") {
    for_each_backend([](Device d) {
      Tensor p = fdata({1, 2}, {2}, d).set_requires_grad();
      Tensor c = fdata({0.5, -1}, {2}, d);
      auto buffer = p.buffer_ptr();
      nn::Sgd plain({p}, 0.1f);
      set_gradient(p, c);
      plain.step();
      CHECK(allclose(p.to_vector<double>(), {0.95, 2.1}, ftol(d, 1e-7)));
      CHECK(p.buffer_ptr() == buffer);  // updated in place
      CHECK(plain.step_count() == 1);
      plain.zero_grad();
      CHECK(!p.grad().defined());

      Tensor q = fdata({1, 2}, {2}, d).set_requires_grad();
      nn::Sgd mom({q}, 0.1f, 0.9f, 0.5f);
      // step 1: d = g + 0.5 q = (1, 0); buf = d; q -= 0.1 buf -> (0.9, 2)
      set_gradient(q, c);
      mom.step();
      CHECK(allclose(q.to_vector<double>(), {0.9, 2.0}, ftol(d, 1e-7)));
      // step 2: d = g + 0.5 q = (0.95, 0); buf = 0.9 * (1, 0) + d = (1.85, 0); q -= 0.1 buf
      mom.zero_grad();
      set_gradient(q, c);
      CHECK(q.grad().to_vector<double>() == std::vector<double>{0.5, -1});
      mom.step();
      CHECK(allclose(q.to_vector<double>(), {0.9 - 0.185, 2.0}, ftol(d, 1e-7)));
      CHECK(q.grad().to_vector<double>() == std::vector<double>{0.5, -1});  // weight decay left .grad alone
    });
  }

  TEST_CASE("adamw matches the reference update and skips parameters without gradients") {
    for_each_backend([](Device d) {
      std::vector<float> init = {1.0f, -2.0f, 0.5f};
      Tensor p = f32(init, {3}, d).set_requires_grad();
      Tensor frozen = f32({7, 8}, {2}, d).set_requires_grad();
      nn::AdamWOptions o;
      o.lr = 0.01f;
      o.weight_decay = 0.1f;
      nn::AdamW opt({p, frozen}, o);
      std::vector<std::vector<double>> grads = {{0.3, -0.2, 1.5}, {-0.1, -0.4, 2.0}, {0.05, 0.3, -1.0}};
      HostAdamW ref(init);
      for (int t = 1; t <= 3; ++t) {
        opt.zero_grad();
        std::vector<float> gf(grads[size_t(t - 1)].begin(), grads[size_t(t - 1)].end());
        set_gradient(p, f32(gf, {3}, d));
        opt.step();
        ref.step(gf, o.lr, o.weight_decay, o);
        INFO("step " << t);
        CHECK(allclose(p.to_vector<double>(), ref.p, 1e-5, 1e-6));
      }
      CHECK(opt.step_count() == 3);
      CHECK(frozen.to_vector<float>() == std::vector<float>{7, 8});
      opt.set_lr(0.0f);
      CHECK(opt.lr() == 0.0f);
      std::vector<float> before = p.to_vector<float>();
      set_gradient(p, f32({1, 1, 1}, {3}, d));
      opt.step();  // lr 0: no movement, not even weight decay
      CHECK(p.to_vector<float>() == before);
    });
  }

  TEST_CASE("adamw accepts a non-contiguous gradient") {
    Tensor p = f32({1, 2, 3, 4, 5, 6}, {2, 3}).set_requires_grad();
    Tensor c = f32({1, -1, 1, -1, 1, -1}, {3, 2});
    p.set_grad(c.t());  // a transposed view: (1, 1, 1) over (-1, -1, -1)
    nn::AdamW opt({p}, {0.1f, 0.9f, 0.999f, 1e-8f, 0.0f});
    opt.step();
    // first step: p -= lr * sign(g)
    CHECK(allclose(p.to_vector<double>(), {0.9, 1.9, 2.9, 4.1, 5.1, 6.1}, 1e-5));
  }

  TEST_CASE("optim: sgd parameter groups use their own lr and weight decay, scaled by the multiplier") {
    for_each_backend([](Device d) {
      Tensor p = fdata({1, -2}, {2}, d).set_requires_grad();
      Tensor q = fdata({3}, {1}, d).set_requires_grad();
      nn::Sgd opt({nn::ParamGroup{{p}, {"p"}, 0.1f, 0.5f}, nn::ParamGroup{{q}, {}, 0.01f, 0.0f}});
      CHECK(opt.groups()[0].names == std::vector<std::string>{"p"});
      CHECK(opt.groups()[1].names == std::vector<std::string>{"g1.0"});  // default name
      REQUIRE(opt.params().size() == 2);
      CHECK(opt.params()[1].impl() == q.impl());
      const double lr0 = double(0.1f), wd0 = double(0.5f), lr1 = double(0.01f);
      p.set_grad(fdata({0.5, 0.25}, {2}, d));
      q.set_grad(fdata({-2}, {1}, d));
      opt.step();
      // p -= lr0 * (g + wd0 * p); q -= lr1 * g (group 1 has no weight decay)
      std::vector<double> ep = {1 - lr0 * (0.5 + wd0 * 1), -2 - lr0 * (0.25 + wd0 * -2)}, eq = {3 + lr1 * 2};
      CHECK(allclose(p.to_vector<double>(), ep, ftol(d, 1e-12)));
      CHECK(allclose(q.to_vector<double>(), eq, ftol(d, 1e-12)));
      opt.set_lr_multiplier(0.5);  // what a schedule does: every group's effective lr halves
      CHECK(opt.lr(0) == float(lr0 * 0.5));
      CHECK(opt.lr(1) == float(lr1 * 0.5));
      opt.step();  // the gradients are still set
      for (size_t i = 0; i < 2; ++i) ep[i] -= 0.5 * lr0 * (std::vector<double>{0.5, 0.25}[i] + wd0 * ep[i]);
      eq[0] -= 0.5 * lr1 * -2;
      CHECK(allclose(p.to_vector<double>(), ep, ftol(d, 1e-12)));
      CHECK(allclose(q.to_vector<double>(), eq, ftol(d, 1e-12)));
      opt.set_lr(0.2f);  // every group's base lr; the multiplier stays
      CHECK(opt.lr(0) == float(double(0.2f) * 0.5));
      CHECK(opt.lr(1) == float(double(0.2f) * 0.5));
      CHECK(opt.groups()[0].weight_decay == 0.5f);
      CHECK(invalid_argument_of([&] { (void)opt.lr(2); }) == "[optim] group 2 does not exist (2 groups)");
    });
  }

  TEST_CASE("optim: adamw groups with their own lr and decay, bias correction per parameter") {
    for_each_backend([](Device d) {
      std::vector<float> pi = {1.0f, -2.0f, 0.5f}, qi = {0.25f, 4.0f};
      Tensor p = f32(pi, {3}, d).set_requires_grad(), q = f32(qi, {2}, d).set_requires_grad();
      const nn::AdamWOptions o{0.0f, 0.8f, 0.99f, 1e-8f, 0.0f};  // betas and eps; lr and decay come from the groups
      nn::AdamW opt({nn::ParamGroup{{p}, {"p"}, 0.01f, 0.1f}, nn::ParamGroup{{q}, {"q"}, 0.03f, 0.0f}}, o);
      HostAdamW hp(pi), hq(qi);
      // step 1: only p has a gradient
      p.set_grad(f32(grad_values(3, 1), {3}, d));
      opt.step();
      hp.step(grad_values(3, 1), double(0.01f), double(0.1f), o);
      CHECK(allclose(p.to_vector<double>(), hp.p, 1e-5, 1e-6));
      CHECK(q.to_vector<float>() == qi);
      // step 2 at half the lr: q's first update, so its bias correction uses t = 1 (torch counts per parameter)
      opt.set_lr_multiplier(0.5);
      p.set_grad(f32(grad_values(3, 2), {3}, d));
      q.set_grad(f32(grad_values(2, 2), {2}, d));
      opt.step();
      hp.step(grad_values(3, 2), 0.5 * double(0.01f), double(0.1f), o);
      hq.step(grad_values(2, 2), 0.5 * double(0.03f), 0.0, o);
      CHECK(allclose(p.to_vector<double>(), hp.p, 1e-5, 1e-6));
      CHECK(allclose(q.to_vector<double>(), hq.p, 1e-5, 1e-6));
      CHECK(opt.step_count() == 2);
    });
  }

  TEST_CASE("optim: invalid parameter groups are rejected") {
    Tensor a = f32({1, 2}, {2}).set_requires_grad(), b = f32({3}, {1}).set_requires_grad();
    using Groups = std::vector<nn::ParamGroup>;
    CHECK(invalid_argument_of([&] {
            nn::Sgd s(Groups{{{a, b}, {"a"}, 0.1f, 0.0f}});
          }) == "[optim] group 0 has 1 names for 2 parameters");
    CHECK(invalid_argument_of([&] {
            nn::Sgd s(Groups{{{a}, {}, 0.1f, 0.0f}, {{a}, {}, 0.1f, 0.0f}});
          }) == "[optim] parameter 'g1.0' appears twice");
    CHECK(invalid_argument_of([&] {
            nn::AdamW s(Groups{{{a}, {"w"}, 0.1f, 0.0f}, {{b}, {"w"}, 0.1f, 0.0f}}, {});
          }) == "[optim] duplicate parameter name 'w'");
    CHECK(invalid_argument_of([&] { nn::Sgd s({a}, -0.5f); }) == "[optim] lr must be >= 0, got -0.5");
    CHECK(invalid_argument_of([&] { nn::Sgd s({mul(a, 2.0)}, 0.1f); }) ==
          "[optim] parameter 'g0.0' is not a leaf tensor");
    CHECK(invalid_argument_of([&] {
            nn::AdamW s({a}, nn::AdamWOptions{0.1f, 0.9f, 1.0f, 1e-8f, 0.0f});
          }) == "[optim] beta2 must be in [0, 1), got 1");
  }

  TEST_CASE("optim: adamw state saved to a safetensors file resumes bit-identically") {
    for_each_backend([](Device d) {
      const nn::AdamWOptions o{0.01f, 0.85f, 0.999f, 1e-8f, 0.05f};
      auto make = [&](Tensor& p, Tensor& q, const std::vector<float>& pv, const std::vector<float>& qv, float lr) {
        p = f32(pv, {2, 3}, d).set_requires_grad();
        q = f32(qv, {4}, d).set_requires_grad();
        return std::make_unique<nn::AdamW>(
            std::vector<nn::ParamGroup>{{{p}, {"layer.w"}, lr, 0.05f}, {{q}, {"layer.b"}, 2 * lr, 0.0f}}, o);
      };
      auto grads = [&](Tensor& p, Tensor& q, int k, bool with_q) {
        p.set_grad(f32(grad_values(6, k), {2, 3}, d));
        if (with_q) q.set_grad(f32(grad_values(4, k), {4}, d));
      };
      Tensor p1, q1;
      auto a1 = make(p1, q1, grad_values(6, 10), grad_values(4, 11), 0.01f);
      for (int k = 1; k <= 3; ++k) {  // q gets gradients on steps 1 and 3 only: per-parameter counts 3 and 2
        if (k == 2) a1->set_lr_multiplier(0.7);
        grads(p1, q1, k, k != 2);
        a1->step();
        a1->zero_grad();
      }
      auto [ts, meta] = round_trip(*a1);
      CHECK(ts.size() == 4);
      for (auto k : {"layer.b.exp_avg", "layer.b.exp_avg_sq", "layer.w.exp_avg", "layer.w.exp_avg_sq"})
        CHECK(ts.count(k) == 1);
      CHECK(meta["type"] == "adamw");
      CHECK(meta["steps"]["layer.w"] == 3);
      CHECK(meta["steps"]["layer.b"] == 2);

      // a2 resumes from the file; a3 starts from the same parameters and settings without the moments.
      Tensor p2, q2, p3, q3;
      auto a2 = make(p2, q2, p1.to_vector<float>(), q1.to_vector<float>(), 0.5f);
      auto a3 = make(p3, q3, p1.to_vector<float>(), q1.to_vector<float>(), 0.01f);
      a3->set_lr_multiplier(0.7);
      a2->load_state(ts, meta);
      CHECK(a2->step_count() == 3);
      CHECK(a2->lr_multiplier() == 0.7);
      CHECK(a2->lr(0) == a1->lr(0));  // the saved group lrs win, as torch's load_state_dict
      CHECK(a2->lr(1) == a1->lr(1));
      CHECK(snapshot(*a2) == snapshot(*a1));
      for (int k = 4; k <= 5; ++k)
        for (auto [p, q, a] : {std::tuple{p1, q1, a1.get()}, {p2, q2, a2.get()}, {p3, q3, a3.get()}}) {
          if (k == 5) a->set_lr_multiplier(0.6);
          grads(p, q, k, true);
          a->step();
        }
      CHECK(bits_equal(p2.to_vector<float>(), p1.to_vector<float>()));
      CHECK(bits_equal(q2.to_vector<float>(), q1.to_vector<float>()));
      CHECK(!bits_equal(p3.to_vector<float>(), p1.to_vector<float>()));  // the moments matter
    });
  }

  TEST_CASE("optim: sgd momentum state resumes bit-identically") {
    for_each_backend([](Device d) {
      auto make = [&](Tensor& p, Tensor& q, const std::vector<double>& pv, float momentum) {
        p = fdata(pv, {3}, d).set_requires_grad();
        q = fdata({1, 2}, {2}, d).set_requires_grad();  // never gets a gradient: no momentum buffer
        return std::make_unique<nn::Sgd>(std::vector<nn::ParamGroup>{{{p}, {}, 0.05f, 0.01f}, {{q}, {}, 0.05f, 0.0f}},
                                         momentum);
      };
      auto grad = [&](Tensor& p, int k) { p.set_grad(f32(grad_values(3, k), {3}).to(ftype(d)).to(d)); };
      Tensor p1, q1;
      auto s1 = make(p1, q1, {0.5, -1, 2}, 0.9f);
      for (int k = 1; k <= 2; ++k) {
        grad(p1, k);
        s1->step();
      }
      auto [ts, meta] = round_trip(*s1);
      REQUIRE(ts.size() == 1);
      CHECK(ts.count("g0.0.momentum_buffer") == 1);
      CHECK(meta["type"] == "sgd");
      Tensor p2, q2, p3, q3;
      auto s2 = make(p2, q2, p1.to_vector<double>(), 0.0f);  // the saved momentum is restored
      auto s3 = make(p3, q3, p1.to_vector<double>(), 0.9f);
      s2->load_state(ts, meta);
      CHECK(s2->step_count() == 2);
      for (int k = 3; k <= 4; ++k)
        for (auto [p, s] : {std::pair{p1, s1.get()}, {p2, s2.get()}, {p3, s3.get()}}) {
          grad(p, k);
          s->step();
        }
      CHECK(bits_equal(p2.to_vector<double>(), p1.to_vector<double>()));
      CHECK(!bits_equal(p3.to_vector<double>(), p1.to_vector<double>()));
    });
  }

  TEST_CASE("optim: load_state rejects a mismatched state and leaves the optimizer untouched") {
    for_each_backend([](Device d) {
      Tensor w = f32({1, 2, 3, 4}, {2, 2}, d).set_requires_grad(), b = f32({1, -1}, {2}, d).set_requires_grad();
      nn::AdamW src({nn::ParamGroup{{w, b}, {"w", "b"}, 0.01f, 0.0f}}, {});
      for (int k = 1; k <= 2; ++k) {
        w.set_grad(f32(grad_values(4, k), {2, 2}, d));
        b.set_grad(f32(grad_values(2, k), {2}, d));
        src.step();
      }
      std::map<std::string, Tensor> ts;
      nlohmann::json meta;
      src.save_state(ts, meta);

      Tensor w2 = f32({0, 0, 0, 0}, {2, 2}, d).set_requires_grad(), b2 = f32({0, 0}, {2}, d).set_requires_grad();
      nn::AdamW tgt({nn::ParamGroup{{w2, b2}, {"w", "b"}, 0.02f, 0.0f}}, {});
      w2.set_grad(f32(grad_values(4, 7), {2, 2}, d));
      tgt.step();  // its own state, different from src's
      const Snapshot before = snapshot(tgt);
      // Each case edits a copy of the valid state and expects one error line.
      using T = std::map<std::string, Tensor>&;
      using J = nlohmann::json&;
      auto rejects = [&](auto&& edit, const std::string& msg) {
        std::map<std::string, Tensor> t = ts;
        nlohmann::json m = meta;
        edit(t, m);
        CHECK(invalid_argument_of([&] { tgt.load_state(t, m); }) == msg);
      };
      rejects(
          [](T t, J) {
            t["x.exp_avg"] = t.at("w.exp_avg");
            t.erase("w.exp_avg");
          },
          "[optim] the saved state has no 'w.exp_avg'");
      rejects(
          [](T, J m) {
            m["groups"][0]["names"] = {"x", "b"};
          },
          "[optim] parameter 'w' (group 0) is not in the saved state");
      rejects([](T t, J) { t["b.exp_avg_sq"] = zeros({3}); },
              "[optim] 'b.exp_avg_sq' has shape (3), the parameter (2)");
      rejects([](T t, J) { t["w.exp_avg"] = t.at("w.exp_avg").to(DType::F64); },
              fmt::format("[optim] 'w.exp_avg' has dtype {}, the parameter {}", dtype_name(DType::F64),
                          dtype_name(DType::F32)));
      rejects([](T t, J) { t["v.exp_avg"] = zeros({2}); },
              "[optim] the saved state has tensor 'v.exp_avg' that matches no parameter of this optimizer");
      rejects([](T, J m) { m["steps"].erase("b"); }, "[optim] the saved state has no step count for 'b'");
      rejects([](T, J m) { m["groups"].push_back(m["groups"][0]); },
              "[optim] the saved state has 2 parameter groups, this optimizer 1");
      rejects([](T, J m) { m.erase("multiplier"); }, "[optim] the saved state has no 'multiplier'");
      Tensor s = f32({1, 2, 3, 4}, {2, 2}, d).set_requires_grad(), t = f32({1, 2}, {2}, d).set_requires_grad();
      nn::Sgd sgd({nn::ParamGroup{{s, t}, {"w", "b"}, 0.1f, 0.0f}}, 0.9f);
      std::map<std::string, Tensor> sgd_ts;
      nlohmann::json sgd_meta;
      sgd.save_state(sgd_ts, sgd_meta);
      CHECK(invalid_argument_of([&] { tgt.load_state(sgd_ts, sgd_meta); }) ==
            "[optim] the saved state is for 'sgd', not adamw");
      CHECK(invalid_argument_of([&] { sgd.load_state(ts, meta); }) ==
            "[optim] the saved state is for 'adamw', not sgd");
      CHECK(snapshot(tgt) == before);  // every failure above left it as it was
      CHECK(tgt.step_count() == 1);

      tgt.load_state(ts, meta);  // the untouched state is valid
      CHECK(snapshot(tgt) == snapshot(src));
    });
  }

  TEST_CASE("optim: reset_state zeroes moments or keeps a seeded random subset, keeping the step count") {
    for_each_backend([](Device d) {
      constexpr size_t n = 1000;
      const nn::AdamWOptions o{0.01f, 0.9f, 0.999f, 1e-8f, 0.0f};
      // Optimizers with identical histories: two steps on p and on a second parameter.
      struct Run {
        Tensor p, other;
        std::unique_ptr<nn::AdamW> opt;
      };
      auto run = [&] {
        Run r;
        r.p = f32(grad_values(n, 20), {n}, d).set_requires_grad();
        r.other = f32(grad_values(5, 21), {5}, d).set_requires_grad();
        r.opt = std::make_unique<nn::AdamW>(std::vector<Tensor>{r.p, r.other}, o);
        for (int k = 1; k <= 2; ++k) {
          r.p.set_grad(f32(grad_values(n, k), {n}, d));
          r.other.set_grad(f32(grad_values(5, k), {5}, d));
          r.opt->step();
        }
        return r;
      };
      Run a = run(), b = run(), c = run();
      const Snapshot s0 = snapshot(*a.opt);
      a.opt->reset_state(a.p, 0.5, 7);
      b.opt->reset_state(b.p, 0.5, 7);
      c.opt->reset_state(c.p, 0.5, 8);
      const Snapshot sa = snapshot(*a.opt);
      const auto &m0 = s0.tensors.at("g0.0.exp_avg"), &v0 = s0.tensors.at("g0.0.exp_avg_sq");
      const auto &m = sa.tensors.at("g0.0.exp_avg"), &v = sa.tensors.at("g0.0.exp_avg_sq");
      size_t kept = 0, zeroed = 0, before_zero = 0;
      for (size_t i = 0; i < n; ++i) {
        before_zero += m0[i] == 0.0 || v0[i] == 0.0;
        kept += m[i] == m0[i] && v[i] == v0[i];  // kept in both moments, bit for bit
        zeroed += m[i] == 0.0 && v[i] == 0.0;    // or cleared in both
      }
      REQUIRE(before_zero == 0);
      CHECK(kept + zeroed == n);
      CHECK(kept >= 430);  // Binomial(1000, 0.5): mean 500, sd 15.8
      CHECK(kept <= 570);
      CHECK(sa.tensors.at("g0.1.exp_avg") == s0.tensors.at("g0.1.exp_avg"));  // other parameters untouched
      CHECK(sa.meta == s0.meta);                                              // step counts kept
      CHECK(snapshot(*b.opt) == sa);                                          // deterministic per seed
      CHECK(snapshot(*c.opt).tensors.at("g0.0.exp_avg") != m);                // another seed, another subset
      a.opt->reset_state(a.p, 1.0, 7);
      CHECK(snapshot(*a.opt) == sa);  // keep everything

      // Full reset: zeros, and the next update still uses this parameter's step count (t = 3).
      a.opt->reset_state(a.p, 0.0);
      const Snapshot sz = snapshot(*a.opt);
      CHECK(sz.tensors.at("g0.0.exp_avg") == std::vector<double>(n, 0.0));
      CHECK(sz.tensors.at("g0.0.exp_avg_sq") == std::vector<double>(n, 0.0));
      CHECK(sz.meta["steps"]["g0.0"] == 2);
      HostAdamW ref(a.p.to_vector<float>());  // zero moments, two updates behind it: this one has t = 3
      ref.t = 2;
      a.p.set_grad(f32(grad_values(n, 3), {n}, d));
      a.opt->step();
      ref.step(grad_values(n, 3), o.lr, 0.0, o);
      CHECK(allclose(a.p.to_vector<double>(), ref.p, 1e-5, 1e-6));

      CHECK(invalid_argument_of([&] { a.opt->reset_state(f32({1}, {1}, d)); }) ==
            "[optim] the tensor is not optimised by this optimizer");
      CHECK(invalid_argument_of([&] { a.opt->reset_state(a.p, 1.5); }) ==
            "[optim] keep_fraction must be in [0, 1], got 1.5");
    });
  }

  TEST_CASE("optim: sgd reset_state clears the momentum buffer") {
    for_each_backend([](Device d) {
      Tensor p = fdata({1, 2}, {2}, d).set_requires_grad();
      nn::Sgd opt({p}, 0.1f, 0.9f);
      opt.reset_state(p);  // no buffer yet: nothing to do
      p.set_grad(fdata({0.5, -1}, {2}, d));
      opt.step();
      opt.reset_state(p);
      Snapshot s = snapshot(opt);
      CHECK(s.tensors.at("g0.0.momentum_buffer") == std::vector<double>{0, 0});
      opt.step();  // buf = 0.9 * 0 + g: a plain SGD step from (0.95, 2.1)
      CHECK(allclose(p.to_vector<double>(), {0.95 - double(0.1f) * 0.5, 2.1 + double(0.1f)}, ftol(d, 1e-7)));
    });
  }

  // AROMA retires converged LoRA pairs by taking away their gradients instead of rebuilding the optimizer.
  TEST_CASE("optim: a parameter that stops receiving gradients keeps its value, moments and step count") {
    for_each_backend([](Device d) {
      const nn::AdamWOptions o{0.01f, 0.9f, 0.999f, 1e-8f, 0.1f};  // decay would move p if it were applied
      Tensor p = f32(grad_values(4, 30), {4}, d).set_requires_grad();
      Tensor q = f32(grad_values(3, 31), {3}, d).set_requires_grad();
      nn::AdamW opt({p, q}, o);
      HostAdamW ref(q.to_vector<float>());
      for (int k = 1; k <= 2; ++k) {
        p.set_grad(f32(grad_values(4, k), {4}, d));
        q.set_grad(f32(grad_values(3, k), {3}, d));
        opt.step();
        ref.step(grad_values(3, k), o.lr, o.weight_decay, o);
        opt.zero_grad();
      }
      const std::vector<float> p_before = p.to_vector<float>();
      const Snapshot s0 = snapshot(opt);
      p.set_requires_grad(false);  // retired: no gradient from now on
      for (int k = 3; k <= 5; ++k) {
        q.set_grad(f32(grad_values(3, k), {3}, d));
        opt.step();
        ref.step(grad_values(3, k), o.lr, o.weight_decay, o);
        opt.zero_grad();
      }
      const Snapshot s1 = snapshot(opt);
      CHECK(p.to_vector<float>() == p_before);
      CHECK(s1.tensors.at("g0.0.exp_avg") == s0.tensors.at("g0.0.exp_avg"));
      CHECK(s1.tensors.at("g0.0.exp_avg_sq") == s0.tensors.at("g0.0.exp_avg_sq"));
      CHECK(s1.meta["steps"]["g0.0"] == 2);
      CHECK(s1.meta["steps"]["g0.1"] == 5);  // the other parameter's bias correction goes on
      CHECK(allclose(q.to_vector<double>(), ref.p, 1e-5, 1e-6));
      opt.reset_state(p);  // still optimised here, so its state can be cleared
      CHECK(snapshot(opt).tensors.at("g0.0.exp_avg") == std::vector<double>(4, 0.0));
    });
  }
}

}  // namespace rf::test
