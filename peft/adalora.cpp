#include "peft/adalora.h"
