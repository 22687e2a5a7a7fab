/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#include "internal.h"
#include "segment.h"
bool ss__backing_available(int backing, uint64_t pages) { (void)backing; (void)pages; return false; }
