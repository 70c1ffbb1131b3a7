#pragma once
// A `rankforge train` run folder for CLI tests: the gpt2 fixture model with a byte-level tokenizer
// and a small prompt/completion corpus, and a config writer.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/model.h"
#include "models/tokenizer.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

namespace rf::test {

namespace fs = std::filesystem;

// model_dir: the gpt2 fixture (config + weights) with a byte-level tokenizer (GPT-2's 256 byte symbols
// from RF_GPT2_VOCAB, no merges), so any text tokenizes within the fixture's vocabulary.
inline void write_byte_level_gpt2(const fs::path& model_dir) {
  fs::create_directories(model_dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(fs::path(fixtures_dir()) / "hf/gpt2/base" / f, model_dir / f);
  const char* vocab = std::getenv("RF_GPT2_VOCAB");
  REQUIRE(vocab != nullptr);
  auto gpt2 = models::load_tokenizer(vocab);
  nlohmann::json v = nlohmann::json::object();
  for (int64_t i = 0; i < 256; ++i) v[*gpt2->id_to_token(i)] = i;
  nlohmann::json tj = {{"model", {{"type", "BPE"}, {"vocab", v}, {"merges", nlohmann::json::array()}}},
                       {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}};
  std::ofstream(model_dir / "tokenizer.json") << tj.dump();
}

// A run folder fixture: the gpt2 fixture model with a byte-level tokenizer (GPT-2's 256 byte
// symbols, no merges) and a small JSONL corpus.
struct TrainSetup {
  fs::path dir;
  TrainSetup() {
    dir = fs::temp_directory_path() / fmt::format("rf_train_{}_{}", ::getpid(), counter()++);
    fs::remove_all(dir);
    write_byte_level_gpt2(dir / "model");
    std::ofstream data(dir / "data.jsonl");
    const char* words[] = {"red", "green", "blue", "cat", "dog", "sun", "moon", "tree"};
    for (int i = 0; i < 48; ++i)
      data << nlohmann::json({{"prompt", fmt::format("{} {}:", words[i % 8], words[(i * 3) % 8])},
                              {"completion", fmt::format(" {} {}", words[(i * 5) % 8], words[(i + 1) % 8])}})
                  .dump()
           << "\n";
  }
  ~TrainSetup() { fs::remove_all(dir); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  // A config with dropout (so the RNG state matters on resume), eval and checkpoints.
  std::string config(const std::string& out, int steps, int ckpt_every, const std::string& extra = "") const {
    fs::path p = dir / fmt::format("{}.yaml", out);
    std::ofstream(p) << fmt::format(
        "model: {}\noutput: {}\nseed: 3\nadapter:\n  r: 4\n  alpha: 8\n  dropout: 0.1\n  target_modules: [c_attn, "
        "c_fc]\n"
        "data:\n  train: {}\n  max_seq_len: 24\n  val_fraction: 0.25\ntraining:\n  steps: {}\n  batch_size: 4\n"
        "  lr: 1.0e-2\n  schedule: cosine\n  warmup_steps: 2\neval:\n  every: 4\nlog:\n  every: 1\n"
        "checkpoint:\n  every: {}\n{}",
        (dir / "model").string(), (dir / out).string(), (dir / "data.jsonl").string(), steps, ckpt_every, extra);
    return p.string();
  }
};

inline std::string adapter_bytes(const fs::path& run) { return slurp(run / "adapter" / "adapter_model.safetensors"); }

// The number after `which` in a train run's output, e.g. held_out(out, "after ") of "before X, after Y".
inline double held_out(const std::string& out, const char* which) {
  size_t at = out.find(which);
  REQUIRE_MESSAGE(at != std::string::npos, out);
  return std::stod(out.substr(at + std::string(which).size()));
}

// Logits of a fixed 6-token input (no grad), to compare a loaded adapter with a merged checkpoint.
inline Tensor fixed_logits(models::Model& m) {
  NoGradGuard ng;
  return m.forward(models::ModelInputs{i64({5, 17, 42, 7, 99, 3}, {1, 6}), {}, {}, {}});
}

}  // namespace rf::test
