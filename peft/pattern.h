#pragma once
// Name matching as PEFT does it: full-match regexes (PCRE2, close to Python's re), "."-suffix lists,
// layer indices, and "did you mean" suggestions for names that match nothing.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "peft/config.h"

namespace rf::peft {

// Python re.fullmatch / re.match semantics for the patterns PEFT configs use. Throws "[peft] bad regex ...".
bool regex_fullmatch(const std::string& pattern, const std::string& text);
// re.match(rf"(.*\.)?({key})$", name): rank_pattern / alpha_pattern keys.
bool pattern_key_matches(const std::string& key, const std::string& name);
// A rank_pattern / alpha_pattern key that matches exactly this module path (dots escaped), for the
// strategies that export per-module ranks (AROMA, AutoLoRA).
std::string exact_pattern_key(const std::string& path);
// c targets exactly these module paths, whatever its selector was: target_modules = the list, no
// exclude_modules / layers_to_transform / layers_pattern (the exports of AROMA, AdaLoRA, AutoLoRA).
void target_exactly(LoraConfig& c, std::vector<std::string> paths);
// PEFT's check_target_module_exists for one selector (List or Regex).
bool selector_matches(const ModuleSelector& s, const std::string& name);
// The transformer layer index in a module name ("model.layers.3.self_attn.q_proj" -> 3) following
// layers_pattern (any of them) or, when empty, the first ".<word>.<index>." in the name.
std::optional<int64_t> layer_index(const std::string& name, const std::vector<std::string>& layers_pattern);
// Up to n candidates closest to `query` by edit distance (on the last name component and the whole name).
// Levenshtein distance (insert, delete, substitute: 1 each).
size_t edit_distance(const std::string& a, const std::string& b);
std::vector<std::string> close_names(const std::string& query, const std::vector<std::string>& candidates,
                                     size_t n = 5);

}  // namespace rf::peft
