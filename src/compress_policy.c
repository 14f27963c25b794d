/* The rules of response compression (compress_policy.h). */
#include "compress_policy.h"
#include "compress.h"

#include <string.h>
#include <strings.h>

const char *edge_coding_name(int coding)
{
    switch (coding) {
    case EDGE_CODING_GZIP: return "gzip";
    case EDGE_CODING_BR: return "br";
    default: return "identity";
    }
}

/* ---- small parsing helpers (header values are not NUL-terminated) ---- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims optional white space from both ends of [*p, *e). */
static void trim(const char **p, const char **e)
{
    while (*p < *e && is_ows(**p)) (*p)++;
    while (*e > *p && is_ows((*e)[-1])) (*e)--;
}

static int span_is(const char *p, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - p) == n && strncasecmp(p, word, n) == 0;
}

/* Calls fn on each trimmed, non-empty element of a comma-separated list
 * until it returns non-zero; returns that. */
static int each_element(const char *p, size_t n, int (*fn)(const char *p, const char *e, void *ud), void *ud)
{
    const char *end = p + n;
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (e == NULL) e = end;
        const char *a = p, *b = e;
        trim(&a, &b);
        if (a < b) {
            int rc = fn(a, b, ud);
            if (rc) return rc;
        }
        p = e + 1;
    }
    return 0;
}

/* ---- Accept-Encoding ---- */

/* A qvalue in thousandths (RFC 9110 12.4.2: "0", "0.5", "1.000"); -1 when malformed. */
static int parse_qvalue(const char *p, const char *e)
{
    if (p == e || (*p != '0' && *p != '1')) return -1;
    int q = (*p++ - '0') * 1000;
    if (p == e) return q;
    if (*p++ != '.') return -1;
    for (int scale = 100; p < e; p++, scale /= 10) {
        if (scale == 0 || *p < '0' || *p > '9') return -1;
        q += (*p - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* The weight of an element's parameters (";q=0.5"): 1000 when none. */
static int element_weight(const char *p, const char *e)
{
    int q = 1000;
    while (p < e) {
        const char *semi = memchr(p, ';', (size_t)(e - p));
        const char *end = semi ? semi : e;
        const char *a = p, *b = end;
        trim(&a, &b);
        if (b - a >= 2 && (a[0] == 'q' || a[0] == 'Q') && a[1] == '=') q = parse_qvalue(a + 2, b);
        p = semi ? semi + 1 : e;
    }
    return q;
}

typedef struct accept_weights {
    int br, gzip, any;      /* thousandths; -1: not named */
} accept_weights;

static void raise_to(int *slot, int q)
{
    if (q > *slot) *slot = q;
}

static int on_coding(const char *p, const char *e, void *ud)
{
    accept_weights *w = ud;
    const char *semi = memchr(p, ';', (size_t)(e - p));
    const char *name_end = semi ? semi : e;
    const char *a = p;
    trim(&a, &name_end);
    int q = semi ? element_weight(semi + 1, e) : 1000;
    if (q < 0) q = 0;                       /* a malformed weight accepts nothing */
    if (span_is(a, name_end, "br")) raise_to(&w->br, q);
    else if (span_is(a, name_end, "gzip") || span_is(a, name_end, "x-gzip")) raise_to(&w->gzip, q);
    else if (span_is(a, name_end, "*")) raise_to(&w->any, q);
    return 0;
}

int edge_compress_negotiate(const edge_request *req)
{
    accept_weights w = {-1, -1, -1};
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        if (h->name.len != 15 || memcmp(edge_request_ptr(req, h->name), "accept-encoding", 15) != 0) continue;
        each_element(edge_request_ptr(req, h->value), h->value.len, on_coding, &w);
    }
    int br = w.br >= 0 ? w.br : w.any, gzip = w.gzip >= 0 ? w.gzip : w.any;
    if (br <= 0 && gzip <= 0) return EDGE_CODING_IDENTITY;
    return br >= gzip ? EDGE_CODING_BR : EDGE_CODING_GZIP;
}

/* ---- which responses ---- */

static int ends_with(const char *p, const char *e, const char *suffix)
{
    size_t n = strlen(suffix);
    return (size_t)(e - p) >= n && strncasecmp(e - n, suffix, n) == 0;
}

/* Whether a Content-Type value names a compressible media type. */
static int compressible_type(const char *p, size_t n)
{
    const char *e = memchr(p, ';', n);
    if (e == NULL) e = p + n;
    trim(&p, &e);
    const char *slash = memchr(p, '/', (size_t)(e - p));
    if (slash == NULL) return 0;
    if (slash - p == 4 && strncasecmp(p, "text", 4) == 0) return 1;
    return span_is(p, e, "application/json") || span_is(p, e, "application/javascript") ||
           span_is(p, e, "application/xml") || span_is(p, e, "image/svg+xml") ||
           ends_with(slash, e, "+json") || ends_with(slash, e, "+xml");
}

static int is_no_transform(const char *p, const char *e, void *ud)
{
    const char *eq = memchr(p, '=', (size_t)(e - p));
    if (eq) e = eq;
    trim(&p, &e);
    return span_is(p, e, "no-transform");
}

static int name_is(const edge_fields *f, const edge_header *h, const char *name, size_t n)
{
    return h->name.len == n && memcmp(f->data + h->name.off, name, n) == 0;
}
#define NAME_IS(f, h, lit) name_is((f), (h), (lit), sizeof(lit) - 1)

int edge_compress_check(const edge_config *cfg, int status, const edge_fields *f, int64_t body_len, int off)
{
    if (off) return EDGE_COMPRESS_NEVER;
    int typed = 0, barred = 0;
    for (int i = 0; i < f->n; i++) {
        const edge_header *h = &f->h[i];
        const char *v = f->data + h->value.off;
        if (NAME_IS(f, h, "content-type")) typed = compressible_type(v, h->value.len);
        else if (NAME_IS(f, h, "content-encoding") || NAME_IS(f, h, "content-range")) barred = 1;
        else if (NAME_IS(f, h, "cache-control") && each_element(v, h->value.len, is_no_transform, NULL))
            barred = 1;
    }
    if (!cfg->compress || !typed || barred) return EDGE_COMPRESS_NEVER;
    if (!edge_http_status_has_body(status) || status == 206) return EDGE_COMPRESS_NEVER;
    if (body_len >= 0 && (uint64_t)body_len < cfg->compress_min_size) return EDGE_COMPRESS_NEVER;
    return EDGE_COMPRESS_ALLOWED;
}

/* ---- header fields ---- */

static int names_accept_encoding(const char *p, const char *e, void *ud)
{
    return span_is(p, e, "accept-encoding") || span_is(p, e, "*");
}

/* The Vary field Accept-Encoding is merged into: the first non-empty one;
 * -1 when there is none (a field of its own is added); -2 when a Vary field
 * names it already (or is "*"). */
static int vary_target(const edge_fields *f)
{
    int first = -1;
    for (int i = 0; i < f->n; i++) {
        const edge_header *h = &f->h[i];
        if (!NAME_IS(f, h, "vary")) continue;
        const char *p = f->data + h->value.off, *e = p + h->value.len;
        if (each_element(p, h->value.len, names_accept_encoding, NULL)) return -2;
        trim(&p, &e);
        if (first < 0 && p < e) first = i;
    }
    return first;
}

/* Adds a field whose value is a .. b. */
static void add_joined(edge_response *to, const char *name, size_t nlen, const char *a, size_t an,
                       const char *b, size_t bn)
{
    edge_response_add_header(to, name, nlen, a, an);
    edge_buf_append(&to->data, b, bn);       /* the value is last in to->data: extend it */
    to->headers[to->n_headers - 1].value.len += (uint32_t)bn;
}

void edge_compress_rewrite_head(edge_response *to, const edge_fields *from, int coding)
{
    static const char AE[] = "Accept-Encoding";
    int vary = vary_target(from);
    for (int i = 0; i < from->n; i++) {
        const edge_header *h = &from->h[i];
        const char *name = from->data + h->name.off, *v = from->data + h->value.off;
        size_t vlen = h->value.len;
        if (coding && NAME_IS(from, h, "accept-ranges")) continue;
        if (i == vary) add_joined(to, name, h->name.len, v, vlen, ", Accept-Encoding", 17);
        else if (coding && NAME_IS(from, h, "etag") && vlen > 0 && v[0] == '"')
            add_joined(to, name, h->name.len, "W/", 2, v, vlen);
        else edge_response_add_header(to, name, h->name.len, v, vlen);
    }
    if (vary == -1) edge_response_add_header(to, "vary", 4, AE, sizeof(AE) - 1);
    if (coding == EDGE_CODING_IDENTITY) return;
    const char *cname = edge_coding_name(coding);
    edge_response_add_header(to, "content-encoding", 16, cname, strlen(cname));
}
