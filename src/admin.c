/* Admin HTTP endpoint: /metrics, /healthz and /cache (purge). */
#include "admin.h"
#include "admin_auth.h"
#include "admin_purge.h"
#include "admin_request.h"
#include "buf.h"
#include "common.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX 8192
#define REQUEST_TIMEOUT 5.0     /* a started request must arrive within this */
#define IDLE_TIMEOUT 30.0       /* a keep-alive connection between scrapes */
#define SEND_DEADLINE 5.0       /* pending output must be taken within this, or we close */
#define OUTPUT_MAX 65536        /* no new pipelined request is answered past this much output */
#define MAX_CLIENTS 64          /* scrapers are few; more is a misbehaving client */

typedef struct admin {
    struct ev_loop *loop;
    pthread_t thread;
    int       fd;
    ev_io     accept_io;
    ev_async  stop_async;
    struct edge_worker *workers;
    int       n_workers;
    struct edge_cache *cache;
    edge_admin_auth *auth;          /* NULL: no token (main owns it) */
    struct admin_client *clients;   /* open ones, freed at stop */
    int       n_clients;
} admin;

/* One connection. The admin thread never blocks on it: reads and writes are
 * non-blocking, a response the client does not take within SEND_DEADLINE
 * closes the connection, and pipelined requests are answered only while
 * less than OUTPUT_MAX bytes wait, so a scraper that stops reading costs
 * one bounded buffer and no CPU. */
typedef struct admin_client {
    admin   *a;
    struct admin_client *prev, *next;
    int      fd;
    ev_io    io;
    ev_timer timer;
    int      closing;               /* close once out is sent */
    edge_buf out;                   /* responses not yet sent, from out_off */
    size_t   out_off;
    size_t   len;
    char     buf[REQUEST_MAX];
} admin_client;

static admin *the_admin;

static void client_close(admin_client *cl)
{
    if (cl->prev) cl->prev->next = cl->next;
    else cl->a->clients = cl->next;
    if (cl->next) cl->next->prev = cl->prev;
    cl->a->n_clients--;
    ev_io_stop(cl->a->loop, &cl->io);
    ev_timer_stop(cl->a->loop, &cl->timer);
    close(cl->fd);
    edge_buf_free(&cl->out);
    free(cl);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Bad Request";
    }
}

/* What to answer. */
typedef struct admin_reply {
    int         status;
    const char *type;
    const char *extra;              /* more header lines, each ending in CRLF */
    edge_buf    body;
} admin_reply;

static const char TEXT[] = "text/plain; charset=utf-8";
static const char JSON[] = "application/json";

static void queue_response(admin_client *cl, const admin_reply *r, int head)
{
    edge_buf_printf(&cl->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                    r->status, reason(r->status), r->type, r->body.len, r->extra,
                    cl->closing ? "Connection: close\r\n" : "");
    if (!head) edge_buf_append(&cl->out, r->body.base, r->body.len);
}

static int path_is(const edge_admin_request *r, const char *path)
{
    return r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0;
}

static int method_is(const edge_admin_request *r, const char *method)
{
    return strcmp(r->method, method) == 0;
}

static void reply(admin_reply *out, int status, const char *body)
{
    out->status = status;
    edge_buf_append_str(&out->body, body);
}

/* With a token (--admin-token-file), may this request use /cache and
 * /metrics? If not, fills a 401 that says how to authenticate. */
static int authorized(const admin *a, const edge_admin_request *r, admin_reply *out)
{
    size_t n;
    const char *v = a->auth ? edge_admin_request_field(r, "authorization:", &n) : NULL;
    if (a->auth == NULL || (v && edge_admin_auth_accepts(a->auth, v, n))) return 1;
    out->extra = v ? "WWW-Authenticate: Bearer realm=\"edge-admin\", error=\"invalid_token\"\r\n"
                   : "WWW-Authenticate: Bearer realm=\"edge-admin\"\r\n";
    reply(out, 401, out->type == JSON ? "{\"error\":\"this needs Authorization: Bearer TOKEN\"}\n"
                                      : "this needs Authorization: Bearer TOKEN\n");
    return 0;
}

/* PURGE or DELETE /cache?key=K|prefix=P|tag=T[&soft=1]. */
static void serve_cache(admin *a, const edge_admin_request *r, admin_reply *out)
{
    out->type = JSON;
    if (!authorized(a, r, out)) return;
    if (!method_is(r, "PURGE") && !method_is(r, "DELETE")) {
        out->extra = "Allow: PURGE, DELETE\r\n";
        reply(out, 405, "{\"error\":\"use PURGE or DELETE\"}\n");
        return;
    }
    out->status = edge_admin_purge(a->cache, r->query ? r->query : "", r->query_len, ev_time(), &out->body);
}

/* GET (or HEAD) /metrics and /healthz; /healthz stays open with a token, for
 * load balancers and orchestrators that only probe. */
static void serve_read(admin *a, const edge_admin_request *r, admin_reply *out)
{
    int metrics = path_is(r, "/metrics");
    if (metrics && !authorized(a, r, out)) return;
    if (!method_is(r, "GET") && !method_is(r, "HEAD")) {
        out->extra = "Allow: GET, HEAD\r\n";
        reply(out, 405, "only GET\n");
    } else if (metrics) {
        out->type = "text/plain; version=0.0.4; charset=utf-8";
        edge_metrics_render(&out->body, a->workers, a->n_workers, a->cache);
    } else {
        reply(out, 200, "ok\n");
    }
}

/* Answers the request whose header block is cl->buf[0, hlen). */
static void handle(admin_client *cl, size_t hlen)
{
    admin_reply out = {.status = 200, .type = TEXT, .extra = ""};
    edge_admin_request r;
    if (edge_admin_request_parse(cl->buf, hlen, &r) != EDGE_OK) {
        reply(&out, 400, "bad request\n");
        r = (edge_admin_request){.minor = '0'};
    } else if (edge_admin_request_has_body(&r)) {
        reply(&out, 400, "admin requests have no body\n");
    } else if (path_is(&r, "/cache")) {
        serve_cache(cl->a, &r, &out);
    } else if (path_is(&r, "/metrics") || path_is(&r, "/healthz")) {
        serve_read(cl->a, &r, &out);
    } else {
        reply(&out, 404, "try /metrics, /healthz or /cache\n");
    }
    /* After a 400 or 405 a body we did not parse may follow: close. */
    if (out.status == 400 || out.status == 405 || r.minor != '1' || edge_admin_request_asks_close(&r))
        cl->closing = 1;
    queue_response(cl, &out, strcmp(r.method, "HEAD") == 0);
    edge_buf_free(&out.body);
}

/* The length of the first complete header block in cl->buf, or 0. */
static size_t request_length(const admin_client *cl)
{
    const char *crlf = strstr(cl->buf, "\r\n\r\n"), *lf = strstr(cl->buf, "\n\n");
    if (crlf && (!lf || crlf < lf)) return (size_t)(crlf - cl->buf) + 4;
    return lf ? (size_t)(lf - cl->buf) + 2 : 0;
}

/* Answers the complete requests in cl->buf while little output waits. */
static void answer_requests(admin_client *cl)
{
    size_t n;
    while (!cl->closing && cl->out.len - cl->out_off < OUTPUT_MAX && (n = request_length(cl)) > 0) {
        handle(cl, n);
        memmove(cl->buf, cl->buf + n, cl->len - n + 1);
        cl->len -= n;
    }
    if (!cl->closing && cl->len >= sizeof(cl->buf) - 1) {
        admin_reply out = {.type = "text/plain", .extra = ""};
        reply(&out, 400, "request too large\n");
        cl->closing = 1;
        queue_response(cl, &out, 0);
        edge_buf_free(&out.body);
    }
}

static void watch(admin_client *cl, int events, double timeout)
{
    ev_io_stop(cl->a->loop, &cl->io);
    ev_io_set(&cl->io, cl->fd, events);
    ev_io_start(cl->a->loop, &cl->io);
    ev_timer_stop(cl->a->loop, &cl->timer);
    ev_timer_set(&cl->timer, timeout, 0.);
    ev_timer_start(cl->a->loop, &cl->timer);
}

/* Sends what it can without blocking. Once a response is out, waits for
 * the next request (or closes); on EAGAIN, waits until the client takes
 * more, at most SEND_DEADLINE. Returns 0 when cl was closed. */
static int flush(admin_client *cl)
{
    int had_output = cl->out.len > 0;
    while (cl->out_off < cl->out.len) {
        ssize_t n = send(cl->fd, cl->out.base + cl->out_off, cl->out.len - cl->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            /* The deadline runs from the first EAGAIN, not from the last
             * progress: a client taking a byte now and then cannot hold us. */
            if (!(cl->io.events & EV_WRITE)) watch(cl, EV_WRITE, SEND_DEADLINE);
            return 1;
        }
        if (n <= 0) {
            client_close(cl);
            return 0;
        }
        cl->out_off += (size_t)n;
    }
    edge_buf_reset(&cl->out, OUTPUT_MAX);
    cl->out_off = 0;
    if (cl->closing) {
        client_close(cl);
        return 0;
    }
    if (had_output) watch(cl, EV_READ, cl->len ? REQUEST_TIMEOUT : IDLE_TIMEOUT);
    return 1;
}

/* Reads what arrived and answers the complete requests. Returns 0 when cl
 * was closed. */
static int on_readable(admin_client *cl)
{
    ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - 1 - cl->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
    if (n < 0) {
        client_close(cl);
        return 0;
    }
    if (cl->len == 0 && n > 0) {          /* a request started: it has REQUEST_TIMEOUT to arrive */
        ev_timer_stop(cl->a->loop, &cl->timer);
        ev_timer_set(&cl->timer, REQUEST_TIMEOUT, 0.);
        ev_timer_start(cl->a->loop, &cl->timer);
    }
    cl->len += (size_t)n;
    cl->buf[cl->len] = '\0';
    answer_requests(cl);
    if (n == 0) cl->closing = 1;          /* half-closed: answer what came, then close */
    return 1;
}

static void on_client(struct ev_loop *loop, ev_io *io, int revents)
{
    admin_client *cl = io->data;
    if ((revents & EV_READ) && !on_readable(cl)) return;
    /* Each time the output drains, answer the pipelined requests held back. */
    while (flush(cl) && cl->out.len == 0 && !cl->closing && request_length(cl) > 0) answer_requests(cl);
}

static void on_client_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    client_close(t->data);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    admin *a = io->data;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (a->n_clients >= MAX_CLIENTS) {
            close(fd);
            continue;
        }
        a->n_clients++;
        admin_client *cl = edge_calloc(1, sizeof(*cl));
        cl->a = a;
        cl->fd = fd;
        cl->next = a->clients;
        if (a->clients) a->clients->prev = cl;
        a->clients = cl;
        ev_io_init(&cl->io, on_client, fd, EV_READ);
        cl->io.data = cl;
        ev_timer_init(&cl->timer, on_client_timeout, REQUEST_TIMEOUT, 0.);
        cl->timer.data = cl;
        ev_io_start(loop, &cl->io);
        ev_timer_start(loop, &cl->timer);
    }
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void *admin_main(void *arg)
{
    admin *a = arg;
    ev_run(a->loop, 0);
    return NULL;
}

int edge_admin_start(const char *addr, struct edge_worker *workers, int n_workers,
                     struct edge_cache *cache, edge_admin_auth *auth, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (edge_listener_parse(addr, &ss, &len) != EDGE_OK) {
        snprintf(err, errlen, "invalid admin address '%s'", addr);
        return EDGE_ERROR;
    }
    if (edge_listener_claim(&ss, len, "admin address ", err, errlen) != 0) return EDGE_ERROR;
    int fd = edge_listener_open(&ss, len, "admin address ", err, errlen);
    if (fd < 0) return EDGE_ERROR;
    admin *a = edge_calloc(1, sizeof(*a));
    a->fd = fd;
    a->workers = workers;
    a->n_workers = n_workers;
    a->cache = cache;
    a->auth = auth;
    a->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    ev_io_init(&a->accept_io, on_accept, fd, EV_READ);
    a->accept_io.data = a;
    ev_io_start(a->loop, &a->accept_io);
    ev_async_init(&a->stop_async, on_stop);
    ev_async_start(a->loop, &a->stop_async);
    if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
        snprintf(err, errlen, "cannot start the admin thread");
        ev_loop_destroy(a->loop);
        close(fd);
        free(a);
        return EDGE_ERROR;
    }
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char name[80];
    edge_sockaddr_format(&ss, name, sizeof(name));
    edge_log(EDGE_LOG_NOTICE, 0, "admin listening on http://%s (/metrics, /healthz, /cache)%s", name,
             auth ? ": /metrics and /cache need the token" : "");
    the_admin = a;
    return EDGE_OK;
}

void edge_admin_stop(void)
{
    admin *a = the_admin;
    if (a == NULL) return;
    ev_async_send(a->loop, &a->stop_async);
    pthread_join(a->thread, NULL);
    while (a->clients) client_close(a->clients);
    close(a->fd);
    ev_loop_destroy(a->loop);
    free(a);
    the_admin = NULL;
}
