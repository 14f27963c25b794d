/* The cache writer tap of a streamed response (cache_writer.h). */
#include "cache_writer.h"
#include "body_pipe.h"
#include "cache.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cache_writer {
    edge_pipe_tap tap;
    struct edge_cache *cache;
    struct ev_loop *loop;
    edge_response entry;         /* the head, then the body as it arrives */
    edge_cache_life life;
    size_t   limit;              /* --cache-max-object */
    size_t   head_size;          /* the entry's size without its body */
    int      given_up;
    uint64_t conn_id;
    char     request_id[EDGE_REQUEST_ID_MAX + 1];
    edge_buf keys;               /* key, marker key, vary names, flight key: one block */
    size_t   klen, marker_klen, names_len, flight_klen;
    unsigned has_marker : 1, has_flight : 1;
} cache_writer;

void edge_response_copy_head(edge_response *to, const edge_response *from)
{
    to->status = from->status;
    edge_buf_append(&to->data, from->data.base, from->data.len);
    if (from->n_headers) {
        to->headers = edge_malloc((size_t)from->n_headers * sizeof(*to->headers));
        memcpy(to->headers, from->headers, (size_t)from->n_headers * sizeof(*to->headers));
    }
    to->n_headers = to->cap_headers = from->n_headers;
    to->ttl = from->ttl;
    to->grace = from->grace;
    to->keep = from->keep;
    to->has_ttl = from->has_ttl;
    to->has_grace = from->has_grace;
    to->has_keep = from->has_keep;
    to->no_compress = from->no_compress;
    to->cache_mode = from->cache_mode;
    to->has_server = from->has_server;
    to->has_date = from->has_date;
}

static void free_writer(cache_writer *cw)
{
    edge_buf_free(&cw->entry.data);
    edge_buf_free(&cw->entry.body);
    free(cw->entry.headers);
    edge_buf_free(&cw->keys);
    free(cw);
}

static const char *flight_key(const cache_writer *cw)
{
    return cw->keys.base + cw->klen + cw->marker_klen + cw->names_len;
}

/* Nothing will be stored: the waiters go to the origin themselves now
 * rather than after the whole body passed, and the pipe may stop being
 * read for us (edge_pipe_drain). */
static void give_up(cache_writer *cw, size_t size)
{
    cw->given_up = 1;
    cw->tap.done = 1;
    if (cw->has_flight) edge_cache_flight_done(cw->cache, flight_key(cw), cw->flight_klen);
    cw->has_flight = 0;
    edge_buf_free(&cw->entry.body);
    edge_log(EDGE_LOG_INFO, cw->conn_id,
             "request %s: response not cached: %zu bytes or more, more than --cache-max-object %zu",
             cw->request_id, size, cw->limit);
}

static void on_data(edge_pipe_tap *t, const char *p, size_t n)
{
    cache_writer *cw = (cache_writer *)t;
    if (cw->given_up) return;
    size_t size = cw->head_size + cw->entry.body.len + n;
    if (size > cw->limit) {
        give_up(cw, size);
        return;
    }
    edge_buf_append(&cw->entry.body, p, n);
}

/* The marker at the base key naming the fields the response varies by. */
static void put_marker(cache_writer *cw, const char *key, const char *names, double now)
{
    edge_response marker = {.status = EDGE_CACHE_MARKER_STATUS};
    edge_response_add_header(&marker, "vary", 4, names, cw->names_len);
    edge_cache_put_life(cw->cache, key, cw->marker_klen, &marker, now, &cw->life);
    edge_buf_free(&marker.data);
    free(marker.headers);
}

static void on_end(edge_pipe_tap *t, int ok)
{
    cache_writer *cw = (cache_writer *)t;
    const char *key = cw->keys.base, *marker_key = key + cw->klen, *names = marker_key + cw->marker_klen;
    if (ok && !cw->given_up) {
        double now = ev_now(cw->loop);
        if (edge_cache_put_life(cw->cache, key, cw->klen, &cw->entry, now, &cw->life) == EDGE_OK && cw->has_marker)
            put_marker(cw, marker_key, names, now);
    }
    if (cw->has_flight) edge_cache_flight_done(cw->cache, flight_key(cw), cw->flight_klen);
    free_writer(cw);
}

void edge_cache_writer_attach(edge_pipe *pipe, const edge_cache_writer_args *a)
{
    cache_writer *cw = edge_calloc(1, sizeof(*cw));
    cw->tap.data = on_data;
    cw->tap.end = on_end;
    cw->cache = a->cache;
    cw->loop = a->loop;
    cw->life = a->life;
    cw->limit = edge_cache_max_object(a->cache);
    cw->conn_id = a->conn_id;
    snprintf(cw->request_id, sizeof(cw->request_id), "%s", a->request_id);
    edge_response_copy_head(&cw->entry, a->head);
    cw->head_size = edge_cache_object_size(a->klen, &cw->entry);
    cw->klen = a->klen;
    edge_buf_append(&cw->keys, a->key, a->klen);
    if (a->marker_key) {
        cw->has_marker = 1;
        cw->marker_klen = a->marker_klen;
        cw->names_len = a->vary_names->len;
        edge_buf_append(&cw->keys, a->marker_key, a->marker_klen);
        edge_buf_append(&cw->keys, a->vary_names->base, a->vary_names->len);
    }
    if (a->flight_key) {
        cw->has_flight = 1;
        cw->flight_klen = a->flight_klen;
        edge_buf_append(&cw->keys, a->flight_key, a->flight_klen);
    }
    if (pipe->length >= 0 && cw->head_size + (uint64_t)pipe->length > cw->limit)
        give_up(cw, cw->head_size + (size_t)pipe->length);
    edge_pipe_add_tap(pipe, &cw->tap);
}
