/* Active health checks: one timer and at most one fetch per server of each
 * checked upstream, counting consecutive passes and failures (see
 * health_check.h). */
#include "health_check.h"
#include "buf.h"
#include "common.h"
#include "log.h"
#include "lua_upstream.h"
#include "metrics.h"
#include "upstream_fetch.h"
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHECK_MAX_BODY = 65536 };   /* a bigger answer fails the check: memory stays bounded */

/* ---- the process-wide view, for the metric ---- */

/* One server of one upstream, as every worker's checks see it: it is up
 * while no worker's checks have it down. Workers that reload define the same
 * upstream again: the entry is shared by name and server, and goes when the
 * last VM checking it stops. */
typedef struct view_entry {
    char upstream[72];
    char server[280];
    int  checking;          /* VMs whose checks cover this server */
    int  down;              /* of those, how many have it down */
    struct view_entry *next;
} view_entry;

static pthread_mutex_t view_lock = PTHREAD_MUTEX_INITIALIZER;
static view_entry *view;

static view_entry *view_join(const char *upstream, const char *server)
{
    pthread_mutex_lock(&view_lock);
    view_entry *e = view;
    while (e && (strcmp(e->upstream, upstream) != 0 || strcmp(e->server, server) != 0)) e = e->next;
    if (e == NULL) {
        e = edge_calloc(1, sizeof(*e));
        snprintf(e->upstream, sizeof(e->upstream), "%s", upstream);
        snprintf(e->server, sizeof(e->server), "%s", server);
        view_entry **tail = &view;            /* appended: the metric lists servers in definition order */
        while (*tail) tail = &(*tail)->next;
        *tail = e;
    }
    e->checking++;
    pthread_mutex_unlock(&view_lock);
    return e;
}

static void view_set(view_entry *e, int was_up, int up)
{
    if (was_up == up) return;
    pthread_mutex_lock(&view_lock);
    e->down += up ? -1 : 1;
    pthread_mutex_unlock(&view_lock);
}

static void view_leave(view_entry *e, int up)
{
    pthread_mutex_lock(&view_lock);
    if (!up) e->down--;
    if (--e->checking == 0) {
        view_entry **pp = &view;
        while (*pp != e) pp = &(*pp)->next;
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&view_lock);
}

void edge_health_render(edge_buf *b)
{
    pthread_mutex_lock(&view_lock);
    if (view) edge_buf_append_str(b, "# HELP edge_upstream_server_up 1 unless a worker's active health checks "
                                     "have the server down.\n# TYPE edge_upstream_server_up gauge\n");
    for (const view_entry *e = view; e; e = e->next)
        edge_buf_printf(b, "edge_upstream_server_up{upstream=\"%s\",server=\"%s\"} %d\n", e->upstream, e->server,
                        e->down == 0);
    pthread_mutex_unlock(&view_lock);
}

/* ---- one server's checks ---- */

typedef struct check {
    struct edge_health *h;
    edge_upstream *u;            /* lives as long as the VM, which outlives h */
    int           server;        /* index in u->def.servers */
    char          name[280];     /* "host:port", as logs and the metric show it */
    edge_buf      wire;          /* the request, made once */
    char         *label;
    ev_timer      timer;         /* the next check, or the deadline of the one in flight */
    edge_fetch   *fetch;         /* the check in flight, or NULL */
    double        started;
    unsigned      passes, fails; /* consecutive */
    int           up;
    int           slot;          /* the upstream's /metrics slot: edge_upstream_health_checks_total */
    view_entry   *view;
} check;

struct edge_health {
    edge_worker *w;
    check       *checks;
    size_t       n;
    uint64_t     rng;            /* xorshift: jitter */
};

static double jitter(edge_health *h)
{
    h->rng ^= h->rng << 13;
    h->rng ^= h->rng >> 7;
    h->rng ^= h->rng << 17;
    return (double)(h->rng >> 11) / 9007199254740992.0;   /* [0, 1) */
}

static void arm(check *c, double after)
{
    struct ev_loop *loop = c->h->w->loop;
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, after > 0.001 ? after : 0.001, 0.);
    ev_timer_start(loop, &c->timer);
}

/* The next check starts `interval` after this one started (or at once when
 * it took longer than that). */
static void schedule_next(check *c)
{
    double next = c->started + c->u->def.active.interval - ev_now(c->h->w->loop);
    arm(c, next);
}

static void record(check *c, int pass, const char *why)
{
    const edge_upstream_def *def = &c->u->def;
    EDGE_COUNT(c->h->w->counters.upstreams[c->slot].health_checks[pass ? 1 : 0]);
    if (pass) {
        c->fails = 0;
        if (c->passes < def->active.rise) c->passes++;
    } else {
        c->passes = 0;
        if (c->fails < def->active.fall) c->fails++;
    }
    int was_up = c->up;
    if (was_up && !pass && c->fails >= def->active.fall) {
        c->up = 0;
        edge_log(EDGE_LOG_WARN, 0, "upstream %s: server %s down after %u failed checks: %s", def->name,
                 c->name, c->fails, why);
    } else if (!was_up && pass && c->passes >= def->active.rise) {
        c->up = 1;
        edge_log(EDGE_LOG_NOTICE, 0, "upstream %s: server %s up after %u passed checks", def->name, c->name,
                 c->passes);
    } else if (!pass) {
        edge_log(EDGE_LOG_INFO, 0, "upstream %s: server %s failed a check: %s", def->name, c->name, why);
    }
    if (was_up == c->up) return;
    edge_balancer_set_checked(c->u->balancer, c->server, c->up);
    view_set(c->view, was_up, c->up);
}

static void on_answer(void *ud, edge_fetch_result *r)
{
    check *c = ud;
    c->fetch = NULL;
    char why[400];
    int pass = 0;
    if (r->resp == NULL) {
        snprintf(why, sizeof(why), "%s", r->err && r->err[0] ? r->err : "no answer");
    } else {
        pass = r->resp->status >= 200 && r->resp->status < 400;
        snprintf(why, sizeof(why), "status %d", r->resp->status);
    }
    record(c, pass, why);
    schedule_next(c);
}

static void start_check(check *c)
{
    const edge_upstream_def *def = &c->u->def;
    const edge_upstream_server *s = &def->servers[c->server];
    double to = def->active.timeout;
    edge_fetch_target t = {
        .host = s->host, .port = s->port, .tls = def->tls.enabled, .verify = def->tls.verify,
        .sni = def->tls.sni, .ca_file = def->tls.ca_file,
        .keepalive = {.size = 0},         /* a new connection each time: the check tests connect too */
        .dns_valid = def->dns_valid,
    };
    edge_fetch_request r = {
        .wire = c->wire.base, .wire_len = c->wire.len, .label = c->label, .idempotent = 1,
        .uncounted = 1,                   /* its own metric: requests_total counts the script's tries */
        .retries = 0, .max_body = CHECK_MAX_BODY, .timeout = {.connect = to, .send = to, .read = to},
    };
    c->started = ev_now(c->h->w->loop);
    arm(c, to);                           /* the deadline of the whole check */
    c->fetch = edge_upstream_fetch(c->h->w, &t, &r, on_answer, c);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    EDGE_UNUSED(loop);
    EDGE_UNUSED(revents);
    check *c = edge_container_of(t, check, timer);
    if (c->fetch == NULL) {
        start_check(c);
        return;
    }
    edge_fetch_cancel(c->fetch);          /* the deadline passed: its connection is closed */
    c->fetch = NULL;
    char why[96];
    snprintf(why, sizeof(why), "no answer within %g s", c->u->def.active.timeout);
    record(c, 0, why);
    schedule_next(c);
}

/* ---- setting up ---- */

static void server_name(char *out, size_t len, const edge_upstream_server *s)
{
    if (strchr(s->host, ':')) snprintf(out, len, "[%s]:%u", s->host, (unsigned)s->port);
    else snprintf(out, len, "%s:%u", s->host, (unsigned)s->port);
}

static void init_check(edge_health *h, check *c, edge_upstream *u, int server)
{
    const edge_upstream_def *def = &u->def;
    const edge_upstream_server *s = &def->servers[server];
    c->h = h;
    c->u = u;
    c->server = server;
    c->up = 1;                             /* as nginx: up until its checks say otherwise */
    c->slot = edge_metrics_upstream_slot(&h->w->counters, def->name);
    server_name(c->name, sizeof(c->name), s);
    /* Host: the server's host, with its port unless it is the scheme's. The
     * path has no space or control byte (define refuses them). */
    int default_port = s->port == (def->tls.enabled ? 443 : 80);
    int v6 = strchr(s->host, ':') != NULL;
    if (default_port) edge_buf_printf(&c->wire, "GET %s HTTP/1.1\r\nHost: %s%s%s", def->active.path,
                                      v6 ? "[" : "", s->host, v6 ? "]" : "");
    else edge_buf_printf(&c->wire, "GET %s HTTP/1.1\r\nHost: %s", def->active.path, c->name);
    edge_buf_append_str(&c->wire, "\r\nUser-Agent: edge-health-check\r\nConnection: close\r\n\r\n");
    edge_buf label = {0};
    edge_buf_printf(&label, "health check %s://%s%s", def->tls.enabled ? "https" : "http", c->name,
                    def->active.path);
    c->label = edge_strdup(label.base);
    edge_buf_free(&label);
    c->view = view_join(def->name, c->name);
    ev_init(&c->timer, on_timer);
    arm(c, def->active.interval * jitter(h));
}

static void count_checked(edge_upstream *u, void *ud)
{
    if (u->def.active.enabled && u->balancer) *(size_t *)ud += u->def.n_servers;
}

static void add_checks(edge_upstream *u, void *ud)
{
    edge_health *h = ud;
    if (!u->def.active.enabled || u->balancer == NULL) return;
    for (size_t i = 0; i < u->def.n_servers; i++) init_check(h, &h->checks[h->n++], u, (int)i);
}

typedef struct walk_args {
    void (*fn)(edge_upstream *u, void *ud);
    void *ud;
} walk_args;

/* Runs under lua_pcall: walking the upstreams may allocate (a memory error
 * then means no checks, logged, instead of a panic). */
static int walk(lua_State *L)
{
    walk_args *a = lua_touserdata(L, 1);
    edge_lua_upstream_each(L, a->fn, a->ud);
    return 0;
}

static int each_upstream(lua_State *L, void (*fn)(edge_upstream *, void *), void *ud)
{
    walk_args a = {fn, ud};
    lua_pushcfunction(L, walk);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return EDGE_OK;
    edge_log(EDGE_LOG_ERR, 0, "active health checks not started: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return EDGE_ERROR;
}

edge_health *edge_health_start(edge_worker *w, lua_State *L)
{
    size_t total = 0;
    if (each_upstream(L, count_checked, &total) != EDGE_OK || total == 0) return NULL;
    edge_health *h = edge_calloc(1, sizeof(*h));
    h->w = w;
    h->checks = edge_calloc(total, sizeof(*h->checks));
    h->rng = ((uint64_t)(uintptr_t)h ^ (uint64_t)(ev_time() * 1e6) ^ ((uint64_t)w->id << 32)) | 1;
    if (each_upstream(L, add_checks, h) != EDGE_OK || h->n != total) {
        edge_health_stop(h);            /* the walk failed half-way: none run */
        return NULL;
    }
    return h;
}

void edge_health_stop(edge_health *h)
{
    if (h == NULL) return;
    for (size_t i = 0; i < h->n; i++) {
        check *c = &h->checks[i];
        ev_timer_stop(h->w->loop, &c->timer);
        if (c->fetch) edge_fetch_cancel(c->fetch);
        view_leave(c->view, c->up);
        edge_buf_free(&c->wire);
        free(c->label);
    }
    free(h->checks);
    free(h);
}
