#include "tools/train_checkpoint.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/safetensors.h"
#include "peft/method.h"
#include "tools/plot.h"

namespace rf::tools {

namespace fs = std::filesystem;

namespace {

nlohmann::json to_json(const TrainConfig& c, const RunState& s, int64_t step) {
  nlohmann::json streams = nlohmann::json::array();
  for (size_t r = 0; r < s.rng_seeds.size(); ++r) streams.push_back({s.rng_seeds[r], s.rng_offsets[r]});
  return {{"epoch", s.epoch},
          {"cursor", s.cursor},
          {"loss_steps", s.loss_steps},
          {"losses", s.losses},
          {"eval_steps", s.eval_steps},
          {"eval_losses", s.eval_losses},
          {"metrics_bytes", s.metrics_bytes},
          {"before", std::isfinite(s.before) ? nlohmann::json(s.before) : nlohmann::json(nullptr)},
          {"rng_seed", s.rng_seeds.at(0)},
          {"rng_offset", s.rng_offsets.at(0)},
          {"rng_streams", streams},  // (world_size) [seed, offset] per rank
          {"world_size", dist::world_size()},
          {"batch_size", c.batch_size},
          {"grad_accum", c.trainer.grad_accum},
          {"step", step}};
}

}  // namespace

void write_plots(const TrainConfig& c, const RunState& s, peft::Trainer& tr, peft::PeftModel* pm) {
  if (!c.plots || !dist::is_main()) return;
  LineChart lc;
  lc.title = "loss";
  lc.x_label = "step";
  lc.y_label = "loss";
  lc.series.push_back({"train", s.loss_steps, s.losses, 0});
  lc.series.push_back({"eval", s.eval_steps, s.eval_losses, 0, true});  // few points: markers show each one
  write_png(lc, (fs::path(c.output) / "loss.png").string());
  if (pm) {
    BarChart bc;
    bc.title = "rank per adapted module";
    bc.y_label = "rank";
    for (auto& r : tr.strategy().rank_report(*pm)) {
      bc.labels.push_back(r.module);
      bc.values.push_back(double(r.rank));
    }
    write_png(bc, (fs::path(c.output) / "ranks.png").string());
  }
}

// checkpoint.tmp is filled, then swapped in by two renames; a crash leaves checkpoint or checkpoint.old.
// A failed write (disk full) removes checkpoint.tmp and leaves the previous checkpoint as it was.
void save_checkpoint(const TrainConfig& c, peft::Trainer& tr, peft::PeftModel* pm, RunState& s) {
  const RngState rng = rng_take(0);
  s.rng_seeds = dist::allgather(rng.seed);
  s.rng_offsets = dist::allgather(rng.offset);
  s.checkpoint_step = tr.global_step();
  if (!dist::is_main()) return;
  fs::path out(c.output), tmp = out / "checkpoint.tmp", cur = out / "checkpoint", old = out / "checkpoint.old";
  fs::remove_all(tmp);
  try {
    fs::create_directories(tmp);
    std::map<std::string, Tensor> tensors;
    nlohmann::json meta;
    tr.save_state(tensors, meta);
    NoGradGuard ng;
    for (auto& [n, t] : tr.trainable()) tensors["param." + n] = t.detach().to(Device{}).contiguous();
    meta["run"] = to_json(c, s, tr.global_step());
    safetensors::save_file(tensors, (tmp / "trainer_state.safetensors").string(), {{"format", "rankforge"}});
    // The method decides what the checkpoint's adapter files hold (AROMA: its merges, as the live
    // pairs may all be gone); --resume reads only trainer_state.
    if (pm) peft::save_checkpoint_adapter(c, *pm, tr.strategy(), tmp.string());
    write_file_atomic((tmp / "trainer_state.json").string(), meta.dump(1) + "\n");
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(old);
  if (fs::exists(cur)) fs::rename(cur, old);
  fs::rename(tmp, cur);
  fs::remove_all(old);
}

// nlohmann's messages ("[json.exception.type_error.302] ...") become one line naming the file.
// Data parallelism: rank 0 finds and reads the files, every rank gets their contents (no shared
// filesystem needed).
RunState load_checkpoint(const TrainConfig& c, peft::Trainer& tr) {
  const fs::path dir = dist::on_root([&] {
    fs::path d = fs::path(c.output) / "checkpoint";
    if (!fs::exists(d) && fs::exists(fs::path(c.output) / "checkpoint.old")) d = fs::path(c.output) / "checkpoint.old";
    if (!fs::exists(d / "trainer_state.json"))
      throw std::runtime_error(fmt::format("[train] --resume: no checkpoint in {}", c.output));
    return d.string();
  });
  const std::string state_path = (dir / "trainer_state.json").string();
  auto tensors = dist::load_tensors_from_root((dir / "trainer_state.safetensors").string());
  const std::string state_text = dist::read_from_root(state_path, "train");
  RunState s;
  try {
    nlohmann::json meta = parse_json_text(state_text, state_path, "train");
    const auto& r = meta.at("run");
    // Another world size continues the same sample order only with the same global batch.
    const int64_t saved_world = r.value("world_size", int64_t(1)), world = dist::world_size();
    const int64_t saved_global =
                      saved_world * r.value("batch_size", c.batch_size) * r.value("grad_accum", c.trainer.grad_accum),
                  global = world * c.batch_size * c.trainer.grad_accum;
    if (saved_global != global)
      throw dist::ReplicatedError(fmt::format(
          "[train] --resume: the checkpoint in {} was written by {} rank(s) with a global batch of {} (world size × "
          "batch_size × grad_accum); this run's is {} × {} × {} = {}; resume with settings that keep it",
          dir.string(), saved_world, saved_global, world, c.batch_size, c.trainer.grad_accum, global));
    NoGradGuard ng;
    for (auto& [n, t] : tr.trainable()) {
      auto it = tensors.find("param." + n);
      if (it == tensors.end() || it->second.shape() != t.shape())
        throw std::runtime_error(
            fmt::format("[train] --resume: {} does not hold '{}' with this shape", dir.string(), n));
      Tensor dst = t;
      dst.copy_(it->second);
    }
    tr.load_state(tensors, meta);
    s.epoch = r.at("epoch");
    s.cursor = r.at("cursor");
    s.loss_steps = r.at("loss_steps").get<std::vector<double>>();
    s.losses = r.at("losses").get<std::vector<double>>();
    s.eval_steps = r.at("eval_steps").get<std::vector<double>>();
    s.eval_losses = r.at("eval_losses").get<std::vector<double>>();
    s.metrics_bytes = r.at("metrics_bytes");
    s.before = r.at("before").is_null() ? NAN : r.at("before").get<double>();
    // This rank's dropout stream: its own when the world size is the same; otherwise rank 0 takes
    // the saved rank 0's and the others start streams of their own.
    uint64_t seed = r.at("rng_seed").get<uint64_t>(), offset = r.at("rng_offset").get<uint64_t>();
    const int rank = dist::rank();
    if (rank > 0) {
      const nlohmann::json streams = r.value("rng_streams", nlohmann::json::array());
      if (saved_world == world && size_t(rank) < streams.size()) {
        seed = streams[size_t(rank)].at(0).get<uint64_t>();
        offset = streams[size_t(rank)].at(1).get<uint64_t>();
      } else {
        seed = c.seed + 0x9E3779B97F4A7C15ull * uint64_t(rank), offset = 0;
      }
    }
    manual_seed(seed);
    rng_take(offset);
    s.checkpoint_step = r.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(
        fmt::format("[train] {}: not a valid trainer state: {}", state_path, json_error_reason(e)));
  }
  return s;
}

}  // namespace rf::tools
