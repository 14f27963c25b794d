/* A single byte range answered from a whole body (range.h). */
#include "range.h"
#include "common.h"

#include <string.h>

#define DIGITS_MAX 18     /* a number of bytes that cannot overflow uint64_t */

typedef struct byte_range {
    int      has_first;   /* "first-[last]"; else a suffix "-n" */
    int      has_last;
    uint64_t first, last, suffix;
} byte_range;

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

/* Reads a run of digits; 0 when there is none or too many. */
static int read_number(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9' && *p - s < DIGITS_MAX) v = v * 10 + (uint64_t)(*(*p)++ - '0');
    if (*p == s || (*p < end && **p >= '0' && **p <= '9')) return 0;
    *out = v;
    return 1;
}

/* "bytes=first-last", "bytes=first-" or "bytes=-suffix"; 0 for anything
 * else, several ranges included. */
static int parse_range(const char *p, size_t n, byte_range *r)
{
    const char *end = p + n;
    *r = (byte_range){0};
    if (n < 6 || strncmp(p, "bytes=", 6) != 0) return 0;
    p = skip_ows(p + 6, end);
    if (p < end && *p != '-') {
        if (!read_number(&p, end, &r->first)) return 0;
        r->has_first = 1;
    }
    if (p >= end || *p++ != '-') return 0;
    if (p < end && *p >= '0' && *p <= '9') {
        uint64_t v;
        if (!read_number(&p, end, &v)) return 0;
        if (r->has_first) r->last = v, r->has_last = 1;
        else r->suffix = v;
    } else if (!r->has_first) {
        return 0;                                   /* "-" alone */
    }
    p = skip_ows(p, end);
    return p == end && !(r->has_last && r->last < r->first);
}

/* If-Range (RFC 9110 13.1.5): an entity-tag matches a strong ETag
 * byte for byte; a date matches Last-Modified exactly. */
static int if_range_holds(const edge_request *req, const edge_response *resp)
{
    const edge_header *ir = edge_request_header(req, "if-range", 8);
    if (ir == NULL) return 1;
    const char *v = edge_request_ptr(req, ir->value);
    size_t n = ir->value.len;
    int is_tag = n && (v[0] == '"' || v[0] == 'W');
    const edge_header *h = edge_response_header(resp, is_tag ? "etag" : "last-modified", is_tag ? 4 : 13);
    if (h == NULL || (is_tag && v[0] == 'W')) return 0;
    return h->value.len == n && memcmp(resp->data.base + h->value.off, v, n) == 0;
}

static void content_range(edge_response *resp, const char *first_part, uint64_t a, uint64_t b, uint64_t len)
{
    char v[80], num[24];
    size_t n = 0;
    memcpy(v, first_part, strlen(first_part));
    n += strlen(first_part);
    if (a != UINT64_MAX) {
        n += edge_format_u64(v + n, a);
        v[n++] = '-';
        n += edge_format_u64(v + n, b);
    }
    v[n++] = '/';
    size_t k = edge_format_u64(num, len);
    memcpy(v + n, num, k);
    n += k;
    edge_response_add_header(resp, "content-range", 13, v, n);
}

void edge_range_apply(const edge_request *req, edge_response *resp)
{
    const edge_header *h = edge_request_header(req, "range", 5);
    if (h == NULL || resp->status != 200 || resp->pipe || req->is_head) return;
    if (!edge_request_method_is(req, "GET")) return;
    byte_range r;
    if (!parse_range(edge_request_ptr(req, h->value), h->value.len, &r) || !if_range_holds(req, resp)) return;
    uint64_t len = resp->body.len, first, last;
    if (r.has_first) {
        first = r.first;
        last = r.has_last && r.last < len ? r.last : len - 1;
    } else {
        first = r.suffix < len ? len - r.suffix : 0;
        last = len - 1;
    }
    if (len == 0 || first >= len || (!r.has_first && r.suffix == 0)) {
        resp->status = 416;
        resp->body.len = 0;
        edge_response_remove_header(resp, "content-type", 12);
        content_range(resp, "bytes *", UINT64_MAX, 0, len);
        return;
    }
    memmove(resp->body.base, resp->body.base + first, (size_t)(last - first + 1));
    resp->body.len = (size_t)(last - first + 1);
    resp->status = 206;
    content_range(resp, "bytes ", first, last, len);
}
