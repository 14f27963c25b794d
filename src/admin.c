/* Admin HTTP endpoint: /metrics and /healthz. */
#include "admin.h"
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
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX 8192
#define CLIENT_TIMEOUT 5.0
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
    struct admin_client *clients;   /* open ones, freed at stop */
    int       n_clients;
} admin;

typedef struct admin_client {
    admin   *a;
    struct admin_client *prev, *next;
    int      fd;
    ev_io    io;
    ev_timer timer;
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
    free(cl);
}

static void send_response(admin_client *cl, int status, const char *type, const edge_buf *body, int head)
{
    edge_buf out = {0};
    edge_buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n", status, status == 200 ? "OK" : status == 404 ? "Not Found" :
                          status == 405 ? "Method Not Allowed" : "Bad Request", type, body->len);
    if (!head) edge_buf_append(&out, body->base, body->len);
    /* Small replies on loopback: a blocking write bounded by SO_SNDTIMEO. */
    struct timeval tv = {5, 0};
    setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t off = 0;
    while (off < out.len) {
        ssize_t n = send(cl->fd, out.base + off, out.len - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (errno == EAGAIN) usleep(1000);
            continue;
        }
        if (n <= 0) break;
        off += (size_t)n;
    }
    edge_buf_free(&out);
}

/* Answers the request line in cl->buf. */
static void handle(admin_client *cl)
{
    edge_buf body = {0};
    const char *type = "text/plain; charset=utf-8";
    int status = 200;
    char method[16], path[256];
    if (sscanf(cl->buf, "%15s %255s HTTP/1.", method, path) != 2) {
        status = 400;
        edge_buf_append_str(&body, "bad request\n");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        edge_buf_append_str(&body, "only GET\n");
    } else if (strcmp(path, "/metrics") == 0) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        edge_metrics_render(&body, cl->a->workers, cl->a->n_workers, cl->a->cache);
    } else if (strcmp(path, "/healthz") == 0) {
        edge_buf_append_str(&body, "ok\n");
    } else {
        status = 404;
        edge_buf_append_str(&body, "try /metrics or /healthz\n");
    }
    send_response(cl, status, type, &body, strncmp(cl->buf, "HEAD ", 5) == 0);
    edge_buf_free(&body);
}

static void on_client(struct ev_loop *loop, ev_io *io, int revents)
{
    admin_client *cl = io->data;
    ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - 1 - cl->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        client_close(cl);
        return;
    }
    cl->len += (size_t)n;
    cl->buf[cl->len] = '\0';
    if (strstr(cl->buf, "\r\n\r\n") || strstr(cl->buf, "\n\n")) {
        handle(cl);
        client_close(cl);
    } else if (cl->len >= sizeof(cl->buf) - 1) {
        edge_buf body = {0};
        edge_buf_append_str(&body, "request too large\n");
        send_response(cl, 400, "text/plain", &body, 0);
        edge_buf_free(&body);
        client_close(cl);
    }
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
        ev_timer_init(&cl->timer, on_client_timeout, CLIENT_TIMEOUT, 0.);
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
                     struct edge_cache *cache, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (edge_listener_parse(addr, &ss, &len) != EDGE_OK) {
        snprintf(err, errlen, "invalid admin address '%s'", addr);
        return EDGE_ERROR;
    }
    int fd = edge_listener_open(&ss, len, err, errlen);
    if (fd < 0) return EDGE_ERROR;
    admin *a = edge_calloc(1, sizeof(*a));
    a->fd = fd;
    a->workers = workers;
    a->n_workers = n_workers;
    a->cache = cache;
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
    edge_log(EDGE_LOG_NOTICE, 0, "admin listening on http://%s (/metrics, /healthz)", name);
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
