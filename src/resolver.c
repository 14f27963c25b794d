/* Name resolution for upstreams: c-ares on a worker's libev loop, with a
 * per-worker answer cache, coalesced queries and the last good answer.
 *
 * Objects and who owns them:
 *   resolver  the c-ares channel, one ev_io per c-ares socket (sockw), the
 *             timer c-ares asks for, the cache and the flights taking callers;
 *   flight    one ares_getaddrinfo in progress for (host, family); owned by
 *             c-ares from ares_getaddrinfo until on_addrinfo, which frees it
 *             (ares_destroy calls it too, with ARES_EDESTRUCTION);
 *   query     one caller waiting on a flight; freed just before its callback
 *             runs, or by edge_resolver_cancel;
 *   entry     one cached answer, kept after it expires as the last good one.
 * A user callback may resolve, cancel or free the resolver: freeing from
 * inside a callback is deferred until the outermost loop callback returns
 * (busy counts those), so c-ares is never destroyed under its own feet. */
#include "resolver.h"

#include "common.h"
#include "log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX      1024      /* names per resolver; the oldest answer goes first */
#define CACHE_BUCKETS  2048      /* a power of two */
#define HOST_MAX       253       /* the longest DNS name, without the final dot */
#define RETRY_MIN      1.0       /* a failing name is asked again at most this often */
#define ARES_TRIES     2         /* c-ares tries per server: its per-try timeout is timeout / 3 */

typedef struct answer {
    int n;
    struct sockaddr_storage addrs[EDGE_RESOLVE_MAX_ADDRS];   /* ports 0 */
} answer;

typedef struct entry {
    struct entry *hnext;               /* hash chain */
    struct entry *older, *newer;       /* age list: refreshed entries move to newest */
    uint64_t  hash;
    int       family;
    ev_tstamp expires;                 /* fresh until then */
    ev_tstamp stored;                  /* when the answer came: a caller's own valid counts from it */
    ev_tstamp retry_at;                /* failing: ask again from then on */
    int       failing;                 /* a refresh failed; the stale answer is served */
    answer    ans;
    char      host[];
} entry;

typedef struct flight flight;

struct edge_resolve_query {
    edge_resolve_query *next, *prev;   /* the flight's waiters */
    flight         *f;
    edge_resolve_cb cb;
    void           *ud;
    int             port;
};

struct flight {
    flight        *next, *prev;        /* r->flights while it takes callers */
    edge_resolver *r;
    edge_resolve_query *waiters, *waiters_tail;   /* answered first come, first served */
    ev_timer       timer;              /* our deadline: opts.timeout */
    uint64_t       hash;
    int            family;
    int            linked;             /* in r->flights */
    int            starting;           /* inside ares_getaddrinfo: do not deliver */
    int            done;               /* c-ares answered while starting */
    int            timed_out;          /* callers already answered; c-ares not yet */
    int            status;             /* the outcome: EDGE_OK with ans, or EDGE_ERROR with err */
    answer         ans;
    char           err[320];
    char           host[];
};

typedef struct sockw {
    ev_io          io;
    struct sockw  *next;
    edge_resolver *r;
} sockw;

struct edge_resolver {
    struct ev_loop *loop;
    ares_channel    ch;
    edge_resolver_opts o;
    ev_timer        ares_timer;        /* c-ares's own retransmits and timeouts */
    sockw          *socks;
    flight         *flights;
    entry          *buckets[CACHE_BUCKETS];
    entry          *oldest, *newest;
    int             entries;
    int             busy;              /* loop callbacks on the stack */
    int             closing;           /* edge_resolver_free was called */
    int             destroying;        /* ares_destroy is running */
    char            servers[200];      /* for error messages: "127.0.0.1:53,..." */
};

static void destroy(edge_resolver *r);

/* ---- helpers ---- */

static uint64_t hash_name(const char *s, int family)
{
    uint64_t h = 14695981039346656037ULL ^ (uint64_t)family;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* Runs one callback with a copy of the answer (the caller may free the
 * resolver, and with it the answer, from inside). */
static void call_back(edge_resolve_cb cb, void *ud, int port, int status, const answer *a,
                      const char *err)
{
    if (status != EDGE_OK) {
        cb(ud, EDGE_ERROR, NULL, 0, err);
        return;
    }
    struct sockaddr_storage out[EDGE_RESOLVE_MAX_ADDRS];
    memcpy(out, a->addrs, sizeof(out[0]) * (size_t)a->n);
    for (int i = 0; i < a->n; i++) set_port(&out[i], port);
    cb(ud, EDGE_OK, out, a->n, NULL);
}

static void fail_now(edge_resolve_cb cb, void *ud, const char *host, const char *why)
{
    char err[320];
    snprintf(err, sizeof(err), "cannot resolve %.253s: %s", host, why);
    cb(ud, EDGE_ERROR, NULL, 0, err);
}

/* 1: numeric, *ss filled; 0: a name, lowercased into name; -1: bad, why set. */
static int parse_host(const char *host, char *name, struct sockaddr_storage *ss, const char **why)
{
    size_t len = strlen(host);
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (len == 0) { *why = "empty host name"; return -1; }
    if (host[0] == '[') {
        char inner[64];
        if (len < 3 || len - 2 >= sizeof(inner) || host[len - 1] != ']') { *why = "bad IPv6 address"; return -1; }
        memcpy(inner, host + 1, len - 2);
        inner[len - 2] = '\0';
        if (inet_pton(AF_INET6, inner, &sin6->sin6_addr) != 1) { *why = "bad IPv6 address"; return -1; }
        sin6->sin6_family = AF_INET6;
        return 1;
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) { sin->sin_family = AF_INET; return 1; }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) { sin6->sin6_family = AF_INET6; return 1; }
    if (host[len - 1] == '.') len--;                   /* "a.example." is "a.example" */
    if (len == 0 || len > HOST_MAX) { *why = "not a valid host name"; return -1; }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == '\\') { *why = "not a valid host name"; return -1; }
        name[i] = (char)tolower(ch);
    }
    name[len] = '\0';
    return 0;
}

/* ---- the cache ---- */

static entry *cache_find(edge_resolver *r, const char *host, int family, uint64_t hash)
{
    for (entry *e = r->buckets[hash & (CACHE_BUCKETS - 1)]; e; e = e->hnext)
        if (e->hash == hash && e->family == family && strcmp(e->host, host) == 0) return e;
    return NULL;
}

static void age_unlink(edge_resolver *r, entry *e)
{
    if (e->older) e->older->newer = e->newer; else r->oldest = e->newer;
    if (e->newer) e->newer->older = e->older; else r->newest = e->older;
    e->older = e->newer = NULL;
}

static void age_push(edge_resolver *r, entry *e)
{
    e->older = r->newest;
    e->newer = NULL;
    if (r->newest) r->newest->newer = e; else r->oldest = e;
    r->newest = e;
}

static void cache_evict_oldest(edge_resolver *r)
{
    entry *e = r->oldest;
    entry **pp = &r->buckets[e->hash & (CACHE_BUCKETS - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    age_unlink(r, e);
    r->entries--;
    free(e);
}

static entry *cache_get_or_add(edge_resolver *r, const char *host, int family, uint64_t hash)
{
    entry *e = cache_find(r, host, family, hash);
    if (e) {
        age_unlink(r, e);
        age_push(r, e);
        return e;
    }
    if (r->entries >= CACHE_MAX) cache_evict_oldest(r);
    size_t len = strlen(host) + 1;
    e = edge_calloc(1, sizeof(*e) + len);
    memcpy(e->host, host, len);
    e->hash = hash;
    e->family = family;
    e->hnext = r->buckets[hash & (CACHE_BUCKETS - 1)];
    r->buckets[hash & (CACHE_BUCKETS - 1)] = e;
    age_push(r, e);
    r->entries++;
    return e;
}

/* How long an answer stays fresh: its smallest TTL (addresses and CNAMEs),
 * within [valid_min, valid_max]. /etc/hosts answers carry TTL 0: valid_min. */
static double answer_ttl(const edge_resolver *r, const struct ares_addrinfo *ai)
{
    double ttl = -1;
    for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next)
        if (ttl < 0 || n->ai_ttl < ttl) ttl = n->ai_ttl;
    for (const struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next)
        if (c->ttl < ttl) ttl = c->ttl;
    if (ttl < r->o.valid_min) ttl = r->o.valid_min;
    if (r->o.valid_max > 0 && ttl > r->o.valid_max) ttl = r->o.valid_max;
    return ttl;
}

/* Stores a successful answer as the flight's outcome and in the cache;
 * false when it holds no usable address. */
static int cache_store(edge_resolver *r, flight *f, const struct ares_addrinfo *ai)
{
    answer a = { 0 };
    for (const struct ares_addrinfo_node *n = ai ? ai->nodes : NULL; n && a.n < EDGE_RESOLVE_MAX_ADDRS;
         n = n->ai_next) {
        if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) || n->ai_addrlen > sizeof(a.addrs[0]))
            continue;
        memcpy(&a.addrs[a.n], n->ai_addr, n->ai_addrlen);
        set_port(&a.addrs[a.n++], 0);
    }
    if (a.n == 0) return 0;
    entry *e = cache_get_or_add(r, f->host, f->family, f->hash);
    if (e->failing)
        edge_log(EDGE_LOG_NOTICE, 0, "resolved %s again: the last good answer is no longer used", f->host);
    e->ans = a;
    e->stored = ev_now(r->loop);
    e->expires = e->stored + answer_ttl(r, ai);
    e->failing = 0;
    f->status = EDGE_OK;
    f->ans = a;
    return 1;
}

/* A failed resolution: the last good answer when there is one (warned once
 * per outage, asked again after a while), else the error. */
static void flight_fail(flight *f, const char *why)
{
    edge_resolver *r = f->r;
    entry *e = cache_find(r, f->host, f->family, f->hash);
    if (e == NULL || e->ans.n == 0) {
        f->status = EDGE_ERROR;
        snprintf(f->err, sizeof(f->err), "cannot resolve %s: %s", f->host, why);
        return;
    }
    if (!e->failing)
        edge_log(EDGE_LOG_WARN, 0, "cannot resolve %s: %s; serving its last good answer", f->host, why);
    e->failing = 1;
    e->retry_at = ev_now(r->loop) + (r->o.valid_min > RETRY_MIN ? r->o.valid_min : RETRY_MIN);
    f->status = EDGE_OK;
    f->ans = e->ans;
}

/* ---- c-ares on the loop ---- */

static void ares_timer_update(edge_resolver *r)
{
    if (r->destroying) return;
    struct timeval tv, *t = ares_timeout(r->ch, NULL, &tv);
    ev_timer_stop(r->loop, &r->ares_timer);
    if (t == NULL) return;
    ev_timer_set(&r->ares_timer, (double)t->tv_sec + (double)t->tv_usec / 1e6 + 0.001, 0.);
    ev_timer_start(r->loop, &r->ares_timer);
}

/* Ends a loop callback: the deferred free happens here, outermost only. */
static void leave(edge_resolver *r)
{
    if (--r->busy > 0) return;
    if (r->closing) destroy(r);
    else ares_timer_update(r);
}

static void on_sock_io(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_resolver *r = ((sockw *)w)->r;   /* w may be freed inside ares_process_fd */
    int fd = w->fd;
    r->busy++;
    ares_process_fd(r->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    leave(r);
}

static void on_ares_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    edge_resolver *r = edge_container_of(w, edge_resolver, ares_timer);
    r->busy++;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    leave(r);
}

/* c-ares opens, re-arms or closes (neither readable nor writable) a socket. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    edge_resolver *r = data;
    sockw **pp = &r->socks;
    while (*pp && (*pp)->io.fd != fd) pp = &(*pp)->next;
    sockw *s = *pp;
    if (s) ev_io_stop(r->loop, &s->io);
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (s == NULL) {
        s = edge_calloc(1, sizeof(*s));
        s->r = r;
        s->next = r->socks;
        r->socks = s;
    }
    ev_io_init(&s->io, on_sock_io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(r->loop, &s->io);
}

/* ---- flights ---- */

static void flight_unlink(flight *f)
{
    if (!f->linked) return;
    if (f->prev) f->prev->next = f->next; else f->r->flights = f->next;
    if (f->next) f->next->prev = f->prev;
    f->next = f->prev = NULL;
    f->linked = 0;
}

static void waiter_unlink(edge_resolve_query *q)
{
    if (q->prev) q->prev->next = q->next; else q->f->waiters = q->next;
    if (q->next) q->next->prev = q->prev; else q->f->waiters_tail = q->prev;
}

/* Answers every waiter, one at a time from the head: a callback may cancel
 * the others or free the resolver (the rest then get "resolver shut down"). */
static void deliver(flight *f)
{
    edge_resolve_query *q;
    while ((q = f->waiters) != NULL) {
        waiter_unlink(q);
        edge_resolve_cb cb = q->cb;
        void *ud = q->ud;
        int port = q->port;
        free(q);
        if (f->r->closing) fail_now(cb, ud, f->host, "resolver shut down");
        else call_back(cb, ud, port, f->status, &f->ans, f->err);
    }
}

static void why_failed(const edge_resolver *r, int status, int family, char *buf, size_t len)
{
    switch (status) {
    case ARES_ENOTFOUND: snprintf(buf, len, "name not found"); break;
    case ARES_ENODATA:
        snprintf(buf, len, "%s", family == AF_INET ? "no IPv4 address" :
                                 family == AF_INET6 ? "no IPv6 address" : "no address records");
        break;
    case ARES_ETIMEOUT:
        snprintf(buf, len, "DNS timeout after %g s (servers %s)", r->o.timeout, r->servers);
        break;
    case ARES_ESERVFAIL: snprintf(buf, len, "DNS server failure (SERVFAIL from %s)", r->servers); break;
    case ARES_EREFUSED: snprintf(buf, len, "DNS query refused by %s", r->servers); break;
    /* c-ares 1.18 reports SERVFAIL and REFUSED (after trying every server)
     * the same way as an unreachable server. */
    case ARES_ECONNREFUSED:
        /* The return value is read so that a long server list may truncate
         * the message (a message, not data) without -Wformat-truncation. */
        if (snprintf(buf, len, "no DNS server answered (%s: SERVFAIL, REFUSED or unreachable)", r->servers) < 0)
            buf[0] = '\0';
        break;
    case ARES_EDESTRUCTION: case ARES_ECANCELLED: snprintf(buf, len, "resolver shut down"); break;
    case ARES_EBADNAME: snprintf(buf, len, "not a valid host name"); break;
    default: snprintf(buf, len, "%s (servers %s)", ares_strerror(status), r->servers); break;
    }
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    flight *f = arg;
    edge_resolver *r = f->r;
    if (r->destroying) {             /* callers were answered before ares_destroy */
        if (ai) ares_freeaddrinfo(ai);
        free(f);
        return;
    }
    /* A late answer after our deadline still refreshes the cache. */
    int ok = status == ARES_SUCCESS && cache_store(r, f, ai);
    if (ai) ares_freeaddrinfo(ai);
    if (!ok && !f->timed_out) {
        char why[256];
        why_failed(r, status == ARES_SUCCESS ? ARES_ENODATA : status, f->family, why, sizeof(why));
        flight_fail(f, why);
    }
    if (f->timed_out) {
        free(f);
        return;
    }
    if (f->starting) {               /* /etc/hosts, or an error found at once */
        f->done = 1;
        return;
    }
    ev_timer_stop(r->loop, &f->timer);
    flight_unlink(f);
    deliver(f);
    free(f);
}

static void on_flight_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    flight *f = edge_container_of(w, flight, timer);
    edge_resolver *r = f->r;
    char why[256];
    r->busy++;
    flight_unlink(f);
    f->timed_out = 1;                /* on_addrinfo frees it when c-ares gives up */
    why_failed(r, ARES_ETIMEOUT, f->family, why, sizeof(why));
    flight_fail(f, why);
    deliver(f);
    leave(r);
}

static flight *flight_find(edge_resolver *r, const char *host, uint64_t hash)
{
    for (flight *f = r->flights; f; f = f->next)
        if (f->hash == hash && f->family == r->o.family && strcmp(f->host, host) == 0) return f;
    return NULL;
}

/* Starts a query. When c-ares answers at once (/etc/hosts, a bad name) the
 * flight comes back done and unlinked: the caller answers and frees it. */
static flight *flight_start(edge_resolver *r, const char *host, uint64_t hash)
{
    size_t len = strlen(host) + 1;
    flight *f = edge_calloc(1, sizeof(*f) + len);
    memcpy(f->host, host, len);
    f->r = r;
    f->hash = hash;
    f->family = r->o.family;
    f->starting = 1;
    struct ares_addrinfo_hints hints = { .ai_family = r->o.family, .ai_socktype = SOCK_STREAM };
    r->busy++;
    ares_getaddrinfo(r->ch, f->host, NULL, &hints, on_addrinfo, f);
    r->busy--;                       /* no user code ran: nothing deferred to do here */
    f->starting = 0;
    if (f->done) return f;
    f->next = r->flights;
    if (r->flights) r->flights->prev = f;
    r->flights = f;
    f->linked = 1;
    ev_timer_init(&f->timer, on_flight_timeout, r->o.timeout, 0.);
    ev_timer_start(r->loop, &f->timer);
    ares_timer_update(r);
    return f;
}

/* ---- the API ---- */

edge_resolve_query *edge_resolver_resolve(edge_resolver *r, const char *host, int port,
                                          edge_resolve_cb cb, void *ud)
{
    return edge_resolver_resolve_valid(r, host, port, 0, cb, ud);
}

/* Fresh for this caller: its own valid (seconds since the answer came), or
 * the answer's TTL as the cache keeps it. */
static int fresh_for(const entry *e, double valid, ev_tstamp now)
{
    return valid > 0 ? now < e->stored + valid : now < e->expires;
}

edge_resolve_query *edge_resolver_resolve_valid(edge_resolver *r, const char *host, int port, double valid,
                                                edge_resolve_cb cb, void *ud)
{
    char name[HOST_MAX + 1];
    struct sockaddr_storage ss;
    const char *why = NULL;
    if (r->closing) {
        fail_now(cb, ud, host, "resolver shut down");
        return NULL;
    }
    int kind = parse_host(host, name, &ss, &why);
    if (kind < 0) {
        fail_now(cb, ud, host, why);
        return NULL;
    }
    if (kind == 1) {
        set_port(&ss, port);
        cb(ud, EDGE_OK, &ss, 1, NULL);
        return NULL;
    }
    uint64_t hash = hash_name(name, r->o.family);
    ev_tstamp now = ev_now(r->loop);
    entry *e = cache_find(r, name, r->o.family, hash);
    flight *f = flight_find(r, name, hash);
    if (e && e->ans.n > 0 && (fresh_for(e, valid, now) || e->failing)) {
        /* Fresh, or failing: the stale answer now, a refresh in the background now and then. */
        if (e->failing && now >= e->retry_at && f == NULL) {
            double pause = valid > 0 ? valid : r->o.valid_min;
            e->retry_at = now + (pause > RETRY_MIN ? pause : RETRY_MIN);
            f = flight_start(r, name, hash);
            if (f->done) free(f);
        }
        answer a = e->ans;           /* the refresh above may have replaced or evicted e */
        call_back(cb, ud, port, EDGE_OK, &a, NULL);
        return NULL;
    }
    if (f == NULL) {
        f = flight_start(r, name, hash);
        if (f->done) {
            int status = f->status;
            answer a = f->ans;
            char err[sizeof(f->err)];
            memcpy(err, f->err, sizeof(err));
            free(f);
            call_back(cb, ud, port, status, &a, err);
            return NULL;
        }
    }
    edge_resolve_query *q = edge_calloc(1, sizeof(*q));
    q->f = f;
    q->cb = cb;
    q->ud = ud;
    q->port = port;
    q->prev = f->waiters_tail;
    if (f->waiters_tail) f->waiters_tail->next = q; else f->waiters = q;
    f->waiters_tail = q;
    return q;
}

void edge_resolver_cancel(edge_resolve_query *q)
{
    if (q == NULL) return;
    waiter_unlink(q);                /* the flight goes on: its answer fills the cache */
    free(q);
}

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status = ARES_SUCCESS;
static void once_init_ares(void) { ares_init_status = ares_library_init(ARES_LIB_INIT_ALL); }

/* "127.0.0.1:53,[::1]:5353": the servers c-ares will ask, for messages. */
static void describe_servers(edge_resolver *r)
{
    struct ares_addr_port_node *list = NULL;
    size_t n = 0;
    r->servers[0] = '\0';
    if (ares_get_servers_ports(r->ch, &list) != ARES_SUCCESS) return;
    for (struct ares_addr_port_node *s = list; s && n < sizeof(r->servers) - 1; s = s->next) {
        char ip[INET6_ADDRSTRLEN] = "?";
        inet_ntop(s->family, &s->addr, ip, sizeof(ip));
        int w = snprintf(r->servers + n, sizeof(r->servers) - n, s->family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d",
                         n ? "," : "", ip, s->udp_port ? s->udp_port : 53);
        if (w < 0) break;
        n += (size_t)w;
    }
    ares_free_data(list);
    if (n >= sizeof(r->servers)) r->servers[sizeof(r->servers) - 1] = '\0';
}

static void apply_defaults(edge_resolver_opts *o)
{
    if (!(o->timeout > 0)) o->timeout = 5;
    if (!(o->valid_min > 0)) o->valid_min = 1;
    if (!(o->valid_max > 0)) o->valid_max = 0;
    if (o->valid_max > 0 && o->valid_min > o->valid_max) o->valid_min = o->valid_max;
}

edge_resolver *edge_resolver_new(struct ev_loop *loop, const edge_resolver_opts *opts, char *err,
                                 size_t errlen)
{
    edge_resolver_opts o = { 0 };
    if (opts) o = *opts;
    apply_defaults(&o);
    if (o.family != AF_UNSPEC && o.family != AF_INET && o.family != AF_INET6) {
        snprintf(err, errlen, "resolver: address family %d is not AF_UNSPEC, AF_INET or AF_INET6", o.family);
        return NULL;
    }
    pthread_once(&ares_once, once_init_ares);
    if (ares_init_status != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver: c-ares: %s", ares_strerror(ares_init_status));
        return NULL;
    }
    edge_resolver *r = edge_calloc(1, sizeof(*r));
    r->loop = loop;
    r->o = o;
    r->o.servers = NULL;             /* not kept: the caller's string need not outlive this call */
    ev_timer_init(&r->ares_timer, on_ares_timer, 1., 0.);
    struct ares_options ao = { 0 };
    ao.sock_state_cb = on_sock_state;
    ao.sock_state_cb_data = r;
    ao.lookups = (char *)"fb";       /* /etc/hosts first, then DNS, whatever resolv.conf says */
    ao.timeout = (int)(o.timeout * 1000 / (1 + 2 * (ARES_TRIES - 1)));   /* tries back off: T, 2T */
    if (ao.timeout < 1) ao.timeout = 1;
    ao.tries = ARES_TRIES;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc = ares_init_options(&r->ch, &ao, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver: c-ares: %s", ares_strerror(rc));
        free(r);
        return NULL;
    }
    if (opts && opts->servers && opts->servers[0]) {
        rc = ares_set_servers_ports_csv(r->ch, opts->servers);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "resolver: bad DNS servers \"%s\" (want ADDR[:PORT],...): %s",
                     opts->servers, ares_strerror(rc));
            ares_destroy(r->ch);
            free(r);
            return NULL;
        }
    }
    describe_servers(r);
    return r;
}

static void fail_all(edge_resolver *r)
{
    /* Callbacks may cancel waiters, not flights: no c-ares call runs from here. */
    for (flight *f = r->flights; f; f = f->next) deliver(f);
}

void edge_resolver_free(edge_resolver *r)
{
    if (r == NULL || r->closing) return;
    r->closing = 1;
    r->busy++;                       /* a callback below may call free again: one destroy */
    fail_all(r);
    leave(r);
}

static void destroy(edge_resolver *r)
{
    r->destroying = 1;
    ev_timer_stop(r->loop, &r->ares_timer);
    for (flight *f = r->flights; f; f = f->next) ev_timer_stop(r->loop, &f->timer);
    r->flights = NULL;               /* on_addrinfo frees every flight, timed out ones too */
    ares_destroy(r->ch);
    while (r->socks) {               /* c-ares closed them; stop what it did not report */
        sockw *s = r->socks;
        r->socks = s->next;
        ev_io_stop(r->loop, &s->io);
        free(s);
    }
    while (r->oldest) cache_evict_oldest(r);
    free(r);
}
