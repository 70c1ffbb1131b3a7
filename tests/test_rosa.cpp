// RoSA's pure pieces (peft/rosa.h) against specs/methods.md §3.6: the mask is the exact top-k of
// the mean squared micro-batch gradient (brute-force f64 reference below), ties go to the lower
// flat index, density_pattern, the schedule agenda per step, the save layout round trip, and
// one-line "[rosa]" errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "peft/rosa.h"

using namespace rf;
using namespace rf::peft;

namespace {

// The message of the invalid_argument f throws; fails the test when it throws nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  FAIL("no exception");
  return {};
}

void check_one_line_rosa(const std::string& msg) {
  CHECK(msg.starts_with("[rosa] "));
  CHECK(msg.find('\n') == std::string::npos);
}

// Flat row-major indices of the support.
std::vector<int64_t> support(const Csr& s) {
  std::vector<int64_t> f;
  for (int64_t r = 0; r < s.rows; ++r)
    for (int32_t e = s.row_ptr[size_t(r)]; e < s.row_ptr[size_t(r + 1)]; ++e)
      f.push_back(r * s.cols + s.col_idx[size_t(e)]);
  return f;
}

// Naive reference: the mean of G_b² over micro-batches, then every index sorted by (score desc,
// index asc) with a full stable sort, first k = floor(d·numel) taken, returned ascending.
std::vector<int64_t> reference_mask(const std::vector<std::vector<float>>& grads, double d) {
  const size_t n = grads[0].size();
  std::vector<double> mean(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    double acc = 0;
    for (const auto& g : grads) acc += double(g[i]) * double(g[i]);
    mean[i] = acc / double(grads.size());
  }
  std::vector<int64_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = int64_t(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return mean[size_t(a)] > mean[size_t(b)]; });
  int64_t k = 0;
  while (double(k + 1) <= d * double(n)) ++k;  // largest k with k <= d·n: Python int() of a positive float
  idx.resize(size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("rosa mask is the top-k of the mean squared micro-batch gradient") {
    std::mt19937 gen(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto [out, in, batches] : {std::tuple{7, 11, 3}, std::tuple{16, 5, 1}, std::tuple{3, 40, 4}}) {
      std::vector<std::vector<float>> grads;
      RosaGradAccumulator acc(out, in, RosaGradAccMode::MeanSquared);
      for (int b = 0; b < batches; ++b) {
        std::vector<float> g(size_t(out * in));
        for (float& x : g) x = nd(gen);
        grads.push_back(g);
        acc.add(from_data<float>(g, Shape{out, in}));  // through the Tensor entry point
      }
      CHECK(acc.count() == batches);
      for (double d : {0.003, 0.05, 0.1, 0.29, 0.5, 0.999}) {
        CAPTURE(out);
        CAPTURE(in);
        CAPTURE(d);
        const Csr m = rosa_mask(acc, d);
        CHECK(m.rows == out);
        CHECK(m.cols == in);
        CHECK(m.nnz() == int64_t(d * double(out * in)));
        CHECK(std::all_of(m.values.begin(), m.values.end(), [](float v) { return v == 0.0f; }));
        CHECK(support(m) == reference_mask(grads, d));
      }
    }
  }

  TEST_CASE("rosa nnz truncates d*numel (Python int), never rounds") {
    CHECK(rosa_nnz(0.29, 10, 10) == 28);     // 0.29*100 = 28.999999999999996
    CHECK(rosa_nnz(0.003, 100, 100) == 30);  // 30.000000000000004
    CHECK(rosa_nnz(0.018, 4096, 4096) == 301989);
    CHECK(rosa_nnz(0.5, 3, 3) == 4);
    CHECK(rosa_nnz(0.0, 5, 5) == 0);
    CHECK(rosa_nnz(1.0, 5, 7) == 35);
    check_one_line_rosa(error_of([] { rosa_nnz(1.5, 2, 2); }));
    check_one_line_rosa(error_of([] { rosa_nnz(-0.1, 2, 2); }));
  }

  TEST_CASE("rosa mask ties go to the lower flat index") {
    // All equal: the first k indices in row-major order.
    std::vector<double> flat(12, 2.5);
    CHECK(support(rosa_topk_mask(flat, 3, 4, 0.5)) == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
    // One clear winner at the end, then a tie among the rest broken by index; signs ignored (|.|).
    std::vector<double> s = {1, 1, 3, 1, -3, 1, 1, 5};
    CHECK(support(rosa_topk_mask(s, 2, 4, 0.5)) == std::vector<int64_t>{0, 2, 4, 7});
    // Same tie through the accumulator: two micro-batches whose squares average to equal scores.
    RosaGradAccumulator acc(2, 2, RosaGradAccMode::MeanSquared);
    acc.add(std::vector<float>{1, -2, 2, 0});
    acc.add(std::vector<float>{-1, 0, 0, 2});  // means: 1, 2, 2, 2
    CHECK(support(rosa_mask(acc, 0.5)) == std::vector<int64_t>{1, 2});
    CHECK(support(rosa_mask(acc, 0.75)) == std::vector<int64_t>{1, 2, 3});
  }

  TEST_CASE("rosa mask edge densities and mean mode") {
    std::vector<double> s = {0.5, -4, 2, 0, 1, 3};
    const Csr empty = rosa_topk_mask(s, 2, 3, 0.0);
    CHECK(empty.nnz() == 0);
    CHECK(empty.row_ptr == std::vector<int32_t>{0, 0, 0});
    const Csr full = rosa_topk_mask(s, 2, 3, 1.0);
    CHECK(full.row_ptr == std::vector<int32_t>{0, 3, 6});
    CHECK(full.col_idx == std::vector<int32_t>{0, 1, 2, 0, 1, 2});
    // 'mean' mode ranks |mean G|: +3 and -3 cancel at index 0.
    RosaGradAccumulator acc(1, 3, parse_grad_acc_mode("mean"));
    acc.add(std::vector<float>{3, 1, -2});
    acc.add(std::vector<float>{-3, 1, 0});  // means: 0, 1, -1
    CHECK(acc.collected() == std::vector<double>{0.0, 1.0, -1.0});
    CHECK(support(rosa_mask(acc, 0.67)) == std::vector<int64_t>{1, 2});
    CHECK(parse_grad_acc_mode("mean_squared") == RosaGradAccMode::MeanSquared);
  }

  TEST_CASE("rosa density_pattern: first matching key wins, like rank_pattern") {
    const std::vector<std::pair<std::string, double>> pat = {
        {"q_proj", 0.5}, {"layers\\.1\\.v_proj", 0.25}, {"v_proj", 0.1}};
    CHECK(rosa_density_for(0.01, pat, "model.layers.0.self_attn.q_proj") == 0.5);
    CHECK(rosa_density_for(0.01, pat, "model.layers.1.v_proj") == 0.25);
    CHECK(rosa_density_for(0.01, pat, "model.layers.2.v_proj") == 0.1);
    CHECK(rosa_density_for(0.01, pat, "model.layers.2.k_proj") == 0.01);
    CHECK(rosa_density_for(0.01, pat, "model.layers.2.xq_proj") == 0.01);  // a suffix must follow a '.'
    // The per-module density drives k.
    std::vector<double> s(20);
    for (size_t i = 0; i < s.size(); ++i) s[i] = double(i);
    CHECK(rosa_topk_mask(s, 4, 5, rosa_density_for(0.01, pat, "a.q_proj")).nnz() == 10);
    check_one_line_rosa(error_of([&] { rosa_density_for(0.01, {{"q_proj", 2.0}}, "a.q_proj"); }));
  }

  TEST_CASE("rosa schedule agenda per step") {
    using V = std::vector<std::string>;
    // §3.6 test 6: wl64, spa_num_grads = 1.
    const RosaSchedule wl = parse_rosa_schedule("wl64", 0.003, 1);
    CHECK(wl.agenda(0).names() == V{"lora"});
    CHECK(wl.agenda(63).names() == V{"lora"});
    CHECK(wl.agenda(64).names() == V{"lora", "grad_collection"});
    CHECK(wl.agenda(65).names() == V{"lora", "spa"});
    CHECK(wl.agenda(1000).names() == V{"lora", "spa"});
    CHECK_FALSE(wl.agenda(63).generate_masks_after);
    CHECK(wl.agenda(64).generate_masks_after);
    CHECK_FALSE(wl.agenda(65).generate_masks_after);

    // Several collection steps: masks only after the last one.
    const RosaSchedule wl3 = parse_rosa_schedule("wl2", 0.01, 3);
    for (int64_t st = 0; st < 8; ++st) {
      CAPTURE(st);
      const RosaAgenda a = wl3.agenda(st);
      CHECK(a.lora);
      CHECK(a.grad_collection == (st >= 2 && st < 5));
      CHECK(a.spa == (st >= 5));
      CHECK(a.generate_masks_after == (st == 4));
    }

    for (const char* name : {"default", "df", "wl0"}) {
      const RosaSchedule d = parse_rosa_schedule(name, 0.01, 1);
      CHECK(d.agenda(0).names() == V{"lora", "grad_collection"});
      CHECK(d.agenda(0).generate_masks_after);
      CHECK(d.agenda(1).names() == V{"lora", "spa"});
    }

    const RosaSchedule lo = parse_rosa_schedule("lora_only", 0.0, 1);
    for (int64_t st : {0, 1, 64, 65}) {
      CHECK(lo.agenda(st).names() == V{"lora"});
      CHECK_FALSE(lo.agenda(st).generate_masks_after);
    }

    const RosaSchedule so = parse_rosa_schedule("spa_only", 0.01, 2);
    CHECK(so.agenda(0).names() == V{"grad_collection"});
    CHECK_FALSE(so.agenda(0).generate_masks_after);
    CHECK(so.agenda(1).generate_masks_after);
    CHECK(so.agenda(2).names() == V{"spa"});

    // mask_load_path: no collection phase; wl still keeps SpA frozen during the warm-up.
    const RosaSchedule ld = parse_rosa_schedule("wl3", 0.01, 1, /*masks_loaded=*/true);
    CHECK(ld.agenda(2).names() == V{"lora"});
    CHECK(ld.agenda(3).names() == V{"lora", "spa"});
    CHECK(parse_rosa_schedule("spa_only", 0.01, 1, true).agenda(0).names() == V{"spa"});
    CHECK(parse_rosa_schedule("default", 0.01, 1, true).agenda(0).names() == V{"lora", "spa"});
  }

  TEST_CASE("rosa schedule strings that are refused") {
    for (const char* bad : {"", "wl", "wl-1", "wlx", "wl6 4", "WL64", "foo", "lora", "wl+5"}) {
      CAPTURE(bad);
      check_one_line_rosa(error_of([&] { parse_rosa_schedule(bad, 0.01, 1); }));
    }
    check_one_line_rosa(error_of([] { parse_rosa_schedule("lora_only", 0.01, 1); }));  // needs d = 0
    check_one_line_rosa(error_of([] { parse_rosa_schedule("spa_only", 0.0, 1); }));    // needs d > 0
    check_one_line_rosa(error_of([] { parse_rosa_schedule("wl64", 0.0, 1); }));
    check_one_line_rosa(error_of([] { parse_rosa_schedule("default", 0.0, 1); }));
    check_one_line_rosa(error_of([] { parse_rosa_schedule("wl4", 0.01, 0); }));  // nothing to collect
    check_one_line_rosa(error_of([] { parse_rosa_schedule("wl4", 1.5, 1); }));
    check_one_line_rosa(error_of([] { parse_grad_acc_mode("sum"); }));
    check_one_line_rosa(error_of([] { parse_rosa_schedule("wl4", 0.01, 1).agenda(-1); }));
  }

  TEST_CASE("rosa gradient accumulator rejects bad inputs") {
    RosaGradAccumulator acc(2, 3, RosaGradAccMode::MeanSquared);
    check_one_line_rosa(error_of([&] { acc.collected(); }));
    check_one_line_rosa(error_of([&] { acc.add(zeros(Shape{3, 2})); }));
    check_one_line_rosa(error_of([&] { acc.add(zeros(Shape{2, 3}, DType::I32)); }));
    check_one_line_rosa(error_of([&] { acc.add(std::vector<float>(5, 0.0f)); }));
    CHECK(acc.count() == 0);
    check_one_line_rosa(error_of([] { RosaGradAccumulator(0, 3, RosaGradAccMode::Mean); }));
    std::vector<double> s = {1, std::nan(""), 0, 2};
    check_one_line_rosa(error_of([&] { rosa_topk_mask(s, 2, 2, 0.5); }));
    check_one_line_rosa(error_of([&] { rosa_topk_mask(s, 2, 3, 0.5); }));
  }

  TEST_CASE("rosa saved layout: keys, file dtypes, Csr -> tensors -> Csr") {
    const std::string mod = "base_model.model.layers.0.self_attn.q_proj";
    CHECK(rosa_key(mod, "rosa_A.weight") == mod + ".rosa_A.weight");
    CHECK(rosa_key(mod, "rosa_spa.col_idx") == mod + ".rosa_spa.col_idx");
    check_one_line_rosa(error_of([&] { rosa_key(mod, "rosa_spa.cols"); }));
    CHECK(rosa_file_dtype("rosa_spa.col_idx", DType::BF16) == safetensors::StDType::I16);
    CHECK(rosa_file_dtype("rosa_spa.row_idx", DType::BF16) == safetensors::StDType::I16);
    CHECK(rosa_file_dtype("rosa_spa.tr_col_idx", DType::BF16) == safetensors::StDType::I16);
    CHECK(rosa_file_dtype("rosa_spa.row_offs", DType::BF16) == safetensors::StDType::I32);
    CHECK(rosa_file_dtype("rosa_spa.tr_perm", DType::BF16) == safetensors::StDType::I32);
    CHECK(rosa_file_dtype("rosa_spa.values", DType::BF16) == safetensors::StDType::BF16);
    CHECK(rosa_file_dtype("rosa_A.weight", DType::F32) == safetensors::StDType::F32);

    // Rows of different lengths (row 1 empty); values exact in bf16.
    const Csr s =
        csr_from_triplets(4, 6, {0, 0, 2, 2, 2, 3}, {1, 5, 0, 3, 4, 2}, {0.5f, -1.0f, 2.0f, 0.25f, -3.0f, 1.5f});
    for (bool tr : {false, true}) {
      CAPTURE(tr);
      const auto t = rosa_spa_to_tensors(s, mod, DType::BF16, tr);
      CHECK(t.size() == (tr ? 8u : 4u));
      for (const auto& f : rosa_spa_fields(tr)) CHECK(t.count(rosa_key(mod, f)) == 1);
      CHECK(t.at(mod + ".rosa_spa.values").dtype() == DType::BF16);
      CHECK(t.at(mod + ".rosa_spa.col_idx").dtype() == DType::I32);
      CHECK(t.at(mod + ".rosa_spa.row_offs").to_vector<int32_t>() == std::vector<int32_t>{0, 2, 2, 5, 6});
      CHECK(t.at(mod + ".rosa_spa.row_idx").to_vector<int32_t>() == std::vector<int32_t>{2, 0, 3, 1});
      const Csr back = rosa_spa_from_tensors(t, mod, 4, 6);
      CHECK(back.row_ptr == s.row_ptr);
      CHECK(back.col_idx == s.col_idx);
      CHECK(back.values == s.values);
    }
    // A mask straight from generation (values 0, empty rows) survives too, at f32.
    std::vector<double> sc(30);
    for (size_t i = 0; i < sc.size(); ++i) sc[i] = double((i * 7) % 11);
    const Csr m = rosa_topk_mask(sc, 5, 6, 0.2);
    const Csr mb = rosa_spa_from_tensors(rosa_spa_to_tensors(m, mod, DType::F32, true), mod, 5, 6);
    CHECK(support(mb) == support(m));
    // row_idx may order equal-length rows either way (torch.argsort need not be stable).
    auto t = rosa_spa_to_tensors(s, mod, DType::F32, false);
    t[mod + ".rosa_spa.row_idx"] = from_data<int32_t>(std::vector<int32_t>{2, 3, 0, 1}, Shape{4});
    CHECK_THROWS_AS(rosa_spa_from_tensors(t, mod, 4, 6), std::invalid_argument);  // 3 has 1 < 2 of row 0
    t[mod + ".rosa_spa.row_idx"] = from_data<int32_t>(std::vector<int32_t>{2, 0, 3, 1}, Shape{4});
    CHECK(rosa_spa_from_tensors(t, mod, 4, 6).nnz() == 6);
  }

  TEST_CASE("rosa saved layout rejects bad tensors with one-line errors") {
    const std::string mod = "m.q_proj";
    const Csr s = csr_from_triplets(3, 4, {0, 0, 2}, {1, 3, 0}, {1.0f, 2.0f, 3.0f});
    const auto good = rosa_spa_to_tensors(s, mod, DType::F32, true);
    auto with = [&](const std::string& field, Tensor v) {
      auto t = good;
      t[mod + "." + field] = v;
      return t;
    };
    auto i32 = [](std::vector<int32_t> v) { return from_data<int32_t>(v, Shape{int64_t(v.size())}); };
    // Descending columns in row 0.
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(with("rosa_spa.col_idx", i32({3, 1, 0})), mod, 3, 4); }));
    // Column out of range, row_offs not ending at nnz, row_idx not a permutation, float indices.
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(with("rosa_spa.col_idx", i32({1, 4, 0})), mod, 3, 4); }));
    check_one_line_rosa(error_of([&] {
      rosa_spa_from_tensors(with("rosa_spa.row_offs", i32({0, 2, 1, 3})), mod, 3, 4);
    }));
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(with("rosa_spa.row_idx", i32({0, 0, 1})), mod, 3, 4); }));
    check_one_line_rosa(error_of([&] {
      rosa_spa_from_tensors(with("rosa_spa.col_idx", from_data<float>(std::vector<float>{1, 3, 0}, Shape{3})), mod, 3,
                            4);
    }));
    // Wrong value count, a stale transpose, a partial transpose, a missing field, wrong shape.
    check_one_line_rosa(error_of([&] {
      rosa_spa_from_tensors(with("rosa_spa.values", from_data<float>(std::vector<float>{1, 2}, Shape{2})), mod, 3, 4);
    }));
    check_one_line_rosa(error_of([&] {
      rosa_spa_from_tensors(with("rosa_spa.tr_col_idx", i32({2, 0, 1})), mod, 3, 4);
    }));
    auto partial = good;
    partial.erase(mod + ".rosa_spa.tr_perm");
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(partial, mod, 3, 4); }));
    auto missing = good;
    missing.erase(mod + ".rosa_spa.row_idx");
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(missing, mod, 3, 4); }));
    check_one_line_rosa(error_of([&] { rosa_spa_from_tensors(good, mod, 3, 5); }));
    // spops' int16 indices limit each dimension to 32767.
    Csr wide;
    wide.rows = 2;
    wide.cols = kRosaMaxDim + 1;
    wide.row_ptr = {0, 0, 0};
    const std::string e = error_of([&] { rosa_spa_to_tensors(wide, mod, DType::F32, false); });
    check_one_line_rosa(e);
    CHECK(e.find("32767") != std::string::npos);
    wide.cols = kRosaMaxDim;  // the largest that fits
    CHECK(rosa_spa_to_tensors(wide, mod, DType::F32, false).size() == 4);
    check_one_line_rosa(error_of([&] { rosa_spa_to_tensors(s, mod, DType::I32, false); }));
  }

}  // TEST_SUITE
