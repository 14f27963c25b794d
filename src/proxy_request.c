/* Building the origin request of edge.proxy (proxy_request.h). */
#include "proxy_request.h"

#include <string.h>
#include <strings.h>

static int name_is(const char *name, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(name, lit, n) == 0;
}

/* Whether the comma-separated list names name (case-insensitive). */
static int list_names(const char *list, size_t len, const char *name, size_t n)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ',')) i++;
        size_t start = i;
        while (i < len && list[i] != ',') i++;
        size_t end = i;
        while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t')) end--;
        if (end - start == n && strncasecmp(list + start, name, n) == 0) return 1;
    }
    return 0;
}

/* Fields that belong to one connection, never forwarded (RFC 9110 7.6.1). */
static int is_hop_by_hop(const char *name, size_t n)
{
    return name_is(name, n, "connection") || name_is(name, n, "keep-alive") || name_is(name, n, "te") ||
           name_is(name, n, "transfer-encoding") || name_is(name, n, "upgrade") ||
           (n >= 6 && memcmp(name, "proxy-", 6) == 0);
}

static int in_drop_list(const edge_buf *drop, const char *name, size_t n)
{
    if (drop == NULL) return 0;
    for (size_t i = 0; i < drop->len;) {
        size_t len = strlen(drop->base + i);
        if (len == n && memcmp(drop->base + i, name, n) == 0) return 1;
        i += len + 1;
    }
    return 0;
}

int edge_proxy_response_field_dropped(const char *name, size_t n, const char *connection, size_t clen)
{
    if (is_hop_by_hop(name, n) || name_is(name, n, "server") || name_is(name, n, "date")) return 1;
    return connection && list_names(connection, clen, name, n);
}

static int header_lists(const edge_request *req, const char *field, const char *token)
{
    const edge_header *h = edge_request_header(req, field, strlen(field));
    return h && list_names(edge_request_ptr(req, h->value), h->value.len, token, strlen(token));
}

int edge_proxy_wants_upgrade(const edge_request *req)
{
    /* req->upgrade first: the header scan runs only for the rare request
     * that asked (this runs for every request with a cache key). */
    return req->upgrade && strcmp(req->version, "1.1") == 0 && !req->has_body && req->method.len == 3 &&
           memcmp(edge_request_ptr(req, req->method), "GET", 3) == 0 &&
           header_lists(req, "upgrade", "websocket") && header_lists(req, "connection", "upgrade");
}

static void put_line(edge_buf *b, const char *name, const char *v, size_t vlen)
{
    edge_buf_append_str(b, name);
    edge_buf_append(b, ": ", 2);
    edge_buf_append(b, v, vlen);
    edge_buf_append(b, "\r\n", 2);
}

/* The client's request fields, but hop-by-hop ones, those edge rewrites and
 * those the script replaces. */
static void copy_fields(const edge_request *req, const edge_proxy_request_opts *o, edge_buf *out,
                        const edge_header **xff)
{
    const edge_header *conn = edge_request_header(req, "connection", 10);
    const char *cv = conn ? edge_request_ptr(req, conn->value) : NULL;
    size_t clen = conn ? conn->value.len : 0;
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        const char *name = edge_request_ptr(req, h->name);
        size_t n = h->name.len;
        if (o->keep_upgrade && name_is(name, n, "upgrade")) {
            put_line(out, "Upgrade", edge_request_ptr(req, h->value), h->value.len);
            continue;
        }
        if (is_hop_by_hop(name, n) || (cv && list_names(cv, clen, name, n))) continue;
        /* Expect: edge answered 100-continue itself, as nginx does. */
        if (name_is(name, n, "host") || name_is(name, n, "content-length") || name_is(name, n, "expect")) continue;
        if (name_is(name, n, "x-forwarded-for")) {
            if (o->x_forwarded) {
                *xff = h;
                continue;
            }
        } else if (o->x_forwarded && (name_is(name, n, "x-forwarded-proto") || name_is(name, n, "x-forwarded-host"))) {
            continue;
        }
        if (in_drop_list(o->drop, name, n)) continue;
        if (o->cached && ((n >= 3 && memcmp(name, "if-", 3) == 0) || name_is(name, n, "range"))) continue;
        edge_buf_append(out, name, n);
        edge_buf_append(out, ": ", 2);
        edge_buf_append(out, edge_request_ptr(req, h->value), h->value.len);
        edge_buf_append(out, "\r\n", 2);
    }
}

/* The client's Host as received, port included: Host, else :authority,
 * else the normalised host. */
static const char *client_host(const edge_request *req, size_t *n)
{
    const edge_header *h = edge_request_header(req, "host", 4);
    if (h) {
        *n = h->value.len;
        return edge_request_ptr(req, h->value);
    }
    edge_span s = req->authority.len ? req->authority : req->host;
    if (s.off == EDGE_SPAN_NONE) return NULL;
    *n = s.len;
    return edge_request_ptr(req, s);
}

static void add_forwarded(const edge_request *req, const edge_proxy_request_opts *o, const edge_header *xff,
                          edge_buf *out)
{
    char addr[64];
    edge_request_peer_ip(req, addr, sizeof(addr));
    edge_buf_append_str(out, "X-Forwarded-For: ");
    if (xff && o->peer_trusted) {      /* a proxy we trust: its list goes on, with it last */
        edge_buf_append(out, edge_request_ptr(req, xff->value), xff->value.len);
        edge_buf_append(out, ", ", 2);
    }
    edge_buf_append_str(out, addr);
    edge_buf_append(out, "\r\n", 2);
    put_line(out, "X-Forwarded-Proto", req->scheme, strlen(req->scheme));
    size_t n;
    const char *host = client_host(req, &n);
    if (host) put_line(out, "X-Forwarded-Host", host, n);
}

static void add_host(const edge_request *req, const edge_proxy_request_opts *o, edge_buf *out)
{
    if (o->no_host) return;
    if (o->host) {
        put_line(out, "Host", o->host, o->host_len);
        return;
    }
    size_t n;
    const char *host = client_host(req, &n);
    if (host) put_line(out, "Host", host, n);
}

static void add_target(const edge_request *req, const edge_proxy_request_opts *o, edge_buf *out)
{
    if (o->target) {
        edge_buf_append(out, o->target, o->target_len);
        return;
    }
    edge_buf_append(out, edge_request_ptr(req, req->path), req->path.len);
    if (req->query.off != EDGE_SPAN_NONE) {
        edge_buf_append(out, "?", 1);
        edge_buf_append(out, edge_request_ptr(req, req->query), req->query.len);
    }
}

void edge_proxy_build_request(const edge_request *req, const edge_proxy_request_opts *o, edge_buf *out)
{
    if (o->method) edge_buf_append(out, o->method, o->method_len);
    else edge_buf_append(out, edge_request_ptr(req, req->method), req->method.len);
    edge_buf_append(out, " ", 1);
    add_target(req, o, out);
    edge_buf_append_str(out, " HTTP/1.1\r\n");
    add_host(req, o, out);
    const edge_header *xff = NULL;
    copy_fields(req, o, out, &xff);
    if (o->x_forwarded) add_forwarded(req, o, xff, out);
    if (o->via) {
        edge_buf_append_str(out, req->version[0] == '2' ? "Via: 2 edge\r\n" : "Via: 1.1 edge\r\n");
    }
    if (o->keep_upgrade) edge_buf_append_str(out, "Connection: upgrade\r\n");
    if (o->if_none_match) put_line(out, "If-None-Match", o->if_none_match, o->if_none_match_len);
    if (o->if_modified_since) put_line(out, "If-Modified-Since", o->if_modified_since, o->if_modified_since_len);
    if (o->extra) edge_buf_append(out, o->extra->base, o->extra->len);
    /* A body, or a method that has one by definition (RFC 9110 8.6: a POST without
     * one says Content-Length: 0), as nginx sends it. A streamed body goes with
     * its length, or chunked when the client sent none. */
    const char *m = o->method ? o->method : edge_request_ptr(req, req->method);
    size_t mlen = o->method ? o->method_len : req->method.len;
    int body_method = (mlen == 4 && memcmp(m, "POST", 4) == 0) || (mlen == 3 && memcmp(m, "PUT", 3) == 0) ||
                      (mlen == 5 && memcmp(m, "PATCH", 5) == 0);
    if (o->streamed_body && o->body_length < 0) {
        edge_buf_append_str(out, "Transfer-Encoding: chunked\r\n");
    } else if (o->streamed_body || req->has_body || req->body.len || body_method) {
        char num[24];
        uint64_t len = o->streamed_body ? (uint64_t)o->body_length : req->body.len;
        edge_buf_append_str(out, "Content-Length: ");
        edge_buf_append(out, num, edge_format_u64(num, len));
        edge_buf_append(out, "\r\n", 2);
    }
    edge_buf_append(out, "\r\n", 2);
}
