// libFuzzer target for the training-data reader, rf::tools::load_dataset, with the quickstart's
// byte-level BPE tokenizer. Input: two option bytes, then the file content. load_dataset reads paths,
// so each input is written to a per-process file (in /dev/shm when there is one); bit 6 of the first
// byte splits the content at the first "\n\f\n" into a training and a validation file.
// It must return a well-formed Dataset or throw a one-line std::runtime_error starting with "[data] ".
#include <fmt/format.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "models/tokenizer.h"
#include "tools/data.h"

namespace {

namespace fs = std::filesystem;
using rf::tools::DataFormat;

struct State {
  std::unique_ptr<rf::models::Tokenizer> tok =
      rf::models::load_tokenizer(RF_SOURCE_ROOT "/examples/quickstart/tokenizer");
  fs::path dir = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  std::string stem = (dir / fmt::format("rf_fuzz_data_{}", ::getpid())).string();
  std::string files[4] = {stem + ".jsonl", stem + ".txt", stem + "_val.jsonl", stem + "_val.txt"};
  ~State() {
    for (const auto& f : files) std::remove(f.c_str());
  }
};

[[noreturn]] void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz_data: invariant violated: %s\n", what.c_str());
  std::abort();
}

void write(const std::string& path, std::string_view content) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(content.data(), 1, content.size(), f) != content.size()) violated("cannot write " + path);
  std::fclose(f);
}

// What a returned Dataset promises: rows within max_seq_len, labels aligned, ids from the tokenizer.
void check(const rf::tools::Dataset& ds, const rf::tools::DataOptions& o, int64_t vocab) {
  if (ds.format == DataFormat::Auto) violated("format left unresolved");
  if (ds.train.empty()) violated("empty training split");
  if (o.pack && ds.classification()) violated("packed classification");
  for (const auto* split : {&ds.train, &ds.val})
    for (size_t i = 0; i < split->size(); ++i) {
      const auto& e = (*split)[i];
      if (e.ids.empty() || int64_t(e.ids.size()) > o.max_seq_len)
        violated(fmt::format("row {} has {} ids", i, e.ids.size()));
      for (int64_t id : e.ids)
        if ((id < 0 || id >= vocab) && id != o.eos_id) violated(fmt::format("row {} has id {}", i, id));
      if (ds.classification()) {
        if (e.label < 0 || e.label >= int64_t(ds.label_names.size()))
          violated(fmt::format("row {} has label {} of {}", i, e.label, ds.label_names.size()));
      } else if (e.labels.size() != e.ids.size()) {
        violated(fmt::format("row {} has {} labels for {} ids", i, e.labels.size(), e.ids.size()));
      }
    }
  if (o.pack)
    for (size_t i = 0; i + 1 < ds.train.size(); ++i)
      if (int64_t(ds.train[i].ids.size()) != o.max_seq_len) violated(fmt::format("packed row {} is short", i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static State s;
  if (size < 2) return -1;
  // byte 0: format (bits 0-2, 5..7 = auto), pack, add_eos, .txt extension, validation file, label names
  // byte 1: max_seq_len 1..32 (bits 0-4), val_fraction (bits 5-6), add_special (bit 7)
  const uint8_t a = data[0], b = data[1];
  std::string_view content(reinterpret_cast<const char*>(data + 2), size - 2);
  rf::tools::DataOptions o;
  static constexpr DataFormat kFormats[] = {DataFormat::Text, DataFormat::PromptCompletion, DataFormat::Classification,
                                            DataFormat::PlainText, DataFormat::Auto};
  o.format = kFormats[std::min(a & 7, 4)];
  o.pack = a & 8;
  o.eos_id = a & 16 ? s.tok->vocab_size() : -1;
  const bool txt = a & 32;
  o.path = s.files[txt];
  if (size_t cut = content.find("\n\f\n"); a & 64 && cut != std::string_view::npos) {
    o.val_path = s.files[2 + txt];
    write(o.val_path, content.substr(cut + 3));
    content = content.substr(0, cut);
  }
  if (a & 128) o.label_names = {"neg", "pos", "0"};
  o.max_seq_len = 1 + (b & 31);
  static constexpr double kFractions[] = {0.0, 0.1, 0.5, 0.9};
  o.val_fraction = kFractions[(b >> 5) & 3];
  o.add_special = b & 128;
  write(o.path, content);
  try {
    check(rf::tools::load_dataset(o, *s.tok), o, s.tok->vocab_size());
  } catch (const std::runtime_error& e) {
    const std::string_view msg = e.what();
    if (!msg.starts_with("[data] ")) violated(fmt::format("message does not start with [data]: {}", msg));
    if (msg.find('\n') != std::string_view::npos) violated(fmt::format("message spans lines: {}", msg));
  } catch (const std::exception& e) {
    violated(fmt::format("not a std::runtime_error: {}", e.what()));
  }
  return 0;
}
