#pragma once
// TwoNN intrinsic-dimension estimator (methods.md §4.2, scikit-dimension formula).

namespace rf::peft {}  // namespace rf::peft
