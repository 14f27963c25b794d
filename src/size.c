/* Byte counts with k, m and g suffixes (size.h). */
#include "size.h"
#include "common.h"

#include <errno.h>
#include <stdlib.h>

int edge_parse_size(const char *s, size_t *out)
{
    if (*s < '0' || *s > '9') return EDGE_ERROR;     /* no sign, no blank */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return EDGE_ERROR;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
    if (*end != '\0' || v > (1ULL << (40 - shift))) return EDGE_ERROR;
    *out = (size_t)(v << shift);
    return EDGE_OK;
}
