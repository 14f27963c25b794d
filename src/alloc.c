/* Allocation wrappers: abort on out-of-memory so callers never handle NULL. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "edge: out of memory allocating %zu bytes\n", n);
    abort();
}

void *edge_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) oom(n);
    return p;
}

void *edge_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) oom(n * size);
    return p;
}

void *edge_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) oom(n);
    return q;
}

char *edge_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(edge_malloc(n), s, n);
}
