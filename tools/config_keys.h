#pragma once
// The train config's key table (one source of truth: parser, --list-keys, config.yaml, --resume check).
#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "tools/train_config.h"

namespace rf::tools {

struct KeyDef {
  std::string key;                   // dotted
  std::string type;                  // shown by --list-keys
  std::string help;                  // one line
  std::vector<std::string> methods;  // empty: every method
  // Given with a method outside `methods`: an error (a key of another method); otherwise a note that
  // the method does not use it (the generic LoRA keys, so a LoRA config can switch method).
  bool strict = false;
  bool resume_safe = false;  // may change between a run and its --resume
  bool path = false;         // resolved against the config's folder before `read`
  // Reads a present, non-null value (where: for messages); may throw std::exception, which the
  // parser reports as "<where>: <key>: <message>".
  std::function<void(const YAML::Node&, const std::string& where, TrainConfig&)> read;
  std::function<YAML::Node(const TrainConfig&)> write;  // the resolved value
  bool used_by(const std::string& method) const;
};

const std::vector<KeyDef>& key_defs();
const KeyDef* find_key(const std::string& dotted);

}  // namespace rf::tools
