/* SPDX-License-Identifier: MIT */
/* Small helpers every part of the library uses (declared in internal.h). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

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
