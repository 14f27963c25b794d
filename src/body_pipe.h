/* A body that arrives over time (edge.proxy): one producer, one consumer,
 * and optional taps that see every byte (the cache writer). A response body:
 * the upstream response produces, the protocol writing to the client
 * consumes. A request body past --body-buffer: the client's protocol (h1.c,
 * h2.c) produces, the upstream connection sending it to the origin consumes
 * (the request owns the pipe until edge.proxy takes it; see request.h).
 *
 * Bounded both ways: the producer stops reading its source while more than
 * high bytes wait, and is asked to go on (resume) once the consumer took
 * them down to a quarter of that. A slow client therefore slows the origin
 * read; memory per response stays near high plus one read.
 *
 * Ownership: the producer creates the pipe and hands it to the response
 * (resp->pipe); from then on the consumer owns it and frees it with
 * edge_pipe_close(), exactly once, when the response is done or the client
 * left. Before it, the producer calls edge_pipe_end() exactly once (body
 * complete, or failed) and forgets the pipe. A close before the end cancels
 * the producer (its cancel hook runs, then no producer call may follow). */
#ifndef EDGE_BODY_PIPE_H
#define EDGE_BODY_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define EDGE_PIPE_HIGH (256 * 1024)   /* the default bound (--proxy-buffer) */

typedef struct edge_pipe edge_pipe;

/* resume must not produce synchronously (re-arm a watcher): it runs inside
 * the consumer's edge_pipe_consume. */
typedef struct edge_pipe_producer {
    void (*resume)(void *ud);   /* the consumer took bytes: produce more */
    void (*cancel)(void *ud);   /* the consumer is gone: stop and free; never called after end */
    void *ud;
} edge_pipe_producer;

typedef struct edge_pipe_consumer {
    void (*ready)(void *ud);    /* new bytes, or the end: read them */
    void *ud;
} edge_pipe_consumer;

/* Sees every body byte and the end; owned by the pipe once added. */
typedef struct edge_pipe_tap {
    void (*data)(struct edge_pipe_tap *t, const char *p, size_t n);
    void (*end)(struct edge_pipe_tap *t, int ok);    /* ok = 0: failed or cancelled; then freed */
    struct edge_pipe_tap *next;
    unsigned done : 1;        /* wants no more bytes (a cache writer that gave up) */
} edge_pipe_tap;

struct edge_pipe {
    edge_buf  buf;                /* produced, not yet read: [off, buf.len) */
    size_t    off;
    int64_t   length;             /* the body's length when known (Content-Length), else -1 */
    size_t    high;               /* the producer pauses with this many bytes unread */
    uint64_t  produced;           /* body bytes written so far */
    uint64_t  consumed;           /* body bytes the consumer took (a request body: none taken,
                                   * the exchange may still be tried again) */
    edge_pipe_producer producer;
    edge_pipe_consumer consumer;
    edge_pipe_tap *taps;
    /* WebSocket: the origin answered 101; its connection waits here for the
     * client's protocol to take it (tunnel.c), or is freed with the pipe. */
    void     *upgrade;            /* an edge_upconn (opaque here) */
    void    (*upgrade_free)(void *upgrade);
    double    upgrade_idle;       /* the tunnel's idle timeout (opts.ws_idle_timeout); 0: default */
    unsigned  no_body : 1;        /* the answer to a HEAD: length is declared, no byte follows */
    unsigned  get_for_head : 1;   /* a HEAD sent as GET (to fill the cache): the client gets no body */
    unsigned  ended : 1;          /* the producer called edge_pipe_end */
    unsigned  ok : 1;             /* ... with the body complete */
    unsigned  waiting : 1;        /* the producer stopped for back-pressure: resume it */
    struct edge_pipe *loose_next;   /* in its request's list of pipes Lua holds (edge_pipe_lend) */
    struct edge_pipe **loose_pprev;
    struct edge_pipe **holder;      /* the Lua value's slot, emptied when the request closes it */
    unsigned  in_producer : 1;    /* inside edge_pipe_write/end: a close there is deferred */
    unsigned  closed : 1;         /* the consumer closed it while in_producer */
};

/* high: the bound (0: EDGE_PIPE_HIGH). */
edge_pipe *edge_pipe_new(int64_t length, size_t high, const edge_pipe_producer *producer);

/* ---- the producer ---- */

/* What edge_pipe_write asks of the producer. */
enum { EDGE_PIPE_GO_ON, EDGE_PIPE_PAUSE, EDGE_PIPE_GONE };

/* Appends body bytes, hands them to the taps and tells the consumer.
 * EDGE_PIPE_PAUSE: stop reading the source until resume runs.
 * EDGE_PIPE_GONE: the consumer closed the pipe meanwhile (the client left):
 * the pipe is freed, stop and clean up; cancel is not called. */
int edge_pipe_write(edge_pipe *p, const char *data, size_t n);
/* The body is complete (ok = 1) or failed (0). The producer forgets p. */
void edge_pipe_end(edge_pipe *p, int ok);

/* ---- the consumer ---- */

void edge_pipe_set_consumer(edge_pipe *p, const edge_pipe_consumer *consumer);
/* Bytes ready to read. */
static inline size_t edge_pipe_readable(const edge_pipe *p)
{
    return p->buf.len - p->off;
}
static inline const char *edge_pipe_data(const edge_pipe *p)
{
    return p->buf.base + p->off;
}
/* Marks n readable bytes as taken; resumes the producer below high / 4. */
void edge_pipe_consume(edge_pipe *p, size_t n);
/* All bytes read and the producer ended well / the producer failed. */
static inline int edge_pipe_done(const edge_pipe *p)
{
    return p->ended && p->ok && edge_pipe_readable(p) == 0;
}
static inline int edge_pipe_failed(const edge_pipe *p)
{
    return p->ended && !p->ok;
}
/* The consumer is finished with p (response done, or the client left):
 * cancels a producer still running, ends the taps, frees. */
void edge_pipe_close(edge_pipe *p);

/* Whether a tap still wants the body's bytes (one that gave up is done). */
int edge_pipe_wanted(const edge_pipe *p);

/* Takes the pipe over and reads it to its end for nothing but its taps (the
 * cache writer of a HEAD sent as GET), then closes it. */
void edge_pipe_drain(edge_pipe *p);

/* ---- pipes lent to Lua (res.body of edge.proxy) ----
 * A script may drop the response it got (return another one): its pipe then
 * waits for Lua's garbage collector, and the origin connection with it.
 * Lent pipes are listed on their request, which closes the rest when it
 * finishes. */

/* Lists p on *list; *holder is the Lua value's pointer to p. */
void edge_pipe_lend(edge_pipe *p, edge_pipe **list, edge_pipe **holder);
/* Takes p off its list (it was returned as a response, or collected). */
void edge_pipe_unlend(edge_pipe *p);
/* Closes every pipe still on the list and empties their holders. */
void edge_pipe_close_lent(edge_pipe **list);

/* ---- taps ---- */

/* The tap sees the bytes produced so far at once (or ends at once, not ok,
 * when some were read already), then every write, then the end. */
void edge_pipe_add_tap(edge_pipe *p, edge_pipe_tap *t);

#endif
