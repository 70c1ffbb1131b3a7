#include "tools/train_run.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/safetensors.h"
#include "models/loss.h"
#include "models/tokenizer.h"
#include "peft/autolora.h"
#include "peft/method.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "tools/plot.h"
#include "tools/progress.h"
#include "tools/run_files.h"
#include "tools/train_checkpoint.h"
#include "tools/train_load.h"

namespace rf::tools {

namespace fs = std::filesystem;

namespace {

std::string signal_name(int sig) {
  return sig == SIGINT    ? "SIGINT"
         : sig == SIGTERM ? "SIGTERM"
         : sig == SIGHUP  ? "SIGHUP"
                          : fmt::format("signal {}", sig);
}

}  // namespace

namespace {

void log_line(const std::string& line) { fmt::print(stderr, "{}\n", line); }

// Fault injection for the data-parallel failure tests: RANKFORGE_FAULT_KILL=R:S makes rank R kill
// itself (SIGKILL, no cleanup) right after step S, as a crashed node would.
void kill_if_asked(int rank, int64_t step) {
  static const char* spec = std::getenv("RANKFORGE_FAULT_KILL");
  if (!spec || !*spec) return;
  int r = -1;
  long long s = -1;
  if (std::sscanf(spec, "%d:%lld", &r, &s) == 2 && r == rank && s == step) ::raise(SIGKILL);
}

// The method's adapter and strategy (peft::setup_method) with the run's task settings; GeLoRA's probe
// runs the frozen model over training examples drawn with the run's seed, 16 a batch.
peft::MethodSetup setup_method(const TrainConfig& c, models::Model& m, const Dataset& ds, Device d,
                               int64_t total_steps) {
  const bool cls = ds.classification();
  peft::MethodConfig mc = c;
  if (!mc.lora.task_type) mc.lora.task_type = cls ? "SEQ_CLS" : "CAUSAL_LM";
  if (cls && mc.lora.modules_to_save.empty() && m.find("classifier"))
    mc.lora.modules_to_save = {"classifier"};  // as PEFT for SEQ_CLS
  auto probe = [&ds, d, seed = c.seed](int64_t n) {
    // n training rows drawn at random with the run's seed (not the file's first n rows)
    const std::vector<int64_t> pick = BatchSampler(int64_t(ds.train.size()), n, seed + 2, true, false).next();
    std::vector<models::ModelInputs> batches;
    for (int64_t i = 0; i < n; i += 16) {
      std::vector<int64_t> rows(pick.begin() + i, pick.begin() + std::min(n, i + 16));
      Batch b = make_batch(ds, ds.train, rows, d);
      batches.push_back(models::ModelInputs{b.input_ids, b.attention_mask, {}, {}});
    }
    return batches;
  };
  return peft::setup_method(mc, {.model = m,
                                 .total_steps = total_steps,
                                 .train_examples = int64_t(ds.train.size()),
                                 .probe_inputs = probe,
                                 .log = log_line});
}

// One training run; steps_run (optional) receives the steps this process ran (AutoLoRA's two phases
// share --stop-after). write_config: the phase's own config.yaml (phases in a subfolder).
int run_train_phase(const TrainConfig& c, bool resume, Device d, int64_t stop_after, int64_t* steps_run,
                    bool write_config) {
  manual_seed(c.seed);
  Loaded l;
  dist::agreed([&] { l = load_all(c, d); });  // mpirun: a bad model or data file ends each rank with one line
  l.model->set_gradient_checkpointing(c.gradient_checkpointing);
  models::Model& m = *l.model;
  const bool cls = l.ds.classification();
  // AutoLoRA's search: A/B train on 70% of the training split, α on the other 30% (methods.md §2.2),
  // one held-out batch per step in a seeded order (a resumed run skips the batches already drawn).
  std::vector<Example> outer_split;
  const bool search = peft::run_protocol(c) == peft::RunProtocol::SearchThenRetrain;  // the retrain is a lora run
  if (search) {
    IndexSplit sp = split_indices(int64_t(l.ds.train.size()), peft::autolora_options(c).val_fraction, c.seed);
    outer_split = select_examples(l.ds.train, sp.held_out);
    l.ds.train = select_examples(l.ds.train, sp.train);
    fmt::print(stderr, "[autolora] search split (seed {}): {} examples train A/B, {} held out train α\n", c.seed,
               l.ds.train.size(), outer_split.size());
  }
  // Data parallelism: the samplers draw global batches (world size × batch_size rows) and each rank
  // trains on its contiguous shard, so N ranks see the examples of one process at N times the batch.
  const int world = dist::world_size(), rank = dist::rank();
  BatchSampler outer_sampler(std::max<int64_t>(1, int64_t(outer_split.size())), c.batch_size * world, c.seed + 1, true,
                             false);
  BatchSampler sampler(int64_t(l.ds.train.size()), c.batch_size * world, c.seed, true, false);
  peft::TrainerOptions to = c.trainer;
  to.precision = resolve_precision(c.precision, backend_for(d), "train");
  int64_t total = c.steps > 0
                      ? c.steps
                      : int64_t(std::ceil(c.epochs * double(sampler.batches_per_epoch()) / double(to.grad_accum)));
  to.schedule.total_steps = total;
  if (to.schedule.kind == nn::ScheduleKind::Constant && to.schedule.total_steps <= to.schedule.warmup_steps)
    to.schedule.total_steps = to.schedule.warmup_steps + 1;
  peft::MethodSetup ms = setup_method(c, m, l.ds, d, total);
  std::unique_ptr<peft::PeftModel> pm = std::move(ms.pm);
  peft::Trainer tr(m, pm.get(), std::move(ms.strategy), to);
  if (rank > 0) manual_seed(c.seed + 0x9E3779B97F4A7C15ull * uint64_t(rank));  // a dropout stream of its own
  const bool main = dist::is_main();                                           // only rank 0 writes
  if (main) fs::create_directories(c.output);
  if (main && write_config) write_file_atomic((fs::path(c.output) / "config.yaml").string(), dump_train_config(c));
  const int64_t eval_bs = c.eval_batch_size > 0 ? c.eval_batch_size : c.batch_size;
  const auto& val = l.ds.val;
  RunState s;
  // metrics.jsonl is rewritten whole (temporary file + rename) at each line: a failed write keeps the
  // previous file, and a reader never sees half a line.
  const fs::path metrics_path = fs::path(c.output) / "metrics.jsonl";
  std::string metrics;
  if (resume) {
    s = load_checkpoint(c, tr);
    sampler.restore(s.epoch, s.cursor);
    if (!outer_split.empty())
      for (int64_t i = 0; i < tr.global_step(); ++i) outer_sampler.next();
    if (main && fs::exists(metrics_path))
      metrics = read_file(metrics_path.string(), "train").substr(0, s.metrics_bytes);  // lines up to the checkpoint
    if (main) write_file_atomic(metrics_path.string(), metrics);
    fmt::print(stderr, "[train] resumed from step {} ({})\n", tr.global_step(),
               (fs::path(c.output) / "checkpoint").string());
  }
  auto log_metrics = [&](const nlohmann::json& j) {
    metrics += j.dump() + "\n";
    if (main) write_file_atomic(metrics_path.string(), metrics);
  };
  fmt::print(stderr,
             "[train] {} on {} ({}{}): {} trainable parameters of {}; {} train / {} validation examples; {} steps{}\n",
             c.method, device_str(d), precision_name(to.precision), c.precision == "auto" ? " by auto" : "",
             tr.trainable_count(), m.num_parameters(), l.ds.train.size(), val.size(), total,
             world > 1 ? fmt::format("; {} ranks × batch {} × grad_accum {} (global batch {})", world, c.batch_size,
                                     to.grad_accum, world * c.batch_size * to.grad_accum)
                       : "");
  Progress progress(stderr);
  auto run_eval_now = [&](int64_t step) {
    if (val.empty()) return EvalResult{};
    AutocastGuard autocast(to.precision);  // held-out metrics of the model as it trains
    EvalResult r = evaluate(m, l.ds, val, eval_bs, c.eval_max_batches, d,
                            [&progress](int64_t done, int64_t all) { progress.eval_progress(done, all); });
    s.eval_steps.push_back(double(step));
    s.eval_losses.push_back(r.loss);
    nlohmann::json j = {{"step", step}, {"eval_loss", r.loss}};
    if (r.accuracy >= 0)
      j["accuracy"] = r.accuracy;
    else
      j["perplexity"] = r.perplexity;
    log_metrics(j);
    progress.message(fmt::format("[eval] step {}: {}", step, format_eval(r)));
    return r;
  };
  if (!resume) {
    EvalResult before = run_eval_now(0);
    s.before = before.accuracy >= 0 ? before.accuracy : before.loss;
  }
  install_stop_signals();
  m.train();
  auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0, steps_here = 0, tokens_here = 0;
  int rc = 0;
  while (tr.global_step() < total && !tr.strategy_done()) {
    // This rank's shard of each global micro-batch; a shard without rows (a short last batch) still
    // takes part in the step's sums.
    auto shard_loss = [&](const std::vector<Example>& split, const std::vector<int64_t>& global, Batch& b,
                          int64_t& terms) -> peft::BatchLoss {
      const std::vector<int64_t> rows = shard_rows(global, rank, world);
      if (rows.empty()) return [] { return Tensor(); };
      b = make_batch(l.ds, split, rows, d);
      terms = loss_terms(b, cls);
      return [&m, &b, cls] { return batch_loss(m, b, cls); };
    };
    std::vector<Batch> batches(size_t(to.grad_accum));
    peft::LossTerms terms;
    terms.micro.assign(batches.size(), 0);
    std::vector<peft::BatchLoss> micro;
    for (size_t a = 0; a < batches.size(); ++a) {
      micro.push_back(shard_loss(l.ds.train, sampler.next(), batches[a], terms.micro[a]));
      tokens_here += batches[a].tokens;
    }
    Batch outer_batch;
    peft::BatchLoss outer_loss;  // AutoLoRA: the held-out batch for the α update
    if (!outer_split.empty()) outer_loss = shard_loss(outer_split, outer_sampler.next(), outer_batch, terms.val);
    peft::StepResult r = tr.step(micro, outer_loss, terms);
    // One small sum per step: the tokens of every rank, and whether any rank was asked to stop (a
    // launcher's SIGTERM reaches each rank on its own), so every rank stops after the same step.
    double step_sums[2] = {double(tokens_here), stop_signal() != 0 ? 1.0 : 0.0};
    if (world > 1) dist::allreduce_sum(std::span<double>(step_sums, 2));
    tokens += int64_t(step_sums[0]);
    tokens_here = 0;
    const bool stop_asked = step_sums[1] > 0;
    if (!r.finite) {
      progress.finish();
      const std::string last =
          s.checkpoint_step >= 0
              ? fmt::format("the last checkpoint (step {}) in {} is intact; --resume continues from it",
                            s.checkpoint_step, (fs::path(c.output) / "checkpoint").string())
              : "there is no checkpoint yet (none was written before this step)";
      fmt::print(stderr, "[train] non-finite {} ({}) at step {}: stopping; {}\n",
                 std::isfinite(r.loss) ? "gradient" : "loss", std::isfinite(r.loss) ? r.grad_norm : r.loss,
                 tr.global_step() + 1, last);
      rc = 1;
      break;
    }
    if (r.skipped)
      progress.message(
          fmt::format("[train] step {}: f16 gradients overflowed at loss scale {:g}; update skipped, scale now {:g}",
                      tr.global_step(), r.loss_scale, tr.scaler().scale()));
    ++steps_here;
    kill_if_asked(rank, tr.global_step());
    s.epoch = sampler.epoch();
    s.cursor = sampler.cursor();
    const int64_t step = tr.global_step();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step % c.log_every == 0 || step == total || r.skipped) {
      s.loss_steps.push_back(double(step));
      s.losses.push_back(r.loss);
      nlohmann::json j{{"step", step},
                       {"loss", r.loss},
                       {"lr", r.lr},
                       {"grad_norm", r.grad_norm},
                       {"tokens_per_s", double(tokens) / secs}};
      j.update(tr.strategy().step_metrics());
      if (tr.scaler().enabled()) {  // f16: the scale this step used, and whether it overflowed
        j["loss_scale"] = r.loss_scale;
        j["skipped"] = r.skipped;
      }
      log_metrics(j);
    }
    progress.update({step, total, r.loss, r.lr, double(tokens) / secs, ""});
    if (c.eval_every > 0 && step % c.eval_every == 0 && step != total) run_eval_now(step);
    const bool stop = stop_asked || (stop_after > 0 && steps_here >= stop_after);
    if ((c.checkpoint_every > 0 && step % c.checkpoint_every == 0) || stop) {
      s.metrics_bytes = metrics.size();
      save_checkpoint(c, tr, pm.get(), s);
      write_plots(c, s, tr, pm.get());
    }
    if (stop) {
      progress.finish();
      const int sig = stop_signal() ? stop_signal() : stop_asked ? SIGTERM : 0;  // another rank's signal
      fmt::print(stderr, "[train] {} at step {}; checkpoint saved in {}; continue with --resume\n",
                 sig ? fmt::format("interrupted by {}", signal_name(sig)) : std::string("interrupted"), step,
                 (fs::path(c.output) / "checkpoint").string());
      return 128 + (sig ? sig : SIGINT);
    }
  }
  restore_stop_signals();  // the final evaluation and saves: a signal now stops at once, as before the run
  progress.finish();
  if (rc != 0) return rc;
  if (steps_run) *steps_run = steps_here;
  tr.finish();
  EvalResult after = run_eval_now(tr.global_step());
  s.metrics_bytes = metrics.size();
  save_checkpoint(c, tr, pm.get(), s);
  write_plots(c, s, tr, pm.get());
  if (!main) return 0;  // rank 0 writes the outputs
  const std::string written = peft::export_method_outputs(c, {.model = m,
                                                              .pm = pm.get(),
                                                              .strategy = tr.strategy(),
                                                              .output = c.output,
                                                              .tokenizer = c.tokenizer,
                                                              .log = log_line});
  const char* metric = after.accuracy >= 0 ? "accuracy" : "eval_loss";
  const double now = after.accuracy >= 0 ? after.accuracy : after.loss;
  if (!val.empty())
    fmt::print("{} held-out {}: before {:.4f}, after {:.4f}\n",
               search ? fmt::format("[{}] search", c.method) : "[train]", metric, s.before, now);
  fmt::print("[train] {} written to {}; metrics in {}{}\n", pm ? "adapter" : "model", written, metrics_path.string(),
             c.plots ? fmt::format("; plots {}", (fs::path(c.output) / "loss.png").string()) : "");
  return 0;
}

// AutoLoRA (methods.md §2): the search in <output>/search (its own checkpoint, metrics, plots, α and
// ranks, the search adapter), then, unless adapter.stop_after_search, plain LoRA with the found
// rank_pattern on the whole training split in <output> (adapter/ as every method). --resume continues
// whichever phase was cut; a fresh run clears both phases' checkpoints first.
int run_autolora(const TrainConfig& c, bool resume, Device d, int64_t stop_after) {
  const fs::path out(c.output), search = out / "search";
  auto has_checkpoint = [](const fs::path& p) {
    return fs::exists(p / "checkpoint") || fs::exists(p / "checkpoint.old");
  };
  if (!resume && dist::is_main())
    for (const fs::path& p : {search, out / "checkpoint", out / "checkpoint.old"}) fs::remove_all(p);
  const peft::AutoLoraRunOptions& o = peft::autolora_options(c);
  int64_t ran = 0;
  // Data parallelism: rank 0's folder decides, and the search's ranks reach every rank from it.
  if (!dist::broadcast_flag(fs::exists(search / "autolora_ranks.json"))) {  // written last by the search phase
    TrainConfig cs = c;
    cs.output = search.string();
    if (o.search_steps > 0) cs.steps = o.search_steps;
    if (o.search_weight_decay >= 0) cs.trainer.weight_decay = float(o.search_weight_decay);
    const int rc =
        run_train_phase(cs, dist::broadcast_flag(resume && has_checkpoint(search)), d, stop_after, &ran, true);
    if (rc != 0) return rc;
  }
  std::vector<peft::ModuleRank> ranks;
  const nlohmann::json rj = nlohmann::json::parse(dist::on_root([&] {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& mr : peft::load_autolora_ranks(search.string())) j.push_back({mr.module, mr.rank});
    return j.dump();
  }));
  for (const auto& e : rj) ranks.push_back({e.at(0).get<std::string>(), e.at(1).get<int64_t>()});
  if (o.stop_after_search) {
    fmt::print("[autolora] stopped after the search (adapter.stop_after_search); α and ranks in {}\n", search.string());
    return 0;
  }
  TrainConfig cr = c;
  cr.method = "lora";
  cr.lora = peft::autolora_retrain_config(c.lora, ranks, o.search.lora_alpha);
  fmt::print(stderr, "[autolora] retrain: LoRA with the found ranks on the whole training split\n");
  return run_train_phase(cr, dist::broadcast_flag(resume && has_checkpoint(out)), d,
                         stop_after > 0 ? std::max<int64_t>(1, stop_after - ran) : 0, nullptr, false);
}

// RoSA's restart protocol (adapter.restart): run 1 in <output>/mask_run with terminate_after_mask_generation
// saves the masks (the file is written last, so its presence marks run 1 done for --resume); run 2 in
// <output> starts from the pretrained model, fresh LoRA and optimizer, schedule default, masks loaded.
int run_rosa_restart(const TrainConfig& c, bool resume, Device d, int64_t stop_after) {
  const fs::path out(c.output), first = out / "mask_run", masks = out / "rosa_masks.safetensors";
  auto has_checkpoint = [](const fs::path& p) {
    return fs::exists(p / "checkpoint") || fs::exists(p / "checkpoint.old");
  };
  if (!resume && dist::is_main())
    for (const fs::path& p : {first, masks, out / "checkpoint", out / "checkpoint.old"}) fs::remove_all(p);
  int64_t ran = 0;
  // Data parallelism: rank 0's folder decides; run 2 reads the masks file on every rank.
  if (!dist::broadcast_flag(fs::exists(masks))) {
    TrainConfig c1 = c;
    c1.output = first.string();
    c1.lora.rosa.mask_save_path = masks.string();
    c1.lora.rosa.terminate_after_mask_generation = true;
    const int rc =
        run_train_phase(c1, dist::broadcast_flag(resume && has_checkpoint(first)), d, stop_after, &ran, true);
    if (rc != 0) return rc;
    if (!dist::broadcast_flag(fs::exists(masks)))
      throw dist::ReplicatedError("[rosa] run 1 ended before its masks were made: give it more steps");
  }
  TrainConfig c2 = c;
  c2.lora.rosa.schedule = "default";
  c2.lora.rosa.mask_load_path = masks.string();
  fmt::print(stderr, "[rosa] run 2: from the pretrained model with the masks of run 1 ({})\n", masks.string());
  return run_train_phase(c2, dist::broadcast_flag(resume && has_checkpoint(out)), d,
                         stop_after > 0 ? std::max<int64_t>(1, stop_after - ran) : 0, nullptr, false);
}

// What a run leaves in its folder: a fresh run refuses to start over them without --overwrite. The
// checkpoints, each method's final outputs (its registry entry) and the protocols' phase folders.
const std::vector<std::string>& run_entries() {
  static const std::vector<std::string> entries = [] {
    std::vector<std::string> e = {"checkpoint", "checkpoint.old", "checkpoint.tmp"};
    for (const peft::MethodEntry* m : peft::method_registry())
      for (const auto& o : m->outputs)
        if (std::find(e.begin(), e.end(), o) == e.end()) e.push_back(o);
    for (const char* p : {"search", "mask_run", "rosa_masks.safetensors"}) e.push_back(p);
    return e;
  }();
  return entries;
}
const char* const kRunLogs[] = {"metrics.jsonl", "loss.png", "ranks.png", "config.yaml"};

// Refuses a fresh run over a previous one, and a --resume whose config changed (other than the keys
// that may change: `train --list-keys` marks them). Then writes the resolved config.yaml.
void prepare_run_folder(const TrainConfig& c, bool resume, bool overwrite) {
  const fs::path out(c.output);
  if (resume && !fs::exists(out / "checkpoint") && !fs::exists(out / "checkpoint.old") && !fs::exists(out / "search") &&
      !fs::exists(out / "mask_run"))
    throw std::runtime_error(fmt::format("[train] --resume: no checkpoint in {}", out.string()));
  if (!resume) {
    std::vector<std::string> found;
    for (const auto& e : run_entries())
      if (fs::exists(out / e)) found.push_back(e);
    if (!found.empty() && !overwrite)
      throw std::runtime_error(
          fmt::format("[train] {} already holds a run ({}); pass --resume to continue it or --overwrite to start over",
                      out.string(), fmt::join(found, ", ")));
    for (const auto& e : run_entries()) fs::remove_all(out / e);
    for (const char* e : kRunLogs) fs::remove(out / e);
  } else if (fs::exists(out / "config.yaml")) {
    const std::string saved = (out / "config.yaml").string();
    const std::vector<std::string> changed = changed_config_keys(read_file(saved, "train"), saved, c);
    if (!changed.empty()) {
      std::vector<std::string> safe;
      for (const auto& k : config_key_infos())
        if (k.resume_safe) safe.push_back(k.key);
      throw std::runtime_error(
          fmt::format("[train] --resume: the config differs from the run's {}: {}; only {} may change "
                      "on --resume (start a new run with --overwrite or another output)",
                      saved, fmt::join(changed, ", "), fmt::join(safe, ", ")));
    }
  } else {
    fmt::print(stderr, "[train] note: {} has no config.yaml; the config is not compared\n", out.string());
  }
  write_file_atomic((out / "config.yaml").string(), dump_train_config(c));
}

}  // namespace

int run_train(const TrainConfig& c, bool resume, Device d, int64_t stop_after, bool overwrite) {
  if (resume && overwrite) throw std::runtime_error("[train] --resume and --overwrite exclude each other");
  fmt::print(stderr, "[train] output: {}\n", c.output);
  const bool main = dist::is_main();  // data parallelism: rank 0 owns the output folder
  const bool existed = main && fs::exists(c.output);
  std::optional<DirLock> lock;
  try {
    dist::on_root([&] {
      lock.emplace(c.output, "train");
      prepare_run_folder(c, resume, overwrite);
      return std::string();
    });
    switch (peft::run_protocol(c)) {
      case peft::RunProtocol::SearchThenRetrain: return run_autolora(c, resume, d, stop_after);
      case peft::RunProtocol::MaskRestart: return run_rosa_restart(c, resume, d, stop_after);
      case peft::RunProtocol::Single: break;
    }
    return run_train_phase(c, resume, d, stop_after, nullptr, false);
  } catch (...) {
    // A run that failed before it saved anything (bad data, bad model) leaves no folder it created.
    if (!main) throw;
    bool saved = false;
    for (const auto& e : run_entries()) saved = saved || fs::exists(fs::path(c.output) / e);
    std::error_code ec;
    if (!existed && !saved) fs::remove_all(c.output, ec);
    throw;
  }
}

}  // namespace rf::tools
