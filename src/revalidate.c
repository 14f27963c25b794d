/* Updating an entry from an origin's 304 (revalidate.h). */
#include "revalidate.h"
#include "cache.h"

#include <stdlib.h>
#include <string.h>

const char *edge_cache_entry_field(const edge_cache_entry *e, const char *name, size_t n, size_t *vlen)
{
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    for (uint32_t i = 0; i < e->n_headers; i++) {
        if (h[i].name.len == n && memcmp(data + h[i].name.off, name, n) == 0) {
            *vlen = h[i].value.len;
            return data + h[i].value.off;
        }
    }
    return NULL;
}

static int has_field(const edge_response *resp, const char *name, size_t n)
{
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (h->name.len == n && memcmp(resp->data.base + h->name.off, name, n) == 0) return 1;
    }
    return 0;
}

/* Fields of a 304 that never replace the stored ones. */
static int kept_from_entry(const char *name, size_t n)
{
    static const char *const names[] = {"content-length", "x-cache", "age", "cache-status"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (n == strlen(names[i]) && memcmp(name, names[i], n) == 0) return 1;
    return 0;
}

void edge_revalidate_merge(edge_response *resp, const edge_cache_entry *e)
{
    edge_response merged = {.status = e->status};
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    for (uint32_t i = 0; i < e->n_headers; i++) {
        const char *name = data + h[i].name.off;
        size_t n = h[i].name.len;
        if (!kept_from_entry(name, n) && has_field(resp, name, n)) continue;   /* the 304's wins */
        edge_response_add_header(&merged, name, n, data + h[i].value.off, h[i].value.len);
    }
    for (int i = 0; i < resp->n_headers; i++) {
        const char *name = resp->data.base + resp->headers[i].name.off;
        size_t n = resp->headers[i].name.len;
        if (kept_from_entry(name, n)) continue;
        edge_response_add_header(&merged, name, n, resp->data.base + resp->headers[i].value.off,
                                 resp->headers[i].value.len);
    }
    edge_buf_append(&merged.body, edge_cache_entry_body(e), e->body_len);

    /* The script's cache fields survive the swap; everything else is the merge. */
    edge_response kept = *resp;
    edge_response_clear(resp);
    edge_buf_free(&resp->data);
    edge_buf_free(&resp->body);
    free(resp->headers);
    resp->status = merged.status;
    resp->data = merged.data;
    resp->body = merged.body;
    resp->headers = merged.headers;
    resp->n_headers = merged.n_headers;
    resp->cap_headers = merged.cap_headers;
    resp->ttl = kept.ttl;
    resp->grace = kept.grace;
    resp->keep = kept.keep;
    resp->has_ttl = kept.has_ttl;
    resp->has_grace = kept.has_grace;
    resp->has_keep = kept.has_keep;
    resp->cache_mode = kept.cache_mode;
    resp->no_compress = kept.no_compress || (e->flags & EDGE_CACHE_ENTRY_NO_COMPRESS);
}
