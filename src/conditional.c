/* Client conditionals answered from the cache (conditional.h). */
#include "conditional.h"

#include <string.h>
#include <strings.h>
#include <time.h>

double edge_http_date_parse(const char *v, size_t n)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT",     /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT",     /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",          /* asctime */
    };
    char text[64];
    if (n == 0 || n >= sizeof(text)) return -1;
    memcpy(text, v, n);
    text[n] = '\0';
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm = {0};
        const char *end = strptime(text, formats[i], &tm);
        if (end && *end == '\0') return (double)timegm(&tm);
    }
    return -1;
}

/* An entity-tag without its weakness prefix: weak comparison (RFC 9110 8.8.3.2). */
static void opaque_tag(const char **p, size_t *n)
{
    if (*n >= 2 && (*p)[0] == 'W' && (*p)[1] == '/') {
        *p += 2;
        *n -= 2;
    }
}

/* Whether the If-None-Match list (a, an) names the entity-tag (t, tn). */
static int etag_listed(const char *a, size_t an, const char *t, size_t tn)
{
    opaque_tag(&t, &tn);
    size_t i = 0;
    while (i < an) {
        while (i < an && (a[i] == ' ' || a[i] == '\t' || a[i] == ',')) i++;
        size_t start = i;
        if (i < an && a[i] == '*') return 1;
        if (i + 1 < an && a[i] == 'W' && a[i + 1] == '/') i += 2;
        if (i < an && a[i] == '"') {           /* a quoted opaque-tag may hold a comma */
            i++;
            while (i < an && a[i] != '"') i++;
            if (i < an) i++;
        }
        while (i < an && a[i] != ',' && a[i] != ' ' && a[i] != '\t') i++;
        const char *tag = a + start;
        size_t len = i - start;
        opaque_tag(&tag, &len);
        if (len && len == tn && memcmp(tag, t, tn) == 0) return 1;
    }
    return 0;
}

int edge_conditional_not_modified(const edge_request *req, const edge_response *resp)
{
    if (resp->status != 200 || !(edge_request_method_is(req, "GET") || edge_request_method_is(req, "HEAD")))
        return 0;
    const edge_header *inm = edge_request_header(req, "if-none-match", 13);
    if (inm) {
        const edge_header *etag = edge_response_header(resp, "etag", 4);
        return etag && etag_listed(edge_request_ptr(req, inm->value), inm->value.len,
                                   resp->data.base + etag->value.off, etag->value.len);
    }
    const edge_header *ims = edge_request_header(req, "if-modified-since", 17);
    const edge_header *lm = edge_response_header(resp, "last-modified", 13);
    if (ims == NULL || lm == NULL) return 0;
    double since = edge_http_date_parse(edge_request_ptr(req, ims->value), ims->value.len);
    double modified = edge_http_date_parse(resp->data.base + lm->value.off, lm->value.len);
    return since >= 0 && modified >= 0 && modified <= since;
}

void edge_conditional_to_304(edge_response *resp)
{
    static const char *const content[] = {"content-type", "content-length", "content-encoding",
                                           "content-language", "content-range", "transfer-encoding"};
    for (size_t i = 0; i < sizeof(content) / sizeof(content[0]); i++)
        edge_response_remove_header(resp, content[i], strlen(content[i]));
    resp->status = 304;
    resp->body.len = 0;
}
