/* Size-class block cache in front of malloc (see slab.h). */
#include "slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_KEEP 0
#else
#define SLAB_KEEP 256           /* blocks cached per class: at most ~2 MiB in all */
#endif

#define MIN_SHIFT 6             /* the smallest class: 64 bytes */
#define LARGE     0xff          /* a block too big for a class: plain malloc */

/* 16 bytes keep the payload as aligned as malloc's. */
typedef union header {
    unsigned char cls;
    max_align_t   align;
} header;

/* A freed block is linked through its payload. */
typedef struct free_block {
    struct free_block *next;
} free_block;

static int class_of(size_t n)
{
    size_t size = (size_t)1 << MIN_SHIFT;
    for (int c = 0; c < SLAB_CLASSES; c++, size <<= 1)
        if (n <= size) return c;
    return LARGE;
}

static size_t class_size(int c)
{
    return (size_t)1 << (MIN_SHIFT + c);
}

void *edge_slab_alloc(edge_slab *s, size_t n)
{
    int c = class_of(n);
    if (c != LARGE && s->free[c]) {
        free_block *b = s->free[c];
        s->free[c] = b->next;
        s->n_free[c]--;
        return b;
    }
    if (c == LARGE && n > SIZE_MAX - sizeof(header)) return NULL;
    header *h = malloc(sizeof(header) + (c == LARGE ? n : class_size(c)));
    if (h == NULL) return NULL;
    h->cls = (unsigned char)c;
    return h + 1;
}

void *edge_slab_calloc(edge_slab *s, size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n) return NULL;
    void *p = edge_slab_alloc(s, count * n);
    if (p) memset(p, 0, count * n);
    return p;
}

void edge_slab_free(edge_slab *s, void *p)
{
    if (p == NULL) return;
    header *h = (header *)p - 1;
    int c = h->cls;
    if (c == LARGE || s->n_free[c] >= SLAB_KEEP) {
        free(h);
        return;
    }
    free_block *b = p;
    b->next = s->free[c];
    s->free[c] = b;
    s->n_free[c]++;
}

void *edge_slab_realloc(edge_slab *s, void *p, size_t n)
{
    if (p == NULL) return edge_slab_alloc(s, n);
    header *h = (header *)p - 1;
    if (h->cls != LARGE && n <= class_size(h->cls)) return p;
    if (h->cls == LARGE && class_of(n) == LARGE) {
        if (n > SIZE_MAX - sizeof(header)) return NULL;
        header *g = realloc(h, sizeof(header) + n);
        return g ? g + 1 : NULL;
    }
    void *q = edge_slab_alloc(s, n);
    if (q == NULL) return NULL;
    size_t old = h->cls == LARGE ? n : class_size(h->cls);   /* LARGE shrinking into a class: n fits */
    memcpy(q, p, old < n ? old : n);
    edge_slab_free(s, p);
    return q;
}

void edge_slab_drain(edge_slab *s)
{
    for (int c = 0; c < SLAB_CLASSES; c++) {
        while (s->free[c]) {
            free_block *b = s->free[c];
            s->free[c] = b->next;
            free((header *)b - 1);
        }
        s->n_free[c] = 0;
    }
}
