/* The body pipe between an upstream response and a client (body_pipe.h). */
#include "body_pipe.h"
#include "common.h"

#include <stdlib.h>

edge_pipe *edge_pipe_new(int64_t length, size_t high, const edge_pipe_producer *producer)
{
    edge_pipe *p = edge_calloc(1, sizeof(*p));
    p->length = length;
    p->high = high ? high : EDGE_PIPE_HIGH;
    p->producer = *producer;
    return p;
}

void edge_pipe_set_consumer(edge_pipe *p, const edge_pipe_consumer *consumer)
{
    p->consumer = *consumer;
}

void edge_pipe_add_tap(edge_pipe *p, edge_pipe_tap *t)
{
    /* The bytes produced so far, if all are still here (none read yet). */
    int whole = p->off == 0 && p->produced == p->buf.len;
    if (whole && p->buf.len) t->data(t, p->buf.base, p->buf.len);
    if (!whole || p->ended) {
        t->end(t, whole && p->ok);
        return;
    }
    t->next = p->taps;
    p->taps = t;
}

static void end_taps(edge_pipe *p, int ok)
{
    while (p->taps) {
        edge_pipe_tap *t = p->taps;
        p->taps = t->next;
        t->end(t, ok);
    }
}

static void destroy(edge_pipe *p)
{
    end_taps(p, 0);         /* cancelled before the end */
    if (p->upgrade) p->upgrade_free(p->upgrade);   /* a 101 nobody tunnelled */
    edge_buf_free(&p->buf);
    free(p);
}

/* Tells the consumer; returns 1 when it closed the pipe meanwhile (now freed). */
static int notify(edge_pipe *p)
{
    if (p->consumer.ready == NULL) return 0;
    p->in_producer = 1;
    p->consumer.ready(p->consumer.ud);
    p->in_producer = 0;
    if (!p->closed) return 0;
    destroy(p);
    return 1;
}

int edge_pipe_write(edge_pipe *p, const char *data, size_t n)
{
    if (n == 0) return EDGE_PIPE_GO_ON;
    /* Reclaim the consumed front before growing (no unbounded growth). */
    if (p->off > 0 && p->off == p->buf.len) {
        p->buf.len = 0;
        p->off = 0;
    } else if (p->off >= p->high / 4) {
        edge_buf_consume(&p->buf, p->off);
        p->off = 0;
    }
    edge_buf_append(&p->buf, data, n);
    p->produced += n;
    for (edge_pipe_tap *t = p->taps; t; t = t->next) t->data(t, data, n);
    if (notify(p)) return EDGE_PIPE_GONE;
    if (edge_pipe_readable(p) < p->high) return EDGE_PIPE_GO_ON;
    p->waiting = 1;
    return EDGE_PIPE_PAUSE;
}

void edge_pipe_end(edge_pipe *p, int ok)
{
    p->ended = 1;
    p->ok = ok ? 1 : 0;
    /* A body shorter than its Content-Length is not complete. */
    if (p->ok && !p->no_body && p->length >= 0 && p->produced != (uint64_t)p->length) p->ok = 0;
    p->waiting = 0;
    end_taps(p, p->ok);     /* the cache writer publishes now, not when a slow client is done */
    notify(p);
}

void edge_pipe_consume(edge_pipe *p, size_t n)
{
    p->off += n;
    p->consumed += n;
    if (p->off == p->buf.len) {
        p->buf.len = 0;
        p->off = 0;
    }
    if (!p->waiting || p->ended || edge_pipe_readable(p) > p->high / 4) return;
    p->waiting = 0;
    p->producer.resume(p->producer.ud);
}

void edge_pipe_close(edge_pipe *p)
{
    if (p->in_producer) {       /* inside the producer's write/end: it frees on return */
        p->closed = 1;
        return;
    }
    if (!p->ended) {
        p->ended = 1;
        p->ok = 0;
        p->producer.cancel(p->producer.ud);
    }
    destroy(p);
}

/* ---- draining ---- */

/* Whether a tap still wants the body. */
int edge_pipe_wanted(const edge_pipe *p)
{
    for (const edge_pipe_tap *t = p->taps; t; t = t->next)
        if (!t->done) return 1;
    return 0;
}

static void drain_ready(void *ud)
{
    edge_pipe *p = ud;
    edge_pipe_consume(p, edge_pipe_readable(p));
    if (p->ended || !edge_pipe_wanted(p)) edge_pipe_close(p);   /* nobody wants the rest: stop the origin */
}

void edge_pipe_drain(edge_pipe *p)
{
    edge_pipe_consumer consumer = {.ready = drain_ready, .ud = p};
    edge_pipe_set_consumer(p, &consumer);
    drain_ready(p);
}

/* ---- lent to Lua ---- */

void edge_pipe_lend(edge_pipe *p, edge_pipe **list, edge_pipe **holder)
{
    p->holder = holder;
    p->loose_next = *list;
    if (*list) (*list)->loose_pprev = &p->loose_next;
    p->loose_pprev = list;
    *list = p;
}

void edge_pipe_unlend(edge_pipe *p)
{
    if (p->loose_pprev == NULL) return;
    *p->loose_pprev = p->loose_next;
    if (p->loose_next) p->loose_next->loose_pprev = p->loose_pprev;
    p->loose_next = NULL;
    p->loose_pprev = NULL;
    p->holder = NULL;
}

void edge_pipe_close_lent(edge_pipe **list)
{
    while (*list) {
        edge_pipe *p = *list;
        if (p->holder) *p->holder = NULL;
        edge_pipe_unlend(p);
        edge_pipe_close(p);
    }
}
