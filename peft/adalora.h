#pragma once
// AdaLoRA (methods.md §5): SVD-form adapter, importance, budget schedule, masking, orthogonality loss.

namespace rf::peft {}  // namespace rf::peft
