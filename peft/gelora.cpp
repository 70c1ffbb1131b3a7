#include "peft/gelora.h"
