// `rankforge tokenize --tokenizer DIR TEXT`: ids as one JSON array (or --decode a JSON array of ids).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "engine/json_io.h"
#include "models/tokenizer.h"
#include "tools/commands.h"

namespace rf::tools {

void add_tokenize_command(CLI::App& app, int& rc) {
  struct Args {
    std::string dir, text;
    bool add_special = false, decode = false, skip_special = false;
  };
  static Args a;
  auto* t =
      app.add_subcommand("tokenize", "Encode TEXT with a Hugging Face tokenizer and print the ids as a JSON array");
  t->add_option("--tokenizer", a.dir, "directory with tokenizer.json, vocab.json + merges.txt, or vocab.txt")
      ->required();
  t->add_option("text", a.text, "text to encode (with --decode: a JSON array of ids)")->required();
  t->add_flag("--add-special", a.add_special, "add the special tokens the post-processor defines (BOS, [CLS]/[SEP])");
  t->add_flag("--decode", a.decode, "decode a JSON array of ids instead");
  t->add_flag("--skip-special", a.skip_special, "with --decode: drop special tokens");
  t->callback([&rc] {
    auto tok = models::load_tokenizer(a.dir);
    if (a.decode) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(a.text);
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error(
            fmt::format("[tokenize] --decode needs a JSON array of ids: {}", json_error_reason(e)));
      }
      if (!j.is_array()) throw std::runtime_error("[tokenize] --decode needs a JSON array of ids");
      std::vector<int64_t> ids;
      for (const auto& v : j) {
        if (!v.is_number_integer())
          throw std::runtime_error(fmt::format("[tokenize] {} is not an integer id", v.dump()));
        const int64_t id = v.get<int64_t>();
        // decode() drops unknown ids silently (as Hugging Face does); on the command line that hides a typo.
        if (!tok->id_to_token(id)) {
          const int64_t n = tok->vocab_size();
          throw std::runtime_error(
              id < 0 || id >= n
                  ? fmt::format("[tokenize] id {} is outside the vocabulary (size {}: ids 0..{})", id, n, n - 1)
                  : fmt::format("[tokenize] id {} is not in the vocabulary (size {}): no token has it", id, n));
        }
        ids.push_back(id);
      }
      fmt::print("{}\n", tok->decode(ids, a.skip_special));
    } else {
      fmt::print("{}\n", nlohmann::json(tok->encode(a.text, a.add_special)).dump());
    }
    rc = 0;
  });
}

}  // namespace rf::tools
