/* Byte counts as operators write them: "64m", "512k", "1g", "4096". */
#ifndef EDGE_SIZE_H
#define EDGE_SIZE_H

#include <stddef.h>

/* Parses digits with an optional k, m or g suffix in either case (powers of
 * 1024: 1k = 1024), at most 1 TiB: EDGE_OK and *out, or EDGE_ERROR (a sign,
 * a blank, another suffix, an overflow). */
int edge_parse_size(const char *s, size_t *out);

#endif
