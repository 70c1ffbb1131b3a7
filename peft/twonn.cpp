#include "peft/twonn.h"
