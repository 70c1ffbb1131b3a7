// `rankforge bench ranks`: the planted-rank benchmark. A residual tanh MLP of n square linear modules
// (`blocks.<i>.proj`); a teacher copy gets, in module i, a random update of rank R_i with clearly
// separated singular values; the student starts from the base and is trained on teacher outputs with
// the chosen strategy. Reports the ranks each module ended with, the held-out loss gap to the teacher
// relative to the base's gap, trainable parameters and wall time.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/model.h"
#include "peft/autolora.h"
#include "peft/gelora.h"
#include "peft/linalg.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "peft/twonn.h"
#include "tools/bench_ranks.h"
#include "tools/data.h"

namespace rf::tools {

namespace {

// Two layouts. parallel (default): module i maps its own slice x_i of the input to its own slice of
// the output, y_i = x_i + tanh(W_i x_i + b_i), all trained under one loss: the rank each module needs
// is exactly its planted rank, while the strategies still allocate and reset globally. chain:
// h_i = h_{i-1} + tanh(W_i h_{i-1} + b_i), harder: a module can partly make up for its neighbours.
class PlantedModel : public models::Model {
 public:
  PlantedModel(int64_t n, int64_t d, bool chain, Device dev) : models::Model(make_config(n, d)), chain_(chain), d_(d) {
    auto blocks = std::make_shared<nn::Module>();
    for (int64_t i = 0; i < n; ++i) {
      auto blk = std::make_shared<nn::Module>();
      blk->register_module(
          "proj", std::make_shared<nn::Linear>(d, d, true, nn::Init{.std = 1.0 / std::sqrt(double(d)), .device = dev}));
      blocks->register_module(std::to_string(i), blk);
    }
    register_module("blocks", blocks);
    n_ = n;
  }
  Tensor forward(const models::ModelInputs&, models::KVCache*) override {
    throw std::logic_error("[bench ranks] the planted model takes real-valued inputs: use run()");
  }
  int64_t width() const { return chain_ ? d_ : n_ * d_; }
  // (B, width) -> (B, width). hidden: chain: h_0..h_n; parallel: per module its input and output.
  Tensor run(const Tensor& x, std::vector<Tensor>* hidden = nullptr) {
    if (!chain_) {
      std::vector<Tensor> outs;
      for (int64_t i = 0; i < n_; ++i) {
        Tensor xi = narrow(x, 1, i * d_, d_);
        outs.push_back(add(xi, tanh(find(fmt::format("blocks.{}.proj", i))->forward(xi))));
        if (hidden) hidden->insert(hidden->end(), {xi, outs.back()});
      }
      return cat(outs, 1);
    }
    Tensor h = x;
    if (hidden) hidden->push_back(h);
    for (int64_t i = 0; i < n_; ++i) {
      h = add(h, tanh(find(fmt::format("blocks.{}.proj", i))->forward(h)));
      if (hidden) hidden->push_back(h);
    }
    return h;
  }

 private:
  static models::ModelConfig make_config(int64_t n, int64_t d) {
    models::ModelConfig c;
    c.model_type = "planted";
    c.hidden_size = d;
    c.num_layers = n;
    return c;
  }
  bool chain_;
  int64_t d_, n_ = 0;
};

std::vector<int64_t> parse_ranks(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const int64_t r = std::stoll(item, &used);
      if (used != item.size() || r < 0) throw std::invalid_argument("");
      out.push_back(r);
    } catch (const std::exception&) {
      throw std::invalid_argument(fmt::format("[bench ranks] --planted: '{}' is not a non-negative integer", item));
    }
  }
  if (out.empty()) throw std::invalid_argument("[bench ranks] --planted needs at least one rank");
  return out;
}

// Spearman's rank correlation with average ranks for ties; NaN when either side is constant.
double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> idx(v.size());
    for (size_t i = 0; i < v.size(); ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) { return v[x] < v[y]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size();) {
      size_t j = i;
      while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * double(i + j);
      i = j + 1;
    }
    return r;
  };
  auto constant = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [&](double x) { return x == v[0]; });
  };
  if (a.empty() || constant(a) || constant(b)) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> ra = ranks(a), rb = ranks(b);
  const double n = double(a.size());
  double ma = 0, mb = 0;  // summed, then divided: sum(r / n) leaves round-off that made a constant side 0
  for (size_t i = 0; i < a.size(); ++i) ma += ra[i], mb += rb[i];
  ma /= n, mb /= n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// RoSA's case: every module's teacher also gets S with int(density * d^2) entries at distinct random
// positions (seeded with the run), values N(0, sparse_scale^2): high-rank, so a LoRA of the same
// parameter count cannot represent it, while a sparse adapter on the right support can.
void add_sparse_updates(PlantedModel& teacher, int64_t n, int64_t d, const BenchRanksArgs& a, Device dev) {
  const int64_t nnz = int64_t(a.sparse_density * double(d * d));
  for (int64_t i = 0; i < n; ++i) {
    auto& lin = dynamic_cast<nn::Linear&>(*teacher.find(fmt::format("blocks.{}.proj", i)));
    Tensor pos = topk(rand({d * d}, 0.0, 1.0, DType::F32, dev), nnz).second;  // nnz distinct positions
    const std::vector<float> vals = randn({nnz}, 0.0, a.sparse_scale, DType::F32, dev).to_vector<float>();
    std::vector<float> dense(size_t(d * d), 0.0f);
    const std::vector<int64_t> at = pos.to_vector<int64_t>();
    for (size_t e = 0; e < at.size(); ++e) dense[size_t(at[e])] = vals[e];
    lin.weight().add_(from_data(dense, {d, d}).to(dev));
  }
}

}  // namespace

double rank_spearman(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  return spearman(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()));
}

BenchRanksResult run_bench_ranks(const BenchRanksArgs& a, Device dev) {
  const std::vector<int64_t> planted = parse_ranks(a.planted);
  const int64_t n = int64_t(planted.size()), d = a.dim;
  for (int64_t r : planted)
    if (r > d)
      throw std::invalid_argument(fmt::format("[bench ranks] planted rank {} exceeds the module size {}", r, d));
  manual_seed(uint64_t(a.seed));
  const bool chain = a.layout == "chain";
  if (!chain && a.layout != "parallel")
    throw std::invalid_argument(fmt::format("[bench ranks] --layout '{}' is not chain or parallel", a.layout));
  PlantedModel student(n, d, chain, dev);
  PlantedModel teacher(n, d, chain, dev);
  const int64_t w = student.width();
  {  // teacher = base + U diag(sigma) V^T per module; sigma_k = scale * 0.75^k (clearly separated)
    NoGradGuard ng;
    auto sd = student.state_dict();
    for (auto& [k, t] : teacher.state_dict()) t.copy_(sd.at(k));
    for (int64_t i = 0; i < n; ++i) {
      if (planted[size_t(i)] == 0) continue;
      auto& lin = dynamic_cast<nn::Linear&>(*teacher.find(fmt::format("blocks.{}.proj", i)));
      const int64_t r = planted[size_t(i)];
      Tensor u = peft::qr(randn({d, r}, 0, 1, DType::F32, dev)).first;  // (d, r) orthonormal columns
      Tensor v = peft::qr(randn({d, r}, 0, 1, DType::F32, dev)).first;
      std::vector<float> sig;
      for (int64_t k = 0; k < r; ++k) sig.push_back(float(a.sigma * std::pow(0.75, double(k))));
      Tensor s = from_data(sig, {1, r}).to(dev);
      lin.weight().add_(matmul(mul(u, s), v.t()));
    }
    if (a.sparse_density > 0) add_sparse_updates(teacher, n, d, a, dev);
  }
  student.set_requires_grad(false);
  teacher.set_requires_grad(false);
  // Inputs and teacher outputs: a fixed training pool and a held-out set.
  Tensor xtr = randn({a.train_examples, w}, 0, 1, DType::F32, dev), xva = randn({512, w}, 0, 1, DType::F32, dev);
  Tensor ytr, yva;
  {
    NoGradGuard ng;
    ytr = teacher.run(xtr);
    yva = teacher.run(xva);
    // Label noise on the pool only (AutoLoRA's held-out split is carved from it, as the official
    // train_test_split of the noisy train set); the gap is measured on clean teacher outputs.
    if (a.noise > 0) ytr = add(ytr, randn(ytr.shape(), 0, a.noise, DType::F32, dev));
  }
  auto heldout_gap = [&] {
    NoGradGuard ng;
    return mean(square(sub(student.run(xva), yva))).item();
  };
  const double base_gap = heldout_gap();

  peft::PeftModel pm(student);
  StrategySetup setup = make_bench_strategy(a, n);
  if (a.strategy == "gelora") {  // ranks from TwoNN on the base's activations over the inputs
    std::vector<Tensor> hs;
    {
      NoGradGuard ng;
      student.run(narrow(xtr, 0, 0, std::min<int64_t>(a.train_examples, 2000)), &hs);
    }
    std::vector<double> ids;
    for (auto& h : hs) ids.push_back(peft::twonn(h));
    std::vector<int64_t> r;
    if (chain) {
      r = peft::gelora_rank_rule(ids, peft::GeLoraRankRule{});
    } else {  // each module: output ID minus input ID
      for (int64_t i = 0; i < n; ++i)
        r.push_back(peft::gelora_rank_rule({ids[size_t(2 * i)], ids[size_t(2 * i + 1)]}, {})[0]);
    }
    for (int64_t i = 0; i < n; ++i)
      setup.config.rank_pattern.emplace_back(fmt::format("blocks.{}.proj", i), r[size_t(i)]);
  }
  pm.add_adapter("default", setup.config);
  peft::TrainerOptions o;
  o.lr = float(setup.lr);
  o.max_grad_norm = 1.0;
  o.schedule = setup.schedule;
  o.schedule.total_steps = a.steps;
  peft::TrainerOptions search_o = o;  // AutoLoRA's search may decay A/B; every other run (and the retrain) does not
  if (a.strategy == "autolora") search_o.weight_decay = float(a.search_weight_decay);
  peft::Trainer tr(student, &pm, std::move(setup.strategy), search_o);
  const int64_t initial_trainable = tr.trainable_count();
  const auto t0 = std::chrono::steady_clock::now();
  tr.begin();
  // AutoLoRA: A/B train on a seeded 70% of the pool, α on the other 30% (one held-out batch a step).
  const bool autolora = a.strategy == "autolora";
  Tensor tr_rows, va_rows;
  if (autolora) {
    IndexSplit sp = split_indices(a.train_examples, 0.3, uint64_t(a.seed));
    tr_rows = from_data(sp.train, {int64_t(sp.train.size())}).to(dev);
    va_rows = from_data(sp.held_out, {int64_t(sp.held_out.size())}).to(dev);
  }
  auto draw = [&](const Tensor& rows) {  // batch row indices into the pool (all of it when rows is undefined)
    const int64_t n_rows = rows.defined() ? rows.size(0) : a.train_examples;
    Tensor idx = rand({a.batch}, 0.0, double(n_rows) - 0.5, DType::F32, dev).to(DType::I64);
    return rows.defined() ? index_select(rows, 0, idx) : idx;
  };
  int64_t step = 0;
  for (; step < a.steps && !tr.strategy_done(); ++step) {
    Tensor idx = draw(tr_rows);
    Tensor xb = index_select(xtr, 0, idx), yb = index_select(ytr, 0, idx);
    Tensor xv, yv;
    peft::BatchLoss val;
    if (autolora) {
      Tensor vidx = draw(va_rows);
      xv = index_select(xtr, 0, vidx), yv = index_select(ytr, 0, vidx);
      val = [&] { return mean(square(sub(student.run(xv), yv))); };
    }
    tr.step({[&] { return mean(square(sub(student.run(xb), yb))); }}, val);
  }
  tr.finish();
  int64_t final_trainable = tr.trainable_count();
  if (autolora) {  // the retrain: plain LoRA with the found ranks, from the base, on the whole pool
    const auto ranks = dynamic_cast<peft::AutoLoraStrategy&>(tr.strategy()).selected_ranks();
    pm.unload();
    peft::PeftModel retrain(student);
    retrain.add_adapter("default", peft::autolora_retrain_config(setup.config, ranks, setup.config.lora_alpha));
    peft::Trainer tr2(student, &retrain, nullptr, o);
    for (int64_t i = 0; i < a.steps; ++i, ++step) {
      Tensor idx = draw(Tensor());
      Tensor xb = index_select(xtr, 0, idx), yb = index_select(ytr, 0, idx);
      tr2.step({[&] { return mean(square(sub(student.run(xb), yb))); }});
    }
    final_trainable = tr2.trainable_count();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  BenchRanksResult res;
  res.planted = planted;
  std::map<std::string, int64_t> found;
  for (auto& mr : tr.strategy().rank_report(pm)) found[mr.module] = mr.rank;
  for (int64_t i = 0; i < n; ++i) {
    const std::string m = fmt::format("blocks.{}.proj", i);
    res.found.push_back(found.count(m) ? found.at(m) : 0);
  }
  res.gap_ratio = heldout_gap() / base_gap;
  res.trainable_params = final_trainable;
  res.initial_trainable_params = initial_trainable;
  res.seconds = secs;
  res.steps = step;
  res.budget = setup.budget;
  if (a.strategy == "rosa") {
    res.effective_params = final_trainable;  // its LoRA at the capacity plus the sparse values
  } else {
    for (int64_t f : res.found) res.effective_params += f * 2 * d + (a.strategy == "adalora" ? f : 0);
  }
  if (a.match_params) {  // the same teacher and seed: run_bench_ranks regenerates both from a.seed
    BenchRanksArgs l = a;
    l.strategy = "lora";
    l.match_params = false;
    l.lr = 0;
    res.lora_rank = std::min<int64_t>(d, res.effective_params / (n * 2 * d));
    if (res.lora_rank == 0) {
      res.lora_gap_ratio = 1;  // no LoRA fits in the budget: the base itself
    } else {
      l.capacity = res.lora_rank;
      res.lora_gap_ratio = run_bench_ranks(l, dev).gap_ratio;
    }
  }
  return res;
}

}  // namespace rf::tools
