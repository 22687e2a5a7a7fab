/* SPDX-License-Identifier: MIT */
/* Small helpers every part of the library uses (declared in internal.h). */
#include "internal.h"
#include "sys.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ss__array_grow(void **arr, size_t *cap, size_t need, size_t size, size_t first,
                   size_t max)
{
    size_t n = *cap ? *cap : (first ? first : 1);

    if (need <= *cap)
        return 0;
    if (need > max || size == 0)
        return -ENOMEM;
    while (n < need)
        n = n > max / 2 ? max : n * 2;
    if (n > max)
        n = max;
    if (n > SIZE_MAX / size)
        return -ENOMEM;
    unsigned char *p = realloc(*arr, n * size);
    if (!p)
        return -ENOMEM;
    memset(p + *cap * size, 0, (n - *cap) * size);
    *arr = p;
    *cap = n;
    return 0;
}

void ss__id_hex(const ss_id *id, char out[SS_ID_HEX_LEN])
{
    static const char hx[] = "0123456789abcdef";

    for (int i = 0; i < SS_ID_SIZE; i++) {
        out[2 * i] = hx[id->b[i] >> 4];
        out[2 * i + 1] = hx[id->b[i] & 15];
    }
    out[2 * SS_ID_SIZE] = '\0';
}

/* ------------------------------------------------------------- busy polling */

void ss__spin_init(ss__spin *sp, int64_t opt_us)
{
    *sp = (ss__spin){ .backoff = SS_SPIN_SKIP_MIN };
    if (opt_us == SS_SPIN_AUTO) {
        sp->adaptive = true;
        sp->ns = ss__sys_sysconf(_SC_NPROCESSORS_ONLN) > 1 ? SS_SPIN_AUTO_NS : 0;
    } else if (opt_us > 0) {
        sp->ns = (uint64_t)opt_us * 1000;
    }
}

uint64_t ss__spin_window(ss__spin *sp)
{
    if (sp->skip) {
        sp->skip--;
        return 0;
    }
    return sp->ns;
}

void ss__spin_result(ss__spin *sp, bool hit)
{
    if (!sp->adaptive)
        return;
    if (hit) {
        sp->misses = 0;
        sp->backoff = SS_SPIN_SKIP_MIN;
    } else if (++sp->misses >= SS_SPIN_MISSES) {
        sp->misses = 0;
        sp->skip = sp->backoff;
        if (sp->backoff < SS_SPIN_SKIP_MAX)
            sp->backoff *= 2;
    }
}
