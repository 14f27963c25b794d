/* A growable byte buffer: [base, base+len) is data, cap is allocated size.
 * Callers bound its growth themselves (limits are protocol decisions). */
#ifndef EDGE_BUF_H
#define EDGE_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct edge_buf {
    char  *base;
    size_t len;
    size_t cap;
} edge_buf;

/* Makes room for at least n more bytes after len. */
void edge_buf_reserve(edge_buf *b, size_t n);
/* Appends n bytes. */
void edge_buf_append(edge_buf *b, const void *p, size_t n);
/* Appends a printf-formatted string. */
void edge_buf_printf(edge_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes, moving the rest to the front. */
void edge_buf_consume(edge_buf *b, size_t n);
/* Empties the buffer; frees its memory when it grew past keep bytes. */
void edge_buf_reset(edge_buf *b, size_t keep);
/* Frees the memory. */
void edge_buf_free(edge_buf *b);

static inline void edge_buf_append_str(edge_buf *b, const char *s)
{
    edge_buf_append(b, s, strlen(s));
}

/* Writes v in decimal into out (at least 21 bytes); returns the length.
 * For hot paths where snprintf's parsing shows up in profiles. */
static inline size_t edge_format_u64(char *out, unsigned long long v)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

#endif
