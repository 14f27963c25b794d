/* Definitions every edge module shares: status codes, container_of, allocation. */
#ifndef EDGE_COMMON_H
#define EDGE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define EDGE_VERSION "0.1.0"
#define EDGE_SERVER  "edge/" EDGE_VERSION

/* The one status vocabulary: done now, failed, or will finish later. */
enum {
    EDGE_OK    = 0,
    EDGE_ERROR = -1,
    EDGE_AGAIN = -2,  /* the operation continues asynchronously */
    EDGE_DONE  = -3   /* the object was finished (closed/freed): do not touch it */
};

#define edge_container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define EDGE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define EDGE_UNUSED(x) ((void)(x))

/* Allocation that cannot fail: out of memory aborts here, in one place, so
 * error paths elsewhere are about real errors (bad input, closed peers). */
void *edge_malloc(size_t n);
void *edge_calloc(size_t n, size_t size);
void *edge_realloc(void *p, size_t n);
char *edge_strdup(const char *s);

/* Built with AddressSanitizer (gcc's macro, or clang's feature test): caches
 * of freed objects are off then, so that a use after free is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#define EDGE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDGE_ASAN 1
#endif
#endif

#endif
