/* Drives src/resolver.c on its own ev loop for spec/resolver_spec.lua.
 *
 *   resolver_driver [--commands FILE] [--servers S] [--timeout T] [--valid-min T]
 *                   [--valid-max T] [--family 0|4|6] [--max-seconds N]
 *
 * Commands, one a line, from FILE (followed as it grows, like tail -f) or stdin:
 *   resolve ID HOST PORT       many N PREFIX HOST PORT (IDs PREFIX1..PREFIXN)
 *   resolvev ID HOST PORT VALID   (edge_resolver_resolve_valid: the caller's own valid)
 *   cancel ID                  on ID COMMAND   (run COMMAND when ID's callback runs)
 *   free                       echo TEXT       quit
 * Output, one a line on stdout:
 *   cb ID ok sync|async ADDR...     cb ID error sync|async MESSAGE
 *   cancelled ID    freed    TEXT (echo)    bye
 *   FAIL ...   whenever the resolver breaks its contract (a callback twice,
 *              after cancel, or neither a callback nor a query).
 * The resolver's error log (warnings) goes to stderr. */
#include "log.h"
#include "resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SLOTS 4096

enum { PENDING, ANSWERED, CANCELLED };

typedef struct slot {
    char id[48];
    edge_resolve_query *q;
    int state;
    int in_resolve;              /* the callback runs inside edge_resolver_resolve */
    char on_cb[256];             /* a command to run from the callback */
} slot;

static struct ev_loop *loop;
static edge_resolver *resolver;
static slot slots[MAX_SLOTS];
static int nslots;
static int input_fd = -1;
static char inbuf[65536];
static size_t inlen;
static int exit_code;

static void run_command(char *line);

static slot *find_slot(const char *id)
{
    for (int i = 0; i < nslots; i++)
        if (strcmp(slots[i].id, id) == 0) return &slots[i];
    return NULL;
}

static slot *new_slot(const char *id)
{
    slot *s = find_slot(id);
    if (s) return s;
    if (nslots == MAX_SLOTS) {
        printf("FAIL too many queries\n");
        exit(2);
    }
    s = &slots[nslots++];
    snprintf(s->id, sizeof(s->id), "%s", id);
    return s;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%d", ip, ntohs(sin->sin_port));
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%d", ip, ntohs(sin6->sin6_port));
    }
}

static void on_resolved(void *ud, int status, const struct sockaddr_storage *addrs, int n, const char *err)
{
    slot *s = ud;
    const char *when = s->in_resolve ? "sync" : "async";
    if (s->state == ANSWERED) printf("FAIL callback twice for %s\n", s->id);
    if (s->state == CANCELLED) printf("FAIL callback after cancel for %s\n", s->id);
    s->state = ANSWERED;
    s->q = NULL;
    if (status == 0) {
        printf("cb %s ok %s", s->id, when);
        for (int i = 0; i < n; i++) {
            char a[80];
            format_addr(&addrs[i], a, sizeof(a));
            printf(" %s", a);
        }
        if (n < 1) printf(" FAIL no addresses");
        printf("\n");
    } else {
        printf("cb %s error %s %s\n", s->id, when, err ? err : "FAIL no message");
    }
    if (s->on_cb[0]) {
        char cmd[sizeof(s->on_cb)];
        memcpy(cmd, s->on_cb, sizeof(cmd));
        s->on_cb[0] = '\0';
        run_command(cmd);
    }
}

static void start_resolve(const char *id, const char *host, int port, double valid)
{
    if (resolver == NULL) {
        printf("FAIL resolve %s after free\n", id);
        return;
    }
    slot *s = new_slot(id);
    s->state = PENDING;
    s->in_resolve = 1;
    edge_resolve_query *q = valid > 0 ? edge_resolver_resolve_valid(resolver, host, port, valid, on_resolved, s)
                                      : edge_resolver_resolve(resolver, host, port, on_resolved, s);
    s->in_resolve = 0;
    if (s->state == ANSWERED && q) printf("FAIL %s answered at once but a query was returned\n", id);
    if (s->state == PENDING && !q) printf("FAIL %s: no answer and no query\n", id);
    s->q = q;
}

static void cancel(const char *id)
{
    slot *s = find_slot(id);
    if (s == NULL || s->state != PENDING || s->q == NULL) {
        printf("cancel %s: nothing pending\n", id);
        return;
    }
    edge_resolver_cancel(s->q);
    s->q = NULL;
    s->state = CANCELLED;
    printf("cancelled %s\n", id);
}

static void free_resolver(void)
{
    edge_resolver *r = resolver;
    if (r == NULL) return;
    resolver = NULL;             /* callbacks run from inside: no new work */
    edge_resolver_free(r);
    printf("freed\n");
}

static void run_command(char *line)
{
    char a[256] = "", b[256] = "", c[256] = "", d[256] = "";
    int n = sscanf(line, "%255s %255s %255s %255s", a, b, c, d);
    if (n < 1) return;
    if (strcmp(a, "resolve") == 0 && n == 4) {
        start_resolve(b, c, atoi(d), 0);
    } else if (strcmp(a, "resolvev") == 0 && n == 4) {
        double valid = 0;
        if (sscanf(line, "%*s %*s %*s %*s %lf", &valid) != 1) { printf("FAIL bad command: %s\n", line); return; }
        start_resolve(b, c, atoi(d), valid);
    } else if (strcmp(a, "many") == 0 && n == 4) {
        char host[256] = "", port[32] = "";
        if (sscanf(line, "%*s %*s %*s %255s %31s", host, port) != 2) { printf("FAIL bad command: %s\n", line); return; }
        for (int i = 1; i <= atoi(b); i++) {
            char id[48];
            snprintf(id, sizeof(id), "%.36s%d", c, i % 1000000);
            start_resolve(id, host, atoi(port), 0);
        }
    } else if (strcmp(a, "cancel") == 0 && n >= 2) {
        cancel(b);
    } else if (strcmp(a, "on") == 0 && n >= 3) {
        const char *rest = strstr(line, b) + strlen(b);
        while (*rest == ' ') rest++;
        snprintf(new_slot(b)->on_cb, sizeof(slots[0].on_cb), "%s", rest);
    } else if (strcmp(a, "free") == 0) {
        free_resolver();
    } else if (strcmp(a, "echo") == 0) {
        printf("%s\n", strlen(line) > 5 ? line + 5 : "");
    } else if (strcmp(a, "quit") == 0) {
        free_resolver();
        printf("bye\n");
        ev_break(loop, EVBREAK_ALL);
    } else {
        printf("FAIL bad command: %s\n", line);
    }
}

/* Runs every complete line read so far; true at the end of the input. */
static int take_input(void)
{
    for (;;) {
        ssize_t got = read(input_fd, inbuf + inlen, sizeof(inbuf) - 1 - inlen);
        if (got == 0) return 1;
        if (got < 0) return errno != EAGAIN && errno != EINTR;
        inlen += (size_t)got;
        char *nl;
        while ((nl = memchr(inbuf, '\n', inlen)) != NULL) {
            *nl = '\0';
            size_t used = (size_t)(nl - inbuf) + 1;
            char line[sizeof(inbuf)];
            memcpy(line, inbuf, used);
            memmove(inbuf, inbuf + used, inlen - used);
            inlen -= used;
            run_command(line);
        }
        if (inlen == sizeof(inbuf) - 1) inlen = 0;   /* a line too long: dropped */
    }
}

/* A command file is followed as it grows: its end is no reason to stop. */
static void on_poll(struct ev_loop *l, ev_timer *w, int revents) { (void)take_input(); }

static void on_stdin(struct ev_loop *l, ev_io *w, int revents)
{
    if (!take_input()) return;
    ev_io_stop(l, w);
    char quit[] = "quit";
    run_command(quit);
}

static void on_deadline(struct ev_loop *l, ev_timer *w, int revents)
{
    printf("FAIL max-seconds reached\n");
    exit_code = 3;
    free_resolver();
    ev_break(l, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    edge_resolver_opts o = { 0 };
    const char *commands = NULL;
    double max_seconds = 60;
    setvbuf(stdout, NULL, _IOLBF, 0);
    edge_log_level = EDGE_LOG_NOTICE;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--commands") == 0) commands = v;
        else if (strcmp(k, "--servers") == 0) o.servers = v;
        else if (strcmp(k, "--timeout") == 0) o.timeout = atof(v);
        else if (strcmp(k, "--valid-min") == 0) o.valid_min = atof(v);
        else if (strcmp(k, "--valid-max") == 0) o.valid_max = atof(v);
        else if (strcmp(k, "--family") == 0) o.family = atoi(v) == 4 ? AF_INET : atoi(v) == 6 ? AF_INET6 : AF_UNSPEC;
        else if (strcmp(k, "--max-seconds") == 0) max_seconds = atof(v);
        else { fprintf(stderr, "resolver_driver: unknown option %s\n", k); return 2; }
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    char err[256] = "";
    resolver = edge_resolver_new(loop, &o, err, sizeof(err));
    if (resolver == NULL) {
        printf("new failed: %s\n", err);
        ev_loop_destroy(loop);
        return 1;
    }
    ev_timer poll, deadline;
    ev_io in;
    ev_timer_init(&deadline, on_deadline, max_seconds, 0.);
    ev_timer_start(loop, &deadline);
    if (commands) {
        input_fd = open(commands, O_RDONLY | O_CLOEXEC);
        if (input_fd < 0) { printf("cannot open %s: %s\n", commands, strerror(errno)); return 1; }
        ev_timer_init(&poll, on_poll, 0.005, 0.005);
        ev_timer_start(loop, &poll);
    } else {
        input_fd = STDIN_FILENO;
        fcntl(input_fd, F_SETFL, fcntl(input_fd, F_GETFL) | O_NONBLOCK);
        ev_io_init(&in, on_stdin, STDIN_FILENO, EV_READ);
        ev_io_start(loop, &in);
    }
    printf("ready\n");
    ev_run(loop, 0);
    free_resolver();
    if (commands) close(input_fd);
    ev_loop_destroy(loop);
    return exit_code;
}
