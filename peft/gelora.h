#pragma once
// GeLoRA (methods.md §4): per-layer intrinsic dimensions of the frozen model -> rank_pattern.

namespace rf::peft {}  // namespace rf::peft
