/* Growable byte buffer. */
#include "buf.h"
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void edge_buf_reserve(edge_buf *b, size_t n)
{
    if (b->cap - b->len >= n) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) cap *= 2;
    b->base = edge_realloc(b->base, cap);
    b->cap = cap;
}

void edge_buf_append(edge_buf *b, const void *p, size_t n)
{
    if (n == 0) return;
    edge_buf_reserve(b, n);
    memcpy(b->base + b->len, p, n);
    b->len += n;
}

void edge_buf_printf(edge_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->base ? b->base + b->len : NULL, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        edge_buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(b->base + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void edge_buf_consume(edge_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
}

void edge_buf_reset(edge_buf *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) edge_buf_free(b);
}

void edge_buf_free(edge_buf *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}
