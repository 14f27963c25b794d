/* Protocol-neutral request and response storage. */
#include "request.h"
#include "common.h"

#include <ctype.h>
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

void edge_request_reset(edge_request *req)
{
    edge_buf_reset(&req->data, KEEP_BYTES);
    edge_buf_reset(&req->body, KEEP_BYTES);
    edge_buf_reset(&req->cache_key, KEEP_BYTES);
    edge_buf_reset(&req->resp.data, KEEP_BYTES);
    edge_buf_reset(&req->resp.body, KEEP_BYTES);
    req->n_headers = 0;
    req->resp.n_headers = 0;
    req->resp.status = 200;
    req->resp.has_server = req->resp.has_date = req->resp.has_ttl = 0;
    req->method = req->path = (edge_span){0, 0};
    req->query = req->host = (edge_span){EDGE_SPAN_NONE, 0};
    req->has_body = req->is_head = req->has_cache_key = 0;
    req->cache_status = NULL;
    req->start = 0;
    req->bytes_in = 0;
    req->id_num = 0;
    req->id[0] = '\0';
}

void edge_request_free(edge_request *req)
{
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

void edge_request_set_target(edge_request *req, edge_span target)
{
    const char *p = edge_request_ptr(req, target);
    uint32_t start = 0, n = target.len;

    /* absolute-form: scheme://authority/path -> /path */
    if (n && p[0] != '/' && p[0] != '*') {
        const char *sep = memchr(p, ':', n);
        if (sep && (uint32_t)(sep - p) + 3 <= n && sep[1] == '/' && sep[2] == '/') {
            uint32_t i = (uint32_t)(sep - p) + 3;
            while (i < n && p[i] != '/' && p[i] != '?') i++;
            start = i;
        }
    }
    const char *q = memchr(p + start, '?', n - start);
    uint32_t end = q ? (uint32_t)(q - p) : n;
    req->path = (edge_span){target.off + start, end - start};
    if (q) req->query = (edge_span){target.off + end + 1, n - end - 1};
}

void edge_request_set_host(edge_request *req, const char *p, size_t n)
{
    size_t end = n;
    if (n && p[0] == '[') {                      /* [v6]:port */
        const char *close = memchr(p, ']', n);
        if (close) end = (size_t)(close - p) + 1;
    } else {
        const char *colon = memchr(p, ':', n);
        if (colon) end = (size_t)(colon - p);
    }
    req->host = edge_request_store(req, p, end);
    for (size_t i = 0; i < end; i++) {      /* end may be 0 with data.base still NULL */
        char *ch = req->data.base + req->host.off + i;
        *ch = (char)tolower((unsigned char)*ch);
    }
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

void edge_response_error(edge_response *resp, int status)
{
    resp->status = status;
    resp->n_headers = 0;
    resp->data.len = 0;
    resp->body.len = 0;
    resp->has_server = resp->has_date = resp->has_ttl = 0;
    edge_response_add_header(resp, "content-type", 12, "text/plain", 10);
    edge_buf_printf(&resp->body, "%d %s\n", status, edge_http_reason(status));
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
