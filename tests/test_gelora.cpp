// Tests for peft/gelora (methods.md faithful tests).
#include "tests/test_util.h"
