/* A streamed body compressed as it streams (compress_stream.h). */
#include "compress_stream.h"
#include "common.h"
#include "compress_codec.h"
#include "log.h"

#include <stdlib.h>

#define SLICE (64 * 1024)   /* origin bytes compressed per step: bounds one step's output */

typedef struct compress_stream {
    edge_pipe    *src;        /* the origin's pipe: we consume it, and close it once */
    edge_pipe    *dst;        /* the compressed pipe: we produce it, and end it once; NULL after */
    edge_encoder *enc;
    edge_buf      out;        /* one step's output, handed to dst at once */
    struct ev_loop *loop;
    uint64_t      conn_id;    /* for log lines */
    ev_timer      kick;       /* resume: pump on the loop's next turn, not inside the consumer */
    unsigned      paused : 1;     /* dst is full: wait for resume */
    unsigned      unflushed : 1;  /* the encoder holds input not yet written out */
} compress_stream;

/* Frees the transform and closes the origin's pipe (which cancels the
 * origin read when its body had not ended). Last: the pipe's close may run
 * the producer's cancel. */
static void destroy(compress_stream *cs)
{
    edge_pipe *src = cs->src;
    ev_timer_stop(cs->loop, &cs->kick);
    edge_encoder_free(cs->enc);
    edge_buf_free(&cs->out);
    free(cs);
    edge_pipe_close(src);
}

/* Hands the step's output to dst. EDGE_DONE when dst's consumer closed it
 * meanwhile (the client left): cs is freed. */
static int emit(compress_stream *cs)
{
    if (cs->out.len == 0) return EDGE_OK;
    int r = edge_pipe_write(cs->dst, cs->out.base, cs->out.len);
    cs->out.len = 0;
    if (r == EDGE_PIPE_GONE) {
        cs->dst = NULL;
        destroy(cs);
        return EDGE_DONE;
    }
    if (r == EDGE_PIPE_PAUSE) cs->paused = 1;
    return EDGE_OK;
}

/* Ends dst (the body complete, or cut) and goes. */
static void end_dst(compress_stream *cs, int ok)
{
    edge_pipe *dst = cs->dst;
    cs->dst = NULL;                 /* the producer forgets the pipe it ended */
    edge_pipe_end(dst, ok);
    destroy(cs);
}

/* Encodes n bytes as op says and passes the output on. EDGE_OK, or
 * EDGE_DONE when cs is gone: the client left, or the encoder failed (the
 * client's body is then cut, never silently short). */
static int step(compress_stream *cs, const char *p, size_t n, int op)
{
    if (edge_encoder_run(cs->enc, p, n, op, &cs->out) != EDGE_OK) {
        edge_log(EDGE_LOG_ERR, cs->conn_id, "compression failed in a streamed body: it is cut");
        end_dst(cs, 0);
        return EDGE_DONE;
    }
    cs->unflushed = op == EDGE_ENCODE_MORE && (n > 0 || cs->unflushed);
    return emit(cs);
}

/* Moves the origin's bytes through the encoder until dst is full, the
 * origin's pipe is empty (then what the encoder holds is flushed, so a slow
 * origin's bytes reach the client), or the body ended or failed. */
static void pump(compress_stream *cs)
{
    edge_pipe *src = cs->src;
    while (!cs->paused) {
        size_t n = edge_pipe_readable(src);
        if (edge_pipe_failed(src)) {
            end_dst(cs, 0);
            return;
        }
        if (n == 0 && src->ended) {
            if (step(cs, NULL, 0, EDGE_ENCODE_END) == EDGE_OK) end_dst(cs, 1);
            return;
        }
        if (n == 0) {                                /* on_src_ready goes on */
            if (cs->unflushed) step(cs, NULL, 0, EDGE_ENCODE_FLUSH);
            return;
        }
        if (n > SLICE) n = SLICE;
        if (step(cs, edge_pipe_data(src), n, EDGE_ENCODE_MORE) != EDGE_OK) return;
        edge_pipe_consume(src, n);
    }
}

/* ---- the origin's pipe: we consume it ---- */

static void on_src_ready(void *ud)
{
    pump(ud);
}

/* ---- dst: we produce it ---- */

static void on_kick(struct ev_loop *loop, ev_timer *t, int revents)
{
    pump(edge_container_of(t, compress_stream, kick));
}

static void on_dst_resume(void *ud)
{
    compress_stream *cs = ud;
    cs->paused = 0;
    ev_timer_start(cs->loop, &cs->kick);   /* no-op when already pending */
}

/* The client's side closed dst before its end: stop reading the origin. */
static void on_dst_cancel(void *ud)
{
    compress_stream *cs = ud;
    cs->dst = NULL;
    destroy(cs);
}

edge_pipe *edge_compress_stream(edge_pipe *src, int coding, struct ev_loop *loop, uint64_t conn_id)
{
    edge_encoder *enc = edge_encoder_new(coding);
    if (enc == NULL) return NULL;
    compress_stream *cs = edge_calloc(1, sizeof(*cs));
    cs->src = src;
    cs->enc = enc;
    cs->loop = loop;
    cs->conn_id = conn_id;
    ev_timer_init(&cs->kick, on_kick, 0., 0.);
    edge_pipe_producer producer = {.resume = on_dst_resume, .cancel = on_dst_cancel, .ud = cs};
    edge_pipe *dst = edge_pipe_new(-1, src->high, &producer);
    cs->dst = dst;
    edge_pipe_consumer consumer = {.ready = on_src_ready, .ud = cs};
    edge_pipe_set_consumer(src, &consumer);
    pump(cs);     /* what arrived already; dst has no consumer yet, so it cannot close */
    return dst;
}
