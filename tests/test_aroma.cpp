// Tests for peft/aroma (methods.md faithful tests).
#include "tests/test_util.h"
