/* The libFuzzer harness shared by fuzz_h1 and fuzz_h2 (spec/fuzz/README.md).
 *
 * Set up once: the configuration defaults with small limits, the nghttp2
 * callbacks, the access log (to /dev/null: every line is still formatted),
 * ONE worker from edge_worker_init without listening sockets (so its loop,
 * its Lua VM running the real lua/default.lua, its reaper and inbox are the
 * server's own), and the error log at "error".
 *
 * Per input:
 *   1. a socketpair; the server end goes to edge_conn_accept(..., plain = 1),
 *      exactly what a --listen-plain listener does with an accepted socket;
 *   2. the client end writes the input (in pieces: see write_plan), running
 *      the worker's loop after each write and reading back what the server
 *      answers, until everything is written and the server is quiet (no
 *      request in flight, nothing more to read), bounded to PHASE1_SECONDS;
 *   3. for some inputs, an event the server must survive: the connection's
 *      timer fires (header/keep-alive/idle/linger timeouts), the worker is
 *      asked to stop gracefully (SIGTERM), or the script is reloaded while a
 *      request is in flight (SIGHUP);
 *   4. the client closes; the loop runs until the connection is closed and
 *      the reaper freed it;
 *   5. nothing may be left: no connection, no request holding a dispatcher
 *      slot or Lua state, no active watcher beyond the worker's own, the
 *      open-connections gauge at 0. Anything left aborts (edge-fuzz: BUG), so
 *      libFuzzer saves the input.
 *
 * edge.sleep: default.lua sleeps 2 ms per request. Waiting for real would cap
 * the fuzzer at a few hundred inputs a second, so the harness shortens the
 * sleep timer to 0 s: the coroutine still yields, the ev_timer still goes
 * through the loop, and respond resumes from on_sleep_done on the next
 * iteration, through script.c's edge_script_sleep_scale (0 here).
 * EDGE_FUZZ_REAL_SLEEP=1 keeps the real 2 ms.
 *
 * Environment: EDGE_FUZZ_SCRIPT (default <repo>/lua/default.lua),
 * EDGE_FUZZ_REAL_SLEEP=1, EDGE_FUZZ_LOG_LEVEL (default error),
 * EDGE_FUZZ_DUMP=1 (copy what the server sends to stderr: for reproducers),
 * EDGE_FUZZ_ACCESS_LOG=FILE (the access log, /dev/null by default; /dev/stderr
 * shows each request's status), EDGE_FUZZ_STATS=1 (counts at exit). */
#include "fuzz_common.h"

#include "access_log.h"
#include "cache.h"
#include "common.h"
#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "h2.h"
#include "log.h"
#include "request.h"
#include "script.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <lua.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PHASE_SECONDS  0.05    /* serving the input, and serving after each event */
#define CLOSE_SECONDS  2.0     /* closing: normally one or two loop iterations */
#define WAIT_SECONDS   0.001   /* how long one blocking loop iteration may wait */
#define CACHE_BYTES    (1u << 20)
#define SLOW_READ      256     /* bytes a slow client reads per loop iteration */
#define SLOW_SNDBUF    4096    /* the server's socket send buffer for a slow client */

static edge_config cfg;
static edge_worker worker;
static int worker_ready;
static int baseline_active;    /* ev_run's active count with no connection: the worker's own watchers */
static int real_sleep;
static int dump_output;
static char script_path[4096];
static int access_log_json;    /* the format the access log is open with */
static const char *access_log_path = "/dev/null";
static ev_timer wait_guard;    /* bounds a blocking loop iteration */
static int self_test;          /* the first input: sent the plain way */

static unsigned long long n_inputs, n_answered, bytes_answered, n_reloads;

/* ---- helpers ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bug(const char *what)
{
    fprintf(stderr, "edge-fuzz: BUG: %s (n_conns %d, in flight %d, lua refs %d)\n", what, worker.n_conns,
            edge_dispatch_inflight(), worker.script ? worker.script->refs : -1);
    abort();
}

/* The repository: EDGE_FUZZ_ROOT, or what build/fuzz/<binary> sits in. */
static void find_root(char *out, size_t n)
{
    const char *env = getenv("EDGE_FUZZ_ROOT");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *build = strstr(exe, "/build/");
        if (build) {
            *build = '\0';
            snprintf(out, n, "%s", exe);
            return;
        }
    }
    snprintf(out, n, ".");
}

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static void on_wait_guard(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents;
}

/* One loop iteration that may block, but for WAIT_SECONDS at most (timers
 * such as a real edge.sleep need the time to pass). */
static void run_blocking_once(void)
{
    ev_timer_set(&wait_guard, WAIT_SECONDS, 0.);
    ev_timer_start(worker.loop, &wait_guard);
    ev_run(worker.loop, EVRUN_ONCE);
    ev_timer_stop(worker.loop, &wait_guard);
}

/* ---- how an input is sent ----
 *
 * The bytes are sent as they are. How they are cut into writes, how fast the
 * client reads, and what happens after they were served are chosen from a
 * hash of the input, so a given input always runs the same way:
 *   - half the inputs in one write, a quarter in writes of 1..32 bytes (a
 *     request line or a frame header split anywhere), a quarter in writes of
 *     1..1024 bytes; each write is followed by a loop iteration, so the
 *     server reads each piece on its own;
 *   - one in four clients reads slowly (SLOW_READ bytes per iteration, with a
 *     small server send buffer): partial writes, EAGAIN, on_writable;
 *   - one in eight closes right after its last write instead of waiting for
 *     the answers (the client goes away while Lua sleeps: cancellation);
 *   - of the others, one in four has its connection timer fired (the timeout
 *     of whatever state the connection is in), one in four sees a graceful
 *     stop (SIGTERM: GOAWAY, Connection: close, idle connections closed);
 *   - one in eight reloads the script while a request is in flight (SIGHUP:
 *     the request finishes on the old VM, which is then closed);
 *   - half log in JSON, half in the combined format. */
enum ending { END_CLOSE, END_TIMERS, END_STOP };

typedef struct write_plan {
    uint64_t    rng;
    size_t      max_chunk;   /* 0: everything at once */
    int         close_early;
    int         slow_reader;
    int         reload;
    int         json_log;
    enum ending ending;
} write_plan;

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void plan_init(write_plan *wp, const uint8_t *data, size_t size)
{
    uint64_t h = hash_bytes(1469598103934665603ULL, data, size);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    wp->rng = h | 1;
    switch (h & 3) {
    case 0: wp->max_chunk = 32; break;
    case 1: wp->max_chunk = 1024; break;
    default: wp->max_chunk = 0; break;
    }
    wp->close_early = ((h >> 2) & 7) == 0;
    wp->json_log = (h >> 5) & 1;
    switch ((h >> 6) & 3) {
    case 2: wp->ending = END_TIMERS; break;
    case 3: wp->ending = END_STOP; break;
    default: wp->ending = END_CLOSE; break;
    }
    wp->slow_reader = ((h >> 8) & 3) == 0;
    wp->reload = ((h >> 10) & 7) == 0;
    if (self_test) {
        *wp = (write_plan){.rng = 1, .ending = END_CLOSE};
        wp->json_log = 0;
    }
}

static size_t plan_next(write_plan *wp, size_t left)
{
    if (wp->max_chunk == 0) return left;
    wp->rng ^= wp->rng << 13;
    wp->rng ^= wp->rng >> 7;
    wp->rng ^= wp->rng << 17;
    size_t n = 1 + (size_t)(wp->rng % wp->max_chunk);
    return n < left ? n : left;
}

/* ---- the client ---- */

typedef struct client {
    int            fd;
    const uint8_t *bytes;
    size_t         len, off;
    size_t         answered;     /* bytes the server sent */
    write_plan     wp;
    int            reloaded;
} client;

/* Reads (and discards) what the server sent: all of it, or SLOW_READ bytes
 * for a slow client. Returns the byte count. */
static size_t client_read(client *cl)
{
    char buf[16384];
    size_t total = 0;
    for (;;) {
        size_t want = cl->wp.slow_reader ? SLOW_READ - total : sizeof(buf);
        if (want == 0) break;
        ssize_t n = read(cl->fd, buf, want);
        if (n > 0) {
            if (dump_output) {
                ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
                (void)r;
            }
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;   /* EAGAIN, or the server closed its end */
    }
    cl->answered += total;
    return total;
}

/* One step: write the next piece, run one loop iteration, read. Returns 1
 * when anything happened. */
static int client_step(client *cl)
{
    int progress = 0;
    uint64_t seq = worker.request_seq;
    int conns = worker.n_conns;
    if (cl->off < cl->len) {
        ssize_t n = write(cl->fd, cl->bytes + cl->off, plan_next(&cl->wp, cl->len - cl->off));
        if (n > 0) {
            cl->off += (size_t)n;
            progress = 1;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            cl->off = cl->len;   /* the server closed: the rest can never be sent */
        }
    }
    ev_run(worker.loop, EVRUN_NOWAIT);
    if (cl->wp.reload && !cl->reloaded && edge_dispatch_inflight() > 0) {
        edge_workers_reload(&worker, 1);     /* handled on the next iteration */
        cl->reloaded = 1;
        n_reloads++;
    }
    if (client_read(cl) || worker.request_seq != seq || worker.n_conns != conns) progress = 1;
    return progress;
}

/* Steps until everything is written and the server is quiet (no request in
 * flight, nothing new for two iterations) or the connection closed. */
static void client_serve(client *cl)
{
    double deadline = now_seconds() + PHASE_SECONDS;
    int idle = 0;
    for (;;) {
        int progress = client_step(cl);
        if (cl->off == cl->len) {
            if (worker.n_conns == 0) return;
            if (progress) {
                idle = 0;
            } else if (edge_dispatch_inflight() == 0) {
                if (++idle >= 2) return;
            } else {
                run_blocking_once();   /* a request waits for a timer */
            }
        }
        if (now_seconds() > deadline) return;
    }
}

/* END_TIMERS: fires the connection's timer as if it had expired, a few times
 * (a header timeout answers 408 and lingers; the linger timeout closes). */
static void fire_timers(client *cl)
{
    for (int round = 0; round < 3 && worker.conns; round++) {
        int fired = 0;
        for (edge_conn *c = worker.conns; c; c = c->next) {
            if (ev_is_active(&c->timer)) {
                ev_feed_event(worker.loop, &c->timer, EV_TIMER);
                fired = 1;
            }
        }
        if (!fired) return;
        client_serve(cl);
    }
}

/* ---- setup ---- */

static void cleanup(void)
{
    if (!worker_ready) return;
    worker_ready = 0;
    edge_cache *cache = worker.cache;
    edge_worker_free(&worker);       /* the inbox, the Lua VM, the loop */
    if (cache) edge_cache_free(cache);
    edge_h2_global_free();
    edge_access_log_close();
    if (env_flag("EDGE_FUZZ_STATS"))
        fprintf(stderr, "edge-fuzz: %llu inputs, %llu answered, %llu bytes of responses, %llu reloads\n",
                n_inputs, n_answered, bytes_answered, n_reloads);
}

void edge_fuzz_init(void)
{
    signal(SIGPIPE, SIG_IGN);        /* as main.c: a write to a closed peer is an error, not a signal */
    edge_log_worker = 0;
    edge_log_level = EDGE_LOG_ERR;
    const char *level = getenv("EDGE_FUZZ_LOG_LEVEL");
    if (level && edge_log_parse_level(level) >= 0) edge_log_level = edge_log_parse_level(level);
    real_sleep = env_flag("EDGE_FUZZ_REAL_SLEEP");
    edge_script_sleep_scale = real_sleep ? 1.0 : 0.0;
    dump_output = env_flag("EDGE_FUZZ_DUMP");

    const char *script = getenv("EDGE_FUZZ_SCRIPT");
    if (script && *script) {
        snprintf(script_path, sizeof(script_path), "%s", script);
    } else {
        char root[3000];
        find_root(root, sizeof(root));
        snprintf(script_path, sizeof(script_path), "%s/lua/default.lua", root);
    }

    /* Small limits, so inputs of a few KB reach them (414, 431, 413, 503,
     * REFUSED_STREAM); timeouts stay at their defaults (an input takes far
     * less, so none fires by itself and every run is deterministic: the
     * harness fires them, see fire_timers). */
    edge_config_defaults(&cfg);
    cfg.script = script_path;
    cfg.workers = 1;
    cfg.max_request_line = 1024;
    cfg.max_header_size = 4096;
    cfg.max_headers = 32;
    cfg.max_body = 16 * 1024;
    cfg.h2_max_streams = 16;
    cfg.max_requests = 8;            /* more concurrent HTTP/2 streams than this get 503 */
    cfg.cache_size = CACHE_BYTES;

    edge_h2_global_init();
    char err[1024];
    const char *alog = getenv("EDGE_FUZZ_ACCESS_LOG");
    if (alog && *alog) access_log_path = alog;
    if (edge_access_log_open(access_log_path, 0, err, sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge-fuzz: %s\n", err);
        exit(1);
    }
    access_log_json = 0;
    if (edge_worker_init(&worker, 0, &cfg, NULL, edge_cache_new(cfg.cache_size), NULL, NULL, 0, err,
                         sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge-fuzz: cannot start the worker with %s: %s\n", script_path, err);
        exit(1);
    }
    ev_init(&wait_guard, on_wait_guard);
    worker_ready = 1;
    baseline_active = ev_run(worker.loop, EVRUN_NOWAIT);
    atexit(cleanup);

    /* Self-test: one plain GET must be answered through Lua, or the harness
     * is not exercising what it claims to. */
    static const char get[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    unsigned long long before = bytes_answered;
    self_test = 1;
    edge_fuzz_run(NULL, 0, (const uint8_t *)get, sizeof(get) - 1);
    self_test = 0;
    if (bytes_answered == before) {
        fprintf(stderr, "edge-fuzz: the self-test request got no answer through %s\n", script_path);
        exit(1);
    }
    n_inputs = n_answered = bytes_answered = n_reloads = 0;
}

/* ---- one input ---- */

void edge_fuzz_run(const uint8_t *prefix, size_t prefix_len, const uint8_t *data, size_t size)
{
    n_inputs++;
    /* The cache emptied per input, so an input always behaves the same (a GET
     * answered from an entry an earlier input stored would not run Lua).
     * Emptied, not made anew: a new cache (its tables, 300 KiB) cost ten
     * times what most inputs do. */
    edge_cache_purge_prefix(worker.cache, "", 0, 0, 0);

    client cl = {0};
    cl.len = prefix_len + size;
    uint8_t *bytes = malloc(cl.len ? cl.len : 1);
    if (prefix_len) memcpy(bytes, prefix, prefix_len);
    if (size) memcpy(bytes + prefix_len, data, size);
    cl.bytes = bytes;
    plan_init(&cl.wp, data, size);
    if (cl.wp.json_log != access_log_json) {
        char err[256];
        edge_access_log_close();
        if (edge_access_log_open(access_log_path, cl.wp.json_log, err, sizeof(err)) != EDGE_OK) bug(err);
        access_log_json = cl.wp.json_log;
    }

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("edge-fuzz: socketpair");
        abort();
    }
    cl.fd = sv[1];
    if (cl.wp.slow_reader) {
        int small = SLOW_SNDBUF;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    struct sockaddr_in *sin = (struct sockaddr_in *)&peer;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(40000);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    edge_conn_accept(&worker, sv[0], &peer, 1);

    /* Write, serve, read back, until quiet. */
    if (cl.wp.close_early) {
        double deadline = now_seconds() + PHASE_SECONDS;
        while (cl.off < cl.len && worker.n_conns && now_seconds() < deadline) client_step(&cl);
    } else {
        client_serve(&cl);
        if (cl.wp.ending == END_TIMERS) {
            fire_timers(&cl);
        } else if (cl.wp.ending == END_STOP) {
            edge_worker_request_stop(&worker);
            client_serve(&cl);
        }
    }

    /* The client goes away; the connection must close and be reaped. */
    close(cl.fd);
    double deadline = now_seconds() + CLOSE_SECONDS;
    while (worker.n_conns || worker.closed || worker.n_tasks) {   /* tasks: the script's log phase */
        int before = worker.n_conns;
        ev_run(worker.loop, EVRUN_NOWAIT);
        if (worker.n_conns == 0 && worker.closed == NULL && worker.n_tasks == 0) break;
        if (now_seconds() > deadline) bug("the connection stayed open after the client closed");
        if (worker.n_conns == before) run_blocking_once();
    }
    free(bytes);
    if (cl.answered) {
        n_answered++;
        bytes_answered += cl.answered;
    }

    /* Undo a graceful stop: the worker serves the next input. */
    if (worker.stopping) {
        worker.stopping = 0;
        ev_timer_stop(worker.loop, &worker.drain_timer);
    }
    /* The worker's access log timer writes buffered lines within a second:
     * do it now, so the next input starts from the same state. */
    if (ev_is_active(&worker.access_timer)) ev_timer_stop(worker.loop, &worker.access_timer);
    edge_access_log_flush(&worker);

    /* A full collection, so Lua's garbage from this input (coroutines, req
     * userdata and their finalizers) goes now: every input then frees what
     * it allocated, which keeps libFuzzer's per-input leak check meaningful
     * (and cheap), and the next input starts from the same heap. */
    lua_gc(worker.script->L, LUA_GCCOLLECT);

    /* Nothing may outlive the connection. */
    if (worker.conns || worker.closed || worker.n_conns) bug("a connection outlived its input");
    if (edge_dispatch_inflight() != 0) bug("a request still holds a slot of the in-flight limit");
    if (worker.script->refs != 0) bug("a request still holds Lua state");
    if (worker.script->current != NULL) bug("script.current left set");
    if (lua_gettop(worker.script->L) != 0) bug("values left on the Lua main stack");
    if (worker.inbox != NULL) bug("a cross-worker message is still queued");
    for (int p = 0; p < EDGE_PROTO_COUNT; p++)
        if (atomic_load(&worker.counters.open_conns[p]) != 0) bug("the open-connections gauge is not back to 0");
    int active = ev_run(worker.loop, EVRUN_NOWAIT);
    if (active != baseline_active) {
        fprintf(stderr, "edge-fuzz: %d active watchers, %d expected\n", active, baseline_active);
        bug("a watcher (timer or I/O) outlived the connection");
    }
}
