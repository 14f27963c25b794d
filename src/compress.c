/* Response compression: the entry points (compress.h). */
#include "compress.h"
#include "cache.h"
#include "common.h"
#include "compress_codec.h"
#include "compress_policy.h"
#include "compress_stream.h"
#include "log.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* Rewrites resp's fields for coding (edge_compress_rewrite_head). */
static void rewrite_fields(edge_response *resp, int coding)
{
    edge_response head = {0};
    edge_fields f = edge_response_fields(resp);
    edge_compress_rewrite_head(&head, &f, coding);
    edge_response_take_fields(resp, &head);
}

static void log_failure(edge_request *req, int coding)
{
    edge_log(EDGE_LOG_ERR, req->conn_id, "request %s: %s compression failed: sent uncompressed",
             edge_request_id(req), edge_coding_name(coding));
}

/* ---- responses on their way out ---- */

/* Compresses a whole body in place. */
static void compress_whole(edge_request *req, int coding)
{
    edge_response *resp = &req->resp;
    edge_buf out = {0};
    if (edge_compress_whole(coding, resp->body.base, resp->body.len, &out) != EDGE_OK) {
        edge_buf_free(&out);
        log_failure(req, coding);
        rewrite_fields(resp, EDGE_CODING_IDENTITY);
        return;
    }
    edge_buf_free(&resp->body);
    resp->body = out;
    rewrite_fields(resp, coding);
}

/* Puts a transform between the origin's pipe and the client. */
static void compress_streamed(edge_request *req, int coding)
{
    edge_response *resp = &req->resp;
    edge_pipe *dst = edge_compress_stream(resp->pipe, coding, req->worker->loop, req->conn_id);
    if (dst == NULL) {
        log_failure(req, coding);
        coding = EDGE_CODING_IDENTITY;
    } else {
        resp->pipe = dst;
    }
    rewrite_fields(resp, coding);
}

/* HEAD gets the identity's head; a Range is served from the identity
 * (range.h), whose bytes the ranges count. */
static int wants_identity(const edge_request *req)
{
    return req->is_head || edge_request_header(req, "range", 5) != NULL;
}

void edge_compress_response(edge_request *req)
{
    edge_response *resp = &req->resp;
    if (resp->compress_done) return;
    resp->compress_done = 1;
    edge_fields f = edge_response_fields(resp);
    int64_t len = resp->pipe ? resp->pipe->length : (int64_t)resp->body.len;
    if (edge_compress_check(req->worker->cfg, resp->status, &f, len, resp->no_compress) != EDGE_COMPRESS_ALLOWED)
        return;
    int coding = wants_identity(req) ? EDGE_CODING_IDENTITY : edge_compress_negotiate(req);
    if (coding == EDGE_CODING_IDENTITY) rewrite_fields(resp, coding);   /* Vary all the same */
    else if (resp->pipe) compress_streamed(req, coding);
    else compress_whole(req, coding);
}

/* ---- cache hits: the stored compressed copy ---- */

static edge_fields entry_fields(const edge_cache_entry *e)
{
    return (edge_fields){edge_cache_entry_headers(e), (int)e->n_headers, edge_cache_entry_header_data(e)};
}

/* The key of e's copy in coding, e's key .. "\0ce=br" (or gzip), in stack
 * when it fits, else allocated (the caller frees it when it is not stack). */
static char *copy_key(const edge_cache_entry *e, int coding, char *stack, size_t cap, size_t *klen)
{
    const char *name = edge_coding_name(coding);
    size_t nlen = strlen(name);
    *klen = e->key_len + 4 + nlen;
    char *k = *klen <= cap ? stack : edge_malloc(*klen);
    memcpy(k, edge_cache_entry_key(e), e->key_len);
    memcpy(k + e->key_len, "\0ce=", 4);
    memcpy(k + e->key_len + 4, name, nlen);
    return k;
}

/* The copy held at key, if it was made from e (not from an entry that e
 * replaced since: a copy carries its entry's stored_at, whichever worker's
 * clock made it): referenced, or NULL. Fresh or stale alike: a copy lives
 * exactly as long as the entry it was made from. */
static edge_cache_entry *find_copy(edge_cache *c, const edge_cache_entry *e, const char *key, size_t klen,
                                   double now)
{
    edge_cache_entry *copy = edge_cache_lookup(c, key, klen, now, EDGE_CACHE_STALE);
    if (copy == NULL || (!edge_cache_entry_is_marker(copy) && copy->stored_at == e->stored_at)) return copy;
    edge_cache_release(copy);
    return NULL;
}

/* Bytes a copy's fields may add to its entry's: the key's suffix,
 * Content-Encoding, Vary, "W/", spans, alignment and the link to its base key. */
#define COPY_HEAD_MARGIN 512

/* Whether e's copy surely fits in the cache. One that might not is never
 * made: a copy that could not be stored would be made again on every hit. */
static int copy_fits(edge_cache *c, const edge_cache_entry *e, int coding)
{
    size_t bound = edge_compress_bound(coding, e->body_len);
    size_t growth = bound > e->body_len ? bound - e->body_len : 0;
    return bound > 0 && e->size + growth + COPY_HEAD_MARGIN <= edge_cache_max_object(c);
}

/* Compresses e into req->resp and stores that as e's copy, with e's
 * stored_at and lifetimes: stale or fresh, it is made once. EDGE_ERROR when
 * compression failed (resp untouched). */
static int make_copy(edge_request *req, const edge_cache_entry *e, int coding, const char *key, size_t klen)
{
    edge_response *resp = &req->resp;
    edge_buf body = {0};
    if (edge_compress_whole(coding, edge_cache_entry_body(e), e->body_len, &body) != EDGE_OK) {
        edge_buf_free(&body);
        log_failure(req, coding);
        return EDGE_ERROR;
    }
    edge_fields f = entry_fields(e);
    resp->status = e->status;
    edge_compress_rewrite_head(resp, &f, coding);
    edge_buf_free(&resp->body);
    resp->body = body;
    edge_cache_life life = {e->expires_at - e->stored_at, e->grace, e->keep};
    edge_cache_put_life(req->worker->cache, key, klen, resp, e->stored_at, &life);
    return EDGE_OK;
}

/* Answers from e's copy in coding, made now if need be. EDGE_ERROR: send
 * the identity (nothing was put in req->resp). */
static int serve_copy(edge_request *req, const edge_cache_entry *e, int coding, double now)
{
    edge_cache *c = req->worker->cache;
    char stack[256];
    size_t klen;
    char *key = copy_key(e, coding, stack, sizeof(stack), &klen);
    int rc = EDGE_OK;
    edge_cache_entry *copy = find_copy(c, e, key, klen, now);
    if (copy) {
        edge_cache_entry_to_response(copy, &req->resp);
        edge_cache_release(copy);
    } else if (copy_fits(c, e, coding)) {
        rc = make_copy(req, e, coding, key, klen);
    } else {
        rc = EDGE_ERROR;
    }
    if (key != stack) free(key);
    return rc;
}

void edge_compress_from_entry(edge_request *req, const edge_cache_entry *e, double now)
{
    edge_response *resp = &req->resp;
    edge_fields f = entry_fields(e);
    resp->compress_done = 1;
    int off = (e->flags & EDGE_CACHE_ENTRY_NO_COMPRESS) != 0;
    if (edge_compress_check(req->worker->cfg, e->status, &f, (int64_t)e->body_len, off) != EDGE_COMPRESS_ALLOWED) {
        edge_cache_entry_to_response(e, resp);
        return;
    }
    int coding = wants_identity(req) ? EDGE_CODING_IDENTITY : edge_compress_negotiate(req);
    if (coding != EDGE_CODING_IDENTITY && serve_copy(req, e, coding, now) == EDGE_OK) return;
    resp->status = e->status;
    edge_compress_rewrite_head(resp, &f, EDGE_CODING_IDENTITY);
    edge_buf_append(&resp->body, edge_cache_entry_body(e), e->body_len);
}
