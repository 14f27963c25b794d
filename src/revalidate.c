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

/* Fields of a 304 that never replace the stored ones. */
static int kept_from_entry(const char *name, size_t n)
{
    static const char *const names[] = {"content-length", "x-cache", "age", "cache-status"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (n == strlen(names[i]) && memcmp(name, names[i], n) == 0) return 1;
    return 0;
}

/* Adds the fields of e that the 304 does not replace, then the 304's own. */
static void merge_fields(edge_response *merged, const edge_response *resp, const edge_cache_entry *e)
{
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    for (uint32_t i = 0; i < e->n_headers; i++) {
        const char *name = data + h[i].name.off;
        size_t n = h[i].name.len;
        if (!kept_from_entry(name, n) && edge_response_header(resp, name, n)) continue;   /* the 304's wins */
        edge_response_add_header(merged, name, n, data + h[i].value.off, h[i].value.len);
    }
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *f = &resp->headers[i];
        if (kept_from_entry(resp->data.base + f->name.off, f->name.len)) continue;
        edge_response_add_header(merged, resp->data.base + f->name.off, f->name.len,
                                 resp->data.base + f->value.off, f->value.len);
    }
}

void edge_revalidate_merge(edge_response *resp, const edge_cache_entry *e)
{
    edge_response merged = {0};
    merge_fields(&merged, resp, e);
    edge_response_take_fields(resp, &merged);
    edge_response_drop_pipe(resp);            /* the 304's (empty) body */
    resp->status = e->status;
    resp->body.len = 0;
    edge_buf_append(&resp->body, edge_cache_entry_body(e), e->body_len);
    if (e->flags & EDGE_CACHE_ENTRY_NO_COMPRESS) resp->no_compress = 1;
}
