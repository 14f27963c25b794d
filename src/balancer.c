/* The upstream definition's defaults, the retry rule, and the balancer:
 * which server gets each attempt of a request (see balancer.h). */
#include "balancer.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the definition ---- */

static const char *const balance_names[] = {"round_robin", "least_conn", "hash"};

static const struct { const char *name; unsigned bit; } failure_names[] = {
    {"connect", EDGE_UPSTREAM_FAIL_CONNECT},
    {"error", EDGE_UPSTREAM_FAIL_ERROR},
    {"timeout", EDGE_UPSTREAM_FAIL_TIMEOUT},
    {"invalid_header", EDGE_UPSTREAM_FAIL_INVALID_HEADER},
    {"500", EDGE_UPSTREAM_FAIL_HTTP_500},
    {"502", EDGE_UPSTREAM_FAIL_HTTP_502},
    {"503", EDGE_UPSTREAM_FAIL_HTTP_503},
    {"504", EDGE_UPSTREAM_FAIL_HTTP_504},
    {"429", EDGE_UPSTREAM_FAIL_HTTP_429},
    {"non_idempotent", EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT},
};

const char *edge_upstream_balance_name(edge_balance balance)
{
    return (size_t)balance < EDGE_ARRAY_LEN(balance_names) ? balance_names[balance] : "?";
}

int edge_upstream_balance_parse(const char *name, edge_balance *out)
{
    for (size_t i = 0; i < EDGE_ARRAY_LEN(balance_names); i++) {
        if (strcmp(balance_names[i], name) != 0) continue;
        *out = (edge_balance)i;
        return 0;
    }
    return -1;
}

const char *edge_upstream_failure_name(unsigned bit)
{
    for (size_t i = 0; i < EDGE_ARRAY_LEN(failure_names); i++)
        if (failure_names[i].bit == bit) return failure_names[i].name;
    return NULL;
}

unsigned edge_upstream_failure_parse(const char *name)
{
    for (size_t i = 0; i < EDGE_ARRAY_LEN(failure_names); i++)
        if (strcmp(failure_names[i].name, name) == 0) return failure_names[i].bit;
    return 0;
}

void edge_upstream_def_init(edge_upstream_def *def)
{
    memset(def, 0, sizeof(*def));
    def->balance = EDGE_BALANCE_ROUND_ROBIN;
    def->keepalive.size = 64;
    def->keepalive.idle_timeout = 60;
    def->keepalive.max_requests = 1000;
    def->timeout.connect = 5;
    def->timeout.send = 60;
    def->timeout.read = 60;
    def->retries.tries = 2;
    def->retries.on = EDGE_UPSTREAM_FAIL_CONNECT | EDGE_UPSTREAM_FAIL_ERROR | EDGE_UPSTREAM_FAIL_TIMEOUT;
    def->passive.max_fails = 1;
    def->passive.fail_timeout = 10;
    def->active.path = edge_strdup("/");
    def->active.interval = 2;
    def->active.timeout = 1;
    def->active.rise = 2;
    def->active.fall = 3;
    def->tls.verify = 1;
}

void edge_upstream_def_free(edge_upstream_def *def)
{
    for (size_t i = 0; i < def->n_servers; i++) free(def->servers[i].host);
    free(def->servers);
    free(def->name);
    free(def->active.path);
    free(def->tls.sni);
    free(def->tls.ca_file);
    memset(def, 0, sizeof(*def));
}

int edge_upstream_may_retry(const edge_upstream_def *def, unsigned tries_done, unsigned failure,
                            int idempotent)
{
    unsigned cap = def->retries.tries;
    if (cap > EDGE_UPSTREAM_MAX_TRIES) cap = EDGE_UPSTREAM_MAX_TRIES;
    if (tries_done >= cap) return 0;
    unsigned on = def->retries.on;
    if ((on & failure & ~(unsigned)EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT) == 0) return 0;
    /* A connect failure sent nothing: even a POST may go elsewhere. */
    if (!idempotent && failure != EDGE_UPSTREAM_FAIL_CONNECT && !(on & EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT))
        return 0;
    return 1;
}

int edge_upstream_counts_as_failure(const edge_upstream_def *def, unsigned failure)
{
    return (def->retries.on & failure & ~(unsigned)EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT) != 0;
}

/* ---- the balancer's state ---- */

typedef struct peer {
    int      weight;            /* as defined */
    int      effective_weight;  /* weight, cut by failures, regained by one per pick */
    int      current_weight;    /* smooth round robin's running score */
    unsigned active;            /* attempts picked and not done */
    unsigned fails;             /* failures since window_start */
    double   window_start;      /* when the fail_timeout window of fails began */
    double   down_until;        /* 0: up; else out until then, then one trial at a time */
    unsigned backup : 1;
    unsigned trial : 1;         /* an attempt to this down server is in flight */
    unsigned checked_down : 1;  /* taken out by active health checks (health_check.c) */
} peer;

typedef struct ring_point {
    uint32_t hash;
    uint32_t server;
} ring_point;

struct edge_balancer {
    edge_balance balance;
    unsigned     max_fails;
    double       fail_timeout;
    size_t       n;
    peer        *peers;
    uint64_t     primaries, backups;   /* masks of server indexes */
    ring_point  *ring;                 /* hash only: sorted by hash, no duplicate hash */
    size_t       n_points;
};

static uint64_t bit(size_t i)
{
    return (uint64_t)1 << i;
}

static int has(uint64_t mask, size_t i)
{
    return (mask >> i) & 1;
}

/* ---- CRC-32 (IEEE, reflected), the ring's hash, four bits at a time ---- */

static const uint32_t crc_nibble[16] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
    0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

/* Feeds n bytes to a running CRC register (start: 0xffffffff; result: ~reg). */
static uint32_t crc_update(uint32_t reg, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        reg ^= p[i];
        reg = (reg >> 4) ^ crc_nibble[reg & 15];
        reg = (reg >> 4) ^ crc_nibble[reg & 15];
    }
    return reg;
}

static uint32_t crc32_of(const void *data, size_t n)
{
    return ~crc_update(0xffffffffu, data, n);
}

/* ---- the hash ring ---- */

static int cmp_point(const void *a, const void *b)
{
    const ring_point *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->server < y->server ? -1 : x->server > y->server;
}

/* Places weight * 160 points for server: a chain of CRCs seeded by
 * "host\0port", so a server's points depend on its name alone, never on its
 * place in the list or on the other servers. */
static size_t add_points(ring_point *out, const edge_upstream_server *s, uint32_t server)
{
    char port[8];
    int plen = snprintf(port, sizeof(port), "%u", (unsigned)s->port);
    uint32_t base = crc_update(0xffffffffu, s->host, strlen(s->host));
    base = crc_update(base, "", 1);
    base = crc_update(base, port, (size_t)plen);
    size_t n = (size_t)s->weight * EDGE_UPSTREAM_RING_POINTS;
    uint32_t prev = 0;
    for (size_t j = 0; j < n; j++) {
        unsigned char le[4] = {prev & 0xff, (prev >> 8) & 0xff, (prev >> 16) & 0xff, prev >> 24};
        prev = ~crc_update(base, le, sizeof(le));
        out[j] = (ring_point){.hash = prev, .server = server};
    }
    return n;
}

/* Sorts the points and drops all but the first of those with equal hashes. */
static void build_ring(edge_balancer *b, const edge_upstream_def *def)
{
    size_t total = 0;
    for (size_t i = 0; i < def->n_servers; i++) total += (size_t)def->servers[i].weight * EDGE_UPSTREAM_RING_POINTS;
    b->ring = edge_malloc(total * sizeof(*b->ring));
    size_t n = 0;
    for (size_t i = 0; i < def->n_servers; i++) n += add_points(b->ring + n, &def->servers[i], (uint32_t)i);
    qsort(b->ring, n, sizeof(*b->ring), cmp_point);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (kept == 0 || b->ring[kept - 1].hash != b->ring[i].hash) b->ring[kept++] = b->ring[i];
    b->n_points = kept;
}

/* ---- life ---- */

edge_balancer *edge_balancer_new(const edge_upstream_def *def)
{
    if (def->n_servers == 0 || def->n_servers > EDGE_UPSTREAM_MAX_SERVERS) return NULL;
    for (size_t i = 0; i < def->n_servers; i++) {
        const edge_upstream_server *s = &def->servers[i];
        if (s->weight < 1 || s->weight > EDGE_UPSTREAM_MAX_WEIGHT || s->host == NULL) return NULL;
    }
    edge_balancer *b = edge_calloc(1, sizeof(*b));
    b->balance = def->balance;
    b->max_fails = def->passive.max_fails;
    b->fail_timeout = def->passive.fail_timeout;
    b->n = def->n_servers;
    b->peers = edge_calloc(b->n, sizeof(*b->peers));
    for (size_t i = 0; i < b->n; i++) {
        peer *p = &b->peers[i];
        p->weight = p->effective_weight = def->servers[i].weight;
        /* hash has no backups (define refuses them): every server is on the ring */
        p->backup = def->servers[i].backup && def->balance != EDGE_BALANCE_HASH;
        if (p->backup) b->backups |= bit(i);
        else b->primaries |= bit(i);
    }
    if (b->balance == EDGE_BALANCE_HASH) build_ring(b, def);
    return b;
}

void edge_balancer_free(edge_balancer *b)
{
    if (b == NULL) return;
    free(b->ring);
    free(b->peers);
    free(b);
}

size_t edge_balancer_size(const edge_balancer *b)
{
    return b->n;
}

/* ---- choosing among candidates (a non-empty mask) ---- */

/* nginx's smooth weighted round robin: every candidate gains its effective
 * weight, the highest score wins and pays the total back. */
static int swrr(edge_balancer *b, uint64_t cand)
{
    int best = -1, total = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!has(cand, i)) continue;
        peer *p = &b->peers[i];
        p->current_weight += p->effective_weight;
        total += p->effective_weight;
        if (p->effective_weight < p->weight) p->effective_weight++;
        if (best < 0 || p->current_weight > b->peers[best].current_weight) best = (int)i;
    }
    b->peers[best].current_weight -= total;
    return best;
}

/* Fewest active attempts per unit of weight (a/wa < b/wb as a*wb < b*wa, no
 * division); a tie goes to round robin among the tied. */
static int least_conn(edge_balancer *b, uint64_t cand)
{
    int best = -1;
    uint64_t ties = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!has(cand, i)) continue;
        const peer *p = &b->peers[i];
        if (best < 0) {
            best = (int)i;
            ties = bit(i);
            continue;
        }
        const peer *q = &b->peers[best];
        uint64_t mine = (uint64_t)p->active * (uint64_t)q->weight;
        uint64_t theirs = (uint64_t)q->active * (uint64_t)p->weight;
        if (mine < theirs) {
            best = (int)i;
            ties = bit(i);
        } else if (mine == theirs) {
            ties |= bit(i);
        }
    }
    return (ties & (ties - 1)) == 0 ? best : swrr(b, ties);
}

/* The first ring point at or after the key's hash (wrapping) whose server is
 * a candidate: the key's own server, or the next distinct one on the ring. */
static int ring_pick(edge_balancer *b, const char *key, size_t klen, uint64_t cand)
{
    uint32_t h = crc32_of(key, klen);
    size_t lo = 0, hi = b->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->ring[mid].hash < h) lo = mid + 1;
        else hi = mid;
    }
    for (size_t k = 0; k < b->n_points; k++) {
        const ring_point *pt = &b->ring[(lo + k) % b->n_points];
        if (has(cand, pt->server)) return (int)pt->server;
    }
    return swrr(b, cand);   /* not reached: every server has points */
}

static int choose(edge_balancer *b, const char *key, size_t klen, uint64_t cand)
{
    if (b->balance == EDGE_BALANCE_HASH && key != NULL) return ring_pick(b, key, klen, cand);
    if (b->balance == EDGE_BALANCE_LEAST_CONN) return least_conn(b, cand);
    return swrr(b, cand);
}

/* ---- health ---- */

/* Passing its active checks (if any), and passively up or down with
 * fail_timeout over (due a trial). */
static uint64_t up_mask(const edge_balancer *b, double now)
{
    uint64_t m = 0;
    for (size_t i = 0; i < b->n; i++) {
        const peer *p = &b->peers[i];
        if (p->checked_down) continue;
        if (p->down_until == 0 || now >= p->down_until) m |= bit(i);
    }
    return m;
}

/* The primaries in set, or if none, its backups. */
static uint64_t prefer_primaries(const edge_balancer *b, uint64_t set)
{
    return (set & b->primaries) ? set & b->primaries : set & b->backups;
}

/* Records the pick. A down server picked becomes a trial; one whose
 * fail_timeout is over gets no other trial until fail_timeout passes again. */
static void take(edge_balancer *b, int i, uint64_t *tried, double now)
{
    peer *p = &b->peers[i];
    *tried |= bit((size_t)i);
    p->active++;
    if (p->down_until == 0) return;
    p->trial = 1;
    if (now >= p->down_until) p->down_until = now + b->fail_timeout;
}

int edge_balancer_pick(edge_balancer *b, const char *key, size_t klen, uint64_t *tried, double now,
                       int *all_down)
{
    uint64_t all = b->primaries | b->backups;
    uint64_t untried = all & ~*tried;
    int down = 0, i = -1;
    if (untried != 0) {
        uint64_t cand = prefer_primaries(b, untried & up_mask(b, now));
        if (cand == 0) {            /* every server left is down: nginx tries them all once */
            down = 1;
            cand = prefer_primaries(b, untried);
        }
        i = choose(b, key, klen, cand);
        take(b, i, tried, now);
    }
    if (all_down) *all_down = down;
    return i;
}

static void count_failure(edge_balancer *b, peer *p, double now)
{
    if (b->max_fails == 0) return;
    if (p->fails == 0 || now - p->window_start > b->fail_timeout) {
        p->fails = 0;
        p->window_start = now;
    }
    p->fails++;
    p->effective_weight -= p->weight / (int)b->max_fails;
    if (p->effective_weight < 0) p->effective_weight = 0;
    /* a failure while down (a trial) keeps it down for another fail_timeout */
    if (p->fails >= b->max_fails || p->down_until != 0) p->down_until = now + b->fail_timeout;
}

void edge_balancer_done(edge_balancer *b, int server, edge_peer_outcome outcome, double now)
{
    if (server < 0 || (size_t)server >= b->n) return;
    peer *p = &b->peers[server];
    if (p->active > 0) p->active--;
    if (outcome == EDGE_PEER_FAILED) {
        count_failure(b, p, now);
    } else if (outcome == EDGE_PEER_OK && p->trial) {
        p->down_until = 0;
        p->fails = 0;
    }
    p->trial = 0;
}

unsigned edge_balancer_active(const edge_balancer *b, int server)
{
    return server >= 0 && (size_t)server < b->n ? b->peers[server].active : 0;
}

int edge_balancer_is_up(const edge_balancer *b, int server)
{
    return server >= 0 && (size_t)server < b->n && b->peers[server].down_until == 0 &&
           !b->peers[server].checked_down;
}

void edge_balancer_set_checked(edge_balancer *b, int server, int up)
{
    if (server >= 0 && (size_t)server < b->n) b->peers[server].checked_down = !up;
}

int edge_balancer_is_checked_up(const edge_balancer *b, int server)
{
    return server >= 0 && (size_t)server < b->n && !b->peers[server].checked_down;
}
