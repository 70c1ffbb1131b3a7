#pragma once
// AROMA (methods.md §1): rank-one increments, inner/outer loops, merge-and-reinit, moment resets.

namespace rf::peft {}  // namespace rf::peft
