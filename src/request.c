/* Protocol-neutral request and response storage. */
#include "request.h"
#include "body_pipe.h"
#include "common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>

#define KEEP_BYTES 8192   /* buffers up to this size stay allocated across keep-alive requests */

void edge_request_init(edge_request *req, const edge_request_ops *ops, struct edge_worker *w,
                       uint64_t conn_id)
{
    req->ops = ops;
    req->worker = w;
    req->conn_id = conn_id;
    req->query.off = req->host.off = EDGE_SPAN_NONE;
    req->version = "1.1";
    req->scheme = "https";
    req->resp.status = 200;
}

void edge_response_drop_pipe(edge_response *resp)
{
    if (resp->pipe == NULL) return;
    edge_pipe_close(resp->pipe);
    resp->pipe = NULL;
}

/* A streamed request body nobody took: its producer discards the rest. */
static void drop_body_pipe(edge_request *req)
{
    if (req->body_pipe == NULL) return;
    edge_pipe *p = req->body_pipe;
    req->body_pipe = NULL;
    edge_pipe_close(p);
}

void edge_request_reset(edge_request *req)
{
    edge_response_drop_pipe(&req->resp);
    drop_body_pipe(req);
    edge_buf_reset(&req->data, KEEP_BYTES);
    edge_buf_reset(&req->body, KEEP_BYTES);
    edge_buf_reset(&req->cache_key, KEEP_BYTES);
    edge_buf_reset(&req->resp.data, KEEP_BYTES);
    edge_buf_reset(&req->resp.body, KEEP_BYTES);
    req->n_headers = 0;
    req->resp.n_headers = 0;
    req->resp.status = 200;
    req->resp.has_server = req->resp.has_date = req->resp.fetched_as_get = 0;
    req->resp.has_ttl = req->resp.has_grace = req->resp.has_keep = 0;
    req->resp.compress_done = req->resp.no_compress = 0;
    req->resp.streamed = 0;
    req->method = req->path = (edge_span){0, 0};
    req->query = req->host = (edge_span){EDGE_SPAN_NONE, 0};
    req->authority = (edge_span){0, 0};
    req->has_body = req->is_head = req->upgrade = req->has_cache_key = req->body_streamed = 0;
    req->cache_status = NULL;
    req->start = 0;
    req->bytes_in = 0;
    req->id_num = 0;
    req->id[0] = '\0';
    req->upstream.used = 0;
}

void edge_request_free(edge_request *req)
{
    edge_response_drop_pipe(&req->resp);
    drop_body_pipe(req);
    edge_buf_free(&req->data);
    edge_buf_free(&req->body);
    edge_buf_free(&req->cache_key);
    edge_buf_free(&req->resp.data);
    edge_buf_free(&req->resp.body);
    free(req->headers);
    free(req->resp.headers);
    req->headers = req->resp.headers = NULL;
    req->cap_headers = req->resp.cap_headers = 0;
}

void edge_request_peer_ip(const edge_request *req, char *out, size_t n)
{
    const struct sockaddr_storage *ss = req->peer;
    if (n) out[0] = '\0';
    if (ss && ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)n);
    else if (ss && ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)n);
}

edge_span edge_request_store(edge_request *req, const char *p, size_t n)
{
    edge_span s = {(uint32_t)req->data.len, (uint32_t)n};
    edge_buf_append(&req->data, p, n);
    return s;
}

static edge_header *grow_headers(edge_header **arr, int *n, int *cap)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *arr = edge_realloc(*arr, (size_t)*cap * sizeof(**arr));
    }
    return &(*arr)[(*n)++];
}

void edge_request_add_header(edge_request *req, const char *name, size_t nlen,
                             const char *value, size_t vlen)
{
    edge_header *h = grow_headers(&req->headers, &req->n_headers, &req->cap_headers);
    h->name = edge_request_store(req, name, nlen);
    for (size_t i = 0; i < nlen; i++) {
        char *ch = req->data.base + h->name.off + i;
        *ch = (char)tolower((unsigned char)*ch);
    }
    h->value = edge_request_store(req, value, vlen);
}

/* The length of a Host or authority value without its ":port"; an IPv6
 * literal keeps its brackets. */
static size_t host_length(const char *p, size_t n)
{
    if (n && p[0] == '[') {                      /* [v6]:port */
        const char *close = memchr(p, ']', n);
        return close ? (size_t)(close - p) + 1 : n;
    }
    const char *colon = memchr(p, ':', n);
    return colon ? (size_t)(colon - p) : n;
}

static void lower_in_place(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (char)tolower((unsigned char)p[i]);
}

/* An absolute-form target's authority sets req->host (RFC 9112 3.2.2: it
 * wins over Host). Returns where the path starts, or 0 when the authority
 * has no host or carries userinfo (RFC 9110 4.2.4). */
static uint32_t take_authority(edge_request *req, edge_span target, uint32_t from)
{
    char *p = req->data.base + target.off;
    uint32_t i = from;
    while (i < target.len && p[i] != '/' && p[i] != '?') i++;
    size_t n = host_length(p + from, i - from);
    if (n == 0 || memchr(p + from, '@', i - from)) return 0;
    lower_in_place(p + from, n);
    req->host = (edge_span){target.off + from, (uint32_t)n};
    return i;
}

int edge_request_set_target(edge_request *req, edge_span target)
{
    const char *p = edge_request_ptr(req, target);
    uint32_t start = 0, n = target.len;
    int absolute = 0;

    /* absolute-form: scheme://authority/path -> /path */
    if (n && p[0] != '/' && p[0] != '*') {
        const char *sep = memchr(p, ':', n);
        if (sep && (uint32_t)(sep - p) + 3 <= n && sep[1] == '/' && sep[2] == '/') {
            start = take_authority(req, target, (uint32_t)(sep - p) + 3);
            if (start == 0) return EDGE_ERROR;
            absolute = 1;
        }
    }
    const char *q = memchr(p + start, '?', n - start);
    uint32_t end = q ? (uint32_t)(q - p) : n;
    if (q) req->query = (edge_span){target.off + end + 1, n - end - 1};
    if (absolute && end == start) req->path = edge_request_store(req, "/", 1);   /* http://a.example */
    else req->path = (edge_span){target.off + start, end - start};
    return EDGE_OK;
}

void edge_request_set_host(edge_request *req, const char *p, size_t n)
{
    size_t end = host_length(p, n);
    req->host = edge_request_store(req, p, end);
    if (end) lower_in_place(req->data.base + req->host.off, end);   /* data.base may be NULL when 0 */
}

const char *edge_request_id(edge_request *req)
{
    if (req->id[0] == '\0') snprintf(req->id, sizeof(req->id), "%016llx", (unsigned long long)req->id_num);
    return req->id;
}

const edge_header *edge_request_header(const edge_request *req, const char *name, size_t nlen)
{
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        if (h->name.len == nlen && memcmp(edge_request_ptr(req, h->name), name, nlen) == 0) return h;
    }
    return NULL;
}

void edge_request_copy(edge_request *to, const edge_request *from, int (*skip)(const char *name, size_t n))
{
    edge_buf_append(&to->data, from->data.base, from->data.len);
    for (int i = 0; i < from->n_headers; i++) {
        const edge_header *h = &from->headers[i];
        if (skip && skip(edge_request_ptr(from, h->name), h->name.len)) continue;
        *grow_headers(&to->headers, &to->n_headers, &to->cap_headers) = *h;   /* spans into the copy */
    }
    to->method = from->method;
    to->path = from->path;
    to->query = from->query;
    to->host = from->host;
    to->authority = from->authority;
    to->version = from->version;
    to->scheme = from->scheme;
    to->tls_version = from->tls_version;
    to->is_head = from->is_head;
}

void edge_request_remove_header(edge_request *req, const char *name, size_t nlen)
{
    int kept = 0;
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        if (h->name.len == nlen && memcmp(edge_request_ptr(req, h->name), name, nlen) == 0) continue;
        req->headers[kept++] = *h;
    }
    req->n_headers = kept;
}

void edge_response_set_status(edge_response *resp, int status)
{
    resp->status = status;
}

void edge_response_add_header(edge_response *resp, const char *name, size_t nlen,
                              const char *value, size_t vlen)
{
    edge_header *h = grow_headers(&resp->headers, &resp->n_headers, &resp->cap_headers);
    h->name = (edge_span){(uint32_t)resp->data.len, (uint32_t)nlen};
    edge_buf_append(&resp->data, name, nlen);
    h->value = (edge_span){(uint32_t)resp->data.len, (uint32_t)vlen};
    edge_buf_append(&resp->data, value, vlen);
    if (nlen == 6 && strncasecmp(name, "server", 6) == 0) resp->has_server = 1;
    if (nlen == 4 && strncasecmp(name, "date", 4) == 0) resp->has_date = 1;
}

const edge_header *edge_response_header(const edge_response *resp, const char *name, size_t nlen)
{
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (h->name.len == nlen && memcmp(resp->data.base + h->name.off, name, nlen) == 0) return h;
    }
    return NULL;
}

void edge_response_remove_header(edge_response *resp, const char *name, size_t nlen)
{
    int kept = 0;
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (h->name.len == nlen && memcmp(resp->data.base + h->name.off, name, nlen) == 0) continue;
        resp->headers[kept++] = *h;
    }
    resp->n_headers = kept;
}

void edge_response_take_fields(edge_response *resp, edge_response *from)
{
    edge_buf_free(&resp->data);
    free(resp->headers);
    resp->data = from->data;
    resp->headers = from->headers;
    resp->n_headers = from->n_headers;
    resp->cap_headers = from->cap_headers;
    from->data = (edge_buf){0};
    from->headers = NULL;
    from->n_headers = from->cap_headers = 0;
}

void edge_response_clear(edge_response *resp)
{
    edge_response_drop_pipe(resp);
    resp->status = 200;
    resp->n_headers = 0;
    resp->data.len = 0;
    resp->body.len = 0;
    resp->has_server = resp->has_date = resp->fetched_as_get = 0;
    resp->has_ttl = resp->has_grace = resp->has_keep = 0;
    resp->compress_done = resp->no_compress = 0;
    resp->cache_mode = EDGE_CACHE_DEFAULT;
}

void edge_response_error(edge_response *resp, int status)
{
    edge_response_clear(resp);
    resp->status = status;
    edge_response_add_header(resp, "content-type", 12, "text/plain", 10);
    edge_buf_printf(&resp->body, "%d %s\n", status, edge_http_reason(status));
}

int edge_http_idempotent(const char *m, size_t n)
{
    static const char *const list[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < EDGE_ARRAY_LEN(list); i++)
        if (n == strlen(list[i]) && memcmp(m, list[i], n) == 0) return 1;
    return 0;
}

int edge_http_is_tchar(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

const char *edge_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}
