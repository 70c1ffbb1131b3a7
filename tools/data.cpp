// Training data: JSONL / plain text -> tokenised examples, a deterministic train/validation split,
// padded or packed batches, and a resumable epoch-wise batch order.
#include "tools/data.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string_view>

#include "engine/utf8.h"

namespace rf::tools {
namespace {

using json = nlohmann::json;
constexpr int64_t kIgnore = -100;            // label of positions without loss (as transformers)
constexpr int64_t kMaxIntClasses = 1 << 20;  // int labels name their classes "0".."max": keep that list sane

[[noreturn]] void fail(const std::string& file, const std::string& why) {
  throw std::runtime_error(fmt::format("[data] {}: {}", file, why));
}
[[noreturn]] void fail_at(const std::string& file, int64_t line, const std::string& why) {
  throw std::runtime_error(fmt::format("[data] {}:{}: {}", file, line, why));
}

std::string_view format_name(DataFormat f) {
  switch (f) {
    case DataFormat::Text: return "text";
    case DataFormat::PromptCompletion: return "prompt-completion";
    case DataFormat::Classification: return "classification";
    case DataFormat::PlainText: return "plain text";
    default: return "auto";
  }
}

std::string read_file(const std::string& path) {
  errno = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::strerror(errno));
  std::string s;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f.get())) > 0;) s.append(buf, n);
  if (std::ferror(f.get())) fail(path, std::strerror(errno));  // e.g. EISDIR: fopen accepts directories
  if (s.starts_with("\xEF\xBB\xBF")) s.erase(0, 3);            // editors on Windows write a UTF-8 BOM
  return s;
}

// nlohmann's message without its "[json.exception...]" tag; the parser sees one line, so its
// "line 1" is noise next to our own line number.
std::string short_json_error(std::string m) {
  if (m.starts_with("[json.exception.")) {
    if (size_t p = m.find("] "); p != std::string::npos) m.erase(0, p + 2);
  }
  const std::string at = "at line 1, column ";
  if (size_t p = m.find(at); p != std::string::npos) m.replace(p, at.size(), "at column ");
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  if (m.size() > 200) m = m.substr(0, 197) + "...";
  return m;
}

// One JSONL line, kept raw until the labels of every file are known.
struct Record {
  int64_t line = 0;
  std::string text, completion;  // text holds the prompt of a prompt-completion line
  bool int_label = false;
  int64_t label_int = 0;
  std::string label_str;
};

struct Source {
  std::string path;
  DataFormat format = DataFormat::Auto;
  std::vector<Record> records;  // JSONL formats
  std::string plain;            // PlainText
};

std::vector<const char*> keys_of(DataFormat f) {
  switch (f) {
    case DataFormat::PromptCompletion: return {"prompt", "completion"};
    case DataFormat::Classification: return {"text", "label"};
    default: return {"text"};
  }
}

std::optional<DataFormat> detect(const json& j) {
  if (j.contains("prompt") && j.contains("completion")) return DataFormat::PromptCompletion;
  if (j.contains("text") && j.contains("label")) return DataFormat::Classification;
  if (j.contains("text")) return DataFormat::Text;
  return std::nullopt;
}

std::string get_string(const json& j, const char* key, const std::string& path, int64_t line) {
  const json& v = j.at(key);
  if (!v.is_string()) fail_at(path, line, fmt::format("'{}' must be a string", key));
  return v.get<std::string>();
}

// Parses every non-blank line; format is resolved from the first one when Auto.
std::vector<Record> parse_jsonl(const std::string& path, const std::string& content, DataFormat& format) {
  const bool autodetect = format == DataFormat::Auto;
  int64_t first = 0;  // line that decided the format
  std::vector<Record> out;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < content.size();) {
    size_t end = std::min(content.find('\n', pos), content.size());
    std::string_view line(content.data() + pos, end - pos);
    pos = end + 1, ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
      fail_at(path, line_no, "invalid JSON: " + short_json_error(e.what()));
    }
    if (!j.is_object()) fail_at(path, line_no, fmt::format("expected a JSON object, got {}", j.type_name()));
    std::optional<DataFormat> seen = detect(j);
    if (format == DataFormat::Auto) {
      if (!seen)
        fail_at(path, line_no, "cannot tell the format: expected 'text', 'text'+'label' or 'prompt'+'completion'");
      format = *seen, first = line_no;
    }
    for (const char* k : keys_of(format)) {
      if (j.contains(k)) continue;
      if (autodetect)
        fail_at(path, line_no, fmt::format("missing key '{}' (line {} is {})", k, first, format_name(format)));
      fail_at(path, line_no, fmt::format("missing key '{}' ({} format)", k, format_name(format)));
    }
    // Extra keys are fine when the format is given, but in auto mode they hint at a mixed-up file.
    if (autodetect && seen != format)
      fail_at(path, line_no,
              fmt::format("mixed formats: this line is {} but line {} is {}", format_name(*seen), first,
                          format_name(format)));
    Record r;
    r.line = line_no;
    if (format == DataFormat::PromptCompletion) {
      r.text = get_string(j, "prompt", path, line_no);
      r.completion = get_string(j, "completion", path, line_no);
    } else {
      r.text = get_string(j, "text", path, line_no);
    }
    if (format == DataFormat::Classification) {
      const json& l = j.at("label");
      if (l.is_number_unsigned() && l.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        fail_at(path, line_no, "'label' is out of range");
      if (l.is_number_integer()) {
        r.int_label = true, r.label_int = l.get<int64_t>();
      } else if (l.is_string()) {
        r.label_str = l.get<std::string>();
      } else {
        fail_at(path, line_no, "'label' must be an integer or a string");
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

Source load_source(const std::string& path, DataFormat format) {
  Source s{path, format, {}, {}};
  std::string content = read_file(path);
  if (format == DataFormat::Auto) {
    std::string ext = std::filesystem::path(path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (ext == ".txt" || ext == ".text" || ext == ".md") s.format = DataFormat::PlainText;
  }
  if (s.format == DataFormat::PlainText) {
    if (content.find_first_not_of(" \t\r\n") == std::string::npos) fail(path, "no examples");
    if (size_t bad = utf8_invalid_at(content); bad != content.size())
      fail(path, fmt::format("not valid UTF-8 at byte {}", bad));
    s.plain = std::move(content);
    return s;
  }
  s.records = parse_jsonl(path, content, s.format);
  if (s.records.empty()) fail(path, "no examples");
  return s;
}

// Class indices for every record of every source (one mapping shared by train and validation).
std::vector<std::string> map_labels(const std::vector<Source*>& sources, const std::vector<std::string>& names,
                                    std::vector<std::vector<int64_t>>& out) {
  out.assign(sources.size(), {});
  if (!names.empty()) {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < names.size(); ++i)
      if (!index.emplace(names[i], int64_t(i)).second)
        throw std::runtime_error(fmt::format("[data] label_names: '{}' appears twice", names[i]));
    const int64_t n = int64_t(names.size());
    for (size_t s = 0; s < sources.size(); ++s)
      for (const Record& r : sources[s]->records) {
        if (r.int_label) {
          if (r.label_int < 0 || r.label_int >= n)
            fail_at(sources[s]->path, r.line,
                    fmt::format("label {} is out of range for {} label names", r.label_int, n));
          out[s].push_back(r.label_int);
        } else {
          auto it = index.find(r.label_str);
          if (it == index.end())
            fail_at(sources[s]->path, r.line, fmt::format("label '{}' is not in label_names", r.label_str));
          out[s].push_back(it->second);
        }
      }
    return names;
  }
  // Without names, all labels must be of one kind: ints are class indices, strings sort into classes.
  const Record& first = sources[0]->records[0];
  std::set<std::string> strings;
  int64_t max_int = -1;
  for (Source* src : sources)
    for (const Record& r : src->records) {
      if (r.int_label != first.int_label)
        fail_at(src->path, r.line,
                fmt::format("labels mix integers and strings ({}:{} has {}); give label_names", sources[0]->path,
                            first.line, first.int_label ? "an integer" : "a string"));
      if (r.int_label && r.label_int < 0) fail_at(src->path, r.line, fmt::format("label {} must be >= 0", r.label_int));
      if (r.int_label && r.label_int >= kMaxIntClasses)
        fail_at(src->path, r.line,
                fmt::format("label {} is too large (at most {} classes)", r.label_int, kMaxIntClasses));
      if (r.int_label)
        max_int = std::max(max_int, r.label_int);
      else
        strings.insert(r.label_str);
    }
  std::vector<std::string> result;
  if (first.int_label) {
    for (int64_t i = 0; i <= max_int; ++i) result.push_back(std::to_string(i));
  } else {
    result.assign(strings.begin(), strings.end());
  }
  for (size_t s = 0; s < sources.size(); ++s)
    for (const Record& r : sources[s]->records)
      out[s].push_back(r.int_label
                           ? r.label_int
                           : int64_t(std::lower_bound(result.begin(), result.end(), r.label_str) - result.begin()));
  return result;
}

// A causal row trains something only if some label after position 0 counts: the loss shifts, so
// labels[0] is never predicted.
bool has_loss(const Example& e) {
  for (size_t t = 1; t < e.labels.size(); ++t)
    if (e.labels[t] != kIgnore) return true;
  return false;
}

void truncate(Example& e, int64_t n) {
  if (int64_t(e.ids.size()) > n) e.ids.resize(size_t(n));
  if (int64_t(e.labels.size()) > n) e.labels.resize(size_t(n));
}

std::vector<Example> build_examples(const Source& s, const std::vector<int64_t>& class_idx, const DataOptions& o,
                                    const models::Tokenizer& tok) {
  std::vector<Example> out;
  const bool eos = o.add_eos && o.eos_id >= 0;
  if (s.format == DataFormat::PlainText) {
    std::vector<int64_t> ids = tok.encode(s.plain, false);
    for (size_t at = 0; at < ids.size(); at += size_t(o.max_seq_len)) {
      size_t n = std::min(ids.size() - at, size_t(o.max_seq_len));
      if (n < 2) break;  // a lone token has nothing to predict
      Example e;
      e.ids.assign(ids.begin() + at, ids.begin() + at + n);
      e.labels = e.ids;
      out.push_back(std::move(e));
    }
  } else {
    for (size_t i = 0; i < s.records.size(); ++i) {
      const Record& r = s.records[i];
      Example e;
      e.ids = tok.encode(r.text, o.add_special);
      if (s.format == DataFormat::Classification) {
        e.label = class_idx[i];
        truncate(e, o.max_seq_len);
        if (!e.ids.empty()) out.push_back(std::move(e));
        continue;
      }
      if (s.format == DataFormat::PromptCompletion) {
        e.labels.assign(e.ids.size(), kIgnore);  // as mlx-lm --mask-prompt / TRL completion-only
        std::vector<int64_t> c = tok.encode(r.completion, false);
        e.ids.insert(e.ids.end(), c.begin(), c.end());
        e.labels.insert(e.labels.end(), c.begin(), c.end());
      } else {
        e.labels = e.ids;
      }
      if (eos) e.ids.push_back(o.eos_id), e.labels.push_back(o.eos_id);
      truncate(e, o.max_seq_len);  // keeps the start: a cut completion may leave no loss token
      if (has_loss(e)) out.push_back(std::move(e));
    }
  }
  if (out.empty()) {
    size_t n = s.format == DataFormat::PlainText ? 1 : s.records.size();
    fail(s.path, s.format == DataFormat::Classification
                     ? fmt::format("no usable examples: none of the {} has a token", n)
                     : fmt::format("no usable examples: none of the {} has a token to predict within max_seq_len {}", n,
                                   o.max_seq_len));
  }
  return out;
}

// Unbiased draw in [0, bound) from the fully specified mt19937_64 stream, so splits and batch
// orders are the same with every standard library (std::uniform_int_distribution is not).
uint64_t draw_below(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t x;
  do x = gen();
  while (x >= limit);
  return x % bound;
}

void fisher_yates(std::vector<int64_t>& v, std::mt19937_64& gen) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(draw_below(gen, i))]);
}

// Concatenates the examples into rows of exactly len tokens; a shorter last row stays if it can train.
std::vector<Example> pack_rows(const std::vector<Example>& examples, int64_t len) {
  std::vector<Example> rows;
  Example cur;
  for (const Example& e : examples)
    for (size_t t = 0; t < e.ids.size(); ++t) {
      cur.ids.push_back(e.ids[t]);
      cur.labels.push_back(e.labels[t]);
      if (int64_t(cur.ids.size()) == len) {
        if (has_loss(cur)) rows.push_back(std::move(cur));
        cur = Example{};
      }
    }
  if (cur.ids.size() >= 2 && has_loss(cur)) rows.push_back(std::move(cur));
  return rows;
}

}  // namespace

Dataset load_dataset(const DataOptions& o, const models::Tokenizer& tok) {
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    throw std::runtime_error(fmt::format("[data] val_fraction must be in [0, 1), got {}", o.val_fraction));
  if (o.max_seq_len < 1)
    throw std::runtime_error(fmt::format("[data] max_seq_len must be >= 1, got {}", o.max_seq_len));
  if (o.path.empty()) throw std::runtime_error("[data] no training file given");

  Source train = load_source(o.path, o.format);
  if (o.pack && train.format == DataFormat::Classification)
    fail(o.path, "packing needs a causal LM format (text, prompt-completion, plain text), not classification");
  std::optional<Source> val;
  if (!o.val_path.empty()) {
    val = load_source(o.val_path, o.format);
    if (val->format != train.format)
      fail(o.val_path,
           fmt::format("a {} file, but the training file is {}", format_name(val->format), format_name(train.format)));
  }

  Dataset ds;
  ds.format = train.format;
  ds.pad_id = o.pad_id >= 0 ? o.pad_id : o.eos_id >= 0 ? o.eos_id : 0;
  std::vector<std::vector<int64_t>> class_idx(2);
  if (ds.classification()) {
    std::vector<Source*> sources{&train};
    if (val) sources.push_back(&*val);
    ds.label_names = map_labels(sources, o.label_names, class_idx);
    class_idx.resize(2);
  }
  ds.train = build_examples(train, class_idx[0], o, tok);

  if (val) {
    ds.val = build_examples(*val, class_idx[1], o, tok);
  } else {
    const size_t n = ds.train.size();
    size_t n_val = 0;
    if (o.val_fraction > 0 && n >= 2)
      n_val = std::min(n - 1, std::max<size_t>(1, size_t(std::llround(double(n) * o.val_fraction))));
    if (n_val > 0) {
      std::vector<int64_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937_64 gen(o.seed);
      fisher_yates(perm, gen);
      std::vector<char> is_val(n, 0);
      for (size_t i = 0; i < n_val; ++i) is_val[size_t(perm[i])] = 1;
      std::vector<Example> kept;  // both halves stay in file order
      for (size_t i = 0; i < n; ++i) (is_val[i] ? ds.val : kept).push_back(std::move(ds.train[i]));
      ds.train = std::move(kept);
    }
  }

  if (o.pack) {
    ds.train = pack_rows(ds.train, o.max_seq_len);
    if (ds.train.empty()) fail(o.path, "no usable rows after packing");
  }
  return ds;
}

IndexSplit split_indices(int64_t n, double held_out_fraction, uint64_t seed) {
  if (!(held_out_fraction > 0 && held_out_fraction < 1))
    throw std::runtime_error(fmt::format("[data] the held-out fraction must be in (0, 1), got {}", held_out_fraction));
  if (n < 2)
    throw std::runtime_error(fmt::format("[data] a train/held-out split needs at least 2 examples, has {}", n));
  const int64_t n_held = std::clamp<int64_t>(int64_t(std::ceil(double(n) * held_out_fraction - 1e-9)), 1, n - 1);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 gen(seed ^ 0xA5A5F00DD15EA5E5ULL);  // a stream apart from the validation split's mt19937_64(seed)
  fisher_yates(perm, gen);
  std::vector<char> held(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n_held; ++i) held[size_t(perm[size_t(i)])] = 1;
  IndexSplit out;
  for (int64_t i = 0; i < n; ++i) (held[size_t(i)] ? out.held_out : out.train).push_back(i);  // file order
  return out;
}

std::vector<Example> select_examples(const std::vector<Example>& all, const std::vector<int64_t>& idx) {
  std::vector<Example> out;
  for (int64_t i : idx) {
    if (i < 0 || i >= int64_t(all.size()))
      throw std::invalid_argument(
          fmt::format("[data] example index {} is out of range for {} examples", i, all.size()));
    out.push_back(all[size_t(i)]);
  }
  return out;
}

Batch make_batch(const Dataset& ds, const std::vector<Example>& split, const std::vector<int64_t>& rows, Device d) {
  if (rows.empty()) throw std::invalid_argument("[data] make_batch: no rows");
  size_t T = 0;
  for (int64_t r : rows) {
    if (r < 0 || r >= int64_t(split.size()))
      throw std::invalid_argument(
          fmt::format("[data] make_batch: row {} is out of range for {} examples", r, split.size()));
    T = std::max(T, split[size_t(r)].ids.size());
  }
  if (T == 0) throw std::invalid_argument("[data] make_batch: every row is empty");
  const size_t B = rows.size();
  const bool cls = ds.classification();
  std::vector<int64_t> ids(B * T, ds.pad_id), mask(B * T, 0), labels(cls ? 0 : B * T, kIgnore), classes;
  Batch b;
  for (size_t i = 0; i < B; ++i) {
    const Example& e = split[size_t(rows[i])];
    std::copy(e.ids.begin(), e.ids.end(), ids.begin() + i * T);
    std::fill_n(mask.begin() + i * T, e.ids.size(), 1);
    if (cls) {
      if (e.label < 0)
        throw std::invalid_argument(fmt::format("[data] make_batch: row {} has no class label", rows[i]));
      classes.push_back(e.label);
    } else {
      if (e.labels.size() != e.ids.size())
        throw std::invalid_argument(
            fmt::format("[data] make_batch: row {} has {} labels for {} ids", rows[i], e.labels.size(), e.ids.size()));
      std::copy(e.labels.begin(), e.labels.end(), labels.begin() + i * T);
    }
    b.tokens += int64_t(e.ids.size());
  }
  const Shape shape{int64_t(B), int64_t(T)};
  b.input_ids = from_data(ids, shape).to(d);
  b.attention_mask = from_data(mask, shape).to(d);
  if (cls)
    b.class_labels = from_data(classes, Shape{int64_t(B)}).to(d);
  else
    b.labels = from_data(labels, shape).to(d);
  b.rows = int64_t(B);
  return b;
}

std::vector<int64_t> shard_rows(const std::vector<int64_t>& rows, int rank, int world) {
  const size_t n = rows.size(), w = size_t(world), r = size_t(rank), base = n / w, extra = n % w;
  const size_t begin = r * base + std::min(r, extra), len = base + (r < extra ? 1 : 0);
  return {rows.begin() + std::ptrdiff_t(begin), rows.begin() + std::ptrdiff_t(begin + len)};
}

BatchSampler::BatchSampler(int64_t n_examples, int64_t batch_size, uint64_t seed, bool shuffle, bool drop_last)
    : n_(n_examples), batch_(batch_size), seed_(seed), shuffle_(shuffle), drop_last_(drop_last) {
  if (n_ <= 0) throw std::invalid_argument(fmt::format("[data] BatchSampler: n_examples must be > 0, got {}", n_));
  if (batch_ <= 0)
    throw std::invalid_argument(fmt::format("[data] BatchSampler: batch_size must be > 0, got {}", batch_));
  // Otherwise next() could never return a batch.
  if (drop_last_ && batch_ > n_)
    throw std::invalid_argument(
        fmt::format("[data] BatchSampler: batch_size {} is larger than the {} examples with drop_last", batch_, n_));
  reshuffle();
}

void BatchSampler::reshuffle() {
  order_.resize(size_t(n_));
  std::iota(order_.begin(), order_.end(), 0);
  if (!shuffle_) return;
  std::mt19937_64 gen(seed_ ^ (uint64_t(epoch_) * 0x9E3779B97F4A7C15ULL));
  fisher_yates(order_, gen);
}

// The epoch advances as soon as its last batch is handed out, so epoch() counts finished epochs and
// a checkpoint taken between batches never sits on an exhausted epoch.
std::vector<int64_t> BatchSampler::next() {
  const int64_t take = std::min(batch_, n_ - cursor_);
  std::vector<int64_t> out(order_.begin() + cursor_, order_.begin() + cursor_ + take);
  cursor_ += take;
  if (cursor_ >= n_ || (drop_last_ && n_ - cursor_ < batch_)) {
    ++epoch_;
    cursor_ = 0;
    reshuffle();
  }
  return out;
}

void BatchSampler::restore(int64_t epoch, int64_t cursor) {
  if (epoch < 0 || cursor < 0 || cursor > n_)
    throw std::invalid_argument(
        fmt::format("[data] BatchSampler: cannot restore epoch {} cursor {} with {} examples", epoch, cursor, n_));
  epoch_ = epoch;
  cursor_ = cursor;
  if (cursor_ >= n_ || (drop_last_ && n_ - cursor_ < batch_)) ++epoch_, cursor_ = 0;
  reshuffle();
}

int64_t BatchSampler::batches_per_epoch() const { return drop_last_ ? n_ / batch_ : (n_ + batch_ - 1) / batch_; }

}  // namespace rf::tools
