// Tests for peft/adalora (methods.md faithful tests).
#include "tests/test_util.h"
