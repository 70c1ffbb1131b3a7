// Embedding rankforge in your own program: load (or create) a model, attach LoRA as PEFT would,
// train a few steps with the same Trainer `rankforge train` uses, and save a PEFT adapter.
//   embed [MODEL_DIR] [ADAPTER_OUT]   (no MODEL_DIR: a tiny freshly initialised GPT-2)
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "models/loss.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"

int main(int argc, char** argv) {
  rf::manual_seed(1);
  std::unique_ptr<rf::models::Model> model;
  if (argc > 1) {
    model = rf::models::load_model(argv[1]);
  } else {
    nlohmann::json cfg = {{"model_type", "gpt2"}, {"vocab_size", 64},  {"n_positions", 32},
                          {"n_embd", 32},         {"n_layer", 2},      {"n_head", 2},
                          {"resid_pdrop", 0.0},   {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}};
    model = rf::models::create_model(rf::models::parse_config(cfg, "embed"));
  }
  rf::peft::PeftModel peft(*model);
  rf::peft::LoraConfig lora;
  lora.r = 4;
  lora.lora_alpha = 8;
  lora.target_modules = rf::peft::ModuleSelector::list({"c_attn", "c_fc"});
  peft.add_adapter("default", lora);

  rf::peft::TrainerOptions opt;
  opt.lr = 1e-2f;
  opt.schedule.total_steps = 5;
  rf::peft::Trainer trainer(*model, &peft, nullptr, opt);  // nullptr: plain LoRA strategy
  rf::Tensor ids = rf::randperm(32).reshape({2, 16});      // (B, T) token ids below the vocabulary size
  model->train();
  double last = 0;
  for (int step = 0; step < 5; ++step) {
    auto r = trainer.step({[&] { return rf::models::causal_lm_loss(model->forward({ids, {}, {}, {}}), ids); }});
    last = r.loss;
  }
  std::string out = argc > 2 ? argv[2] : (std::filesystem::temp_directory_path() / "rankforge_embed_adapter").string();
  peft.save_adapter(out);
  fmt::print("loss={:.6f} trainable={} adapter={}\n", last, trainer.trainable_count(), out);
  return 0;
}
