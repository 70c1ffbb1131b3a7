// PLACEHOLDER
#include <stdexcept>
#include "models/tokenizer.h"
namespace rf::models {
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) { throw std::runtime_error("[tokenizer] not yet"); }
}
