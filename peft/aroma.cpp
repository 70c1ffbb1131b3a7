#include "peft/aroma.h"
