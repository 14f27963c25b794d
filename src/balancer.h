/* Named upstreams: their definition (what edge.upstream.define validated)
 * and the choice of a server for each attempt of a request.
 *
 * Pure C: no I/O, no Lua, no clock. Times come in as arguments, so every
 * behaviour is testable with a made-up "now". Hosts are stored as written
 * (resolution is resolver.h's job). A balancer is per worker: nothing here
 * is shared between threads, nothing takes a lock.
 *
 * The choice follows nginx's upstream module:
 *   round_robin  smooth weighted round robin (weights 5,1,1 give a a b a c a a);
 *   least_conn   fewest active requests relative to weight, ties by round robin;
 *   hash         consistent hashing on a ring of 160 points per weight unit,
 *                so adding or removing a server moves only its share of keys.
 * Passive health: max_fails failures within fail_timeout take a server out for
 * fail_timeout; then one trial request may go to it, and its success puts the
 * server back. Active health (edge_balancer_set_checked) takes a server out
 * until its checks pass again. Backup servers get requests only when no
 * primary can. */
#ifndef EDGE_BALANCER_H
#define EDGE_BALANCER_H

#include <stddef.h>
#include <stdint.h>

enum {
    EDGE_UPSTREAM_MAX_SERVERS = 64,    /* a request's tried set is one uint64_t */
    EDGE_UPSTREAM_MAX_WEIGHT  = 100,   /* bounds the hash ring: 160 points per unit */
    EDGE_UPSTREAM_MAX_TRIES   = 16,
    EDGE_UPSTREAM_RING_POINTS = 160    /* hash ring points per weight unit (ketama, nginx) */
};

typedef enum edge_balance {
    EDGE_BALANCE_ROUND_ROBIN = 0,
    EDGE_BALANCE_LEAST_CONN,
    EDGE_BALANCE_HASH
} edge_balance;

/* Why an attempt failed, as bits: retries.on is a set of them. */
enum edge_upstream_failure {
    EDGE_UPSTREAM_FAIL_CONNECT        = 1u << 0,  /* no connection: refused, unreachable, TLS handshake */
    EDGE_UPSTREAM_FAIL_ERROR          = 1u << 1,  /* send or read failed before the response header */
    EDGE_UPSTREAM_FAIL_TIMEOUT        = 1u << 2,  /* connect, send or read timeout before the header */
    EDGE_UPSTREAM_FAIL_INVALID_HEADER = 1u << 3,  /* a malformed or empty response header */
    EDGE_UPSTREAM_FAIL_HTTP_500       = 1u << 4,
    EDGE_UPSTREAM_FAIL_HTTP_502       = 1u << 5,
    EDGE_UPSTREAM_FAIL_HTTP_503       = 1u << 6,
    EDGE_UPSTREAM_FAIL_HTTP_504       = 1u << 7,
    EDGE_UPSTREAM_FAIL_HTTP_429       = 1u << 8,
    /* Not a failure: in retries.on, lets non-idempotent requests be retried too. */
    EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT = 1u << 15
};

typedef struct edge_upstream_server {
    char    *host;        /* a name or an address literal (IPv6 without brackets); owned */
    uint16_t port;
    uint16_t weight;      /* 1..EDGE_UPSTREAM_MAX_WEIGHT */
    unsigned backup : 1;  /* only when no primary server can take the request */
} edge_upstream_server;

/* One upstream's definition, every option normalised (defaults filled in).
 * Owns its strings and its servers array. */
typedef struct edge_upstream_def {
    char *name;
    edge_upstream_server *servers;
    size_t n_servers;     /* 1..EDGE_UPSTREAM_MAX_SERVERS */
    edge_balance balance;
    struct { unsigned size; double idle_timeout; unsigned max_requests; } keepalive;
    struct { double connect, send, read; } timeout;              /* seconds */
    struct { unsigned tries; unsigned on; } retries;             /* tries 1..MAX_TRIES; on: failure bits */
    struct { unsigned max_fails; double fail_timeout; } passive; /* max_fails 0: passive health off */
    struct {
        int enabled;
        char *path;
        double interval, timeout;
        unsigned rise, fall;
    } active;                          /* health_check.c runs them (enabled: a table was given) */
    struct { int enabled, verify; char *sni, *ca_file; } tls;    /* sni, ca_file may be NULL */
    double dns_valid;                  /* seconds to keep an answer; 0: the answer's TTL */
} edge_upstream_def;

/* The option names of the model, as edge.upstream.define spells them. */
const char *edge_upstream_balance_name(edge_balance balance);
/* Sets *out from "round_robin", "least_conn" or "hash": 0, or -1 if unknown. */
int edge_upstream_balance_parse(const char *name, edge_balance *out);
/* "connect", "error", "timeout", "invalid_header", "500", "502", "503",
 * "504", "429", "non_idempotent" for one bit of retries.on; NULL for others. */
const char *edge_upstream_failure_name(unsigned bit);
/* The bit for such a name, or 0 if unknown. */
unsigned edge_upstream_failure_parse(const char *name);

/* Zero-fills def, then sets every default (nginx's where nginx has one):
 * round_robin; keepalive 64 / 60 s / 1000 requests; timeouts connect 5 s,
 * send 60 s, read 60 s; tries 2 on connect, error, timeout; passive
 * max_fails 1 / fail_timeout 10 s; no active check; no TLS (verify on when
 * it is enabled). The active check's defaults apply once enabled: path "/",
 * interval 2 s, timeout 1 s, rise 2, fall 3. */
void edge_upstream_def_init(edge_upstream_def *def);
/* Frees what def owns (not def itself) and zero-fills it. */
void edge_upstream_def_free(edge_upstream_def *def);

/* May a request whose tries_done attempts (1 or more) have failed, the last
 * with failure (one edge_upstream_failure bit), be tried again? Only while
 * tries_done < retries.tries, only for a failure listed in retries.on, and
 * for a non-idempotent request only after a connect failure (nothing was
 * sent) unless retries.on has EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT. */
int edge_upstream_may_retry(const edge_upstream_def *def, unsigned tries_done, unsigned failure,
                            int idempotent);
/* Does failure count against the server's passive health? As in nginx: the
 * failures listed in retries.on do. */
int edge_upstream_counts_as_failure(const edge_upstream_def *def, unsigned failure);

typedef struct edge_balancer edge_balancer;

/* How an attempt that edge_balancer_pick chose ended. */
typedef enum edge_peer_outcome {
    EDGE_PEER_FAILED  = 0,   /* counts against passive health */
    EDGE_PEER_OK      = 1,   /* a trial's success puts a down server back */
    EDGE_PEER_ABORTED = 2    /* neither: the caller gave up (client gone) */
} edge_peer_outcome;

/* A balancer for def's servers (copies what it needs: def may go). NULL when
 * def has no server or more than EDGE_UPSTREAM_MAX_SERVERS. */
edge_balancer *edge_balancer_new(const edge_upstream_def *def);
void edge_balancer_free(edge_balancer *b);
size_t edge_balancer_size(const edge_balancer *b);

/* Chooses the server for one attempt: its index in def->servers, or -1 when
 * every server is in *tried. Never returns a server in *tried; adds the one
 * it returns, and counts it active until edge_balancer_done. For "hash", key
 * (klen bytes) places the request on the ring; a NULL key falls back to round
 * robin. When no server that is not tried is up, it considers them all up for
 * this pick (nginx: try them all once) and sets *all_down (may be NULL) to 1,
 * else to 0, so the caller can log and count it. */
int edge_balancer_pick(edge_balancer *b, const char *key, size_t klen, uint64_t *tried, double now,
                       int *all_down);
/* Ends the attempt edge_balancer_pick chose: exactly one call per pick. */
void edge_balancer_done(edge_balancer *b, int server, edge_peer_outcome outcome, double now);

/* Attempts on server now in flight (picked, not done). */
unsigned edge_balancer_active(const edge_balancer *b, int server);
/* 0 from the moment passive health takes server out until a trial request
 * to it succeeds, and while active checks have it down; 1 otherwise. */
int edge_balancer_is_up(const edge_balancer *b, int server);

/* Active health (health_check.c decides rise and fall): up 0 takes server
 * out, up 1 puts it back. A server out by its checks is never picked while
 * another server that is not tried is up; when none is, the try-them-all
 * rule of edge_balancer_pick applies to it as to a passively down one. The
 * passive state is kept apart: both must be up for a server to be up. */
void edge_balancer_set_checked(edge_balancer *b, int server, int up);
/* 0 while active checks have server down; 1 otherwise (also with no checks). */
int edge_balancer_is_checked_up(const edge_balancer *b, int server);

#endif
