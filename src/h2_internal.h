/* HTTP/2's connection and stream state, shared by its three files: h2.c
 * (streams, request assembly from nghttp2's callbacks, the connection's
 * hooks), h2_response.c (submitting responses, whole or streamed, resets and
 * deadlines) and h2_upload.c (request bodies past --body-buffer, streamed to
 * edge.proxy). Not for other modules: they see h2.h. */
#ifndef EDGE_H2_INTERNAL_H
#define EDGE_H2_INTERNAL_H

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>

#include "body_pipe.h"
#include "conn.h"
#include "config.h"
#include "request.h"

#define OUT_HIGH        (256 * 1024)   /* queued output above which we stop producing frames */
#define STREAM_WINDOW   (256 * 1024)   /* per-stream receive window for request bodies */
#define CONN_WINDOW     (1024 * 1024)
#define ABUSE_FACTOR    4              /* header lists this many times over the limits end the connection */
#define RESET_BURST     500            /* RST_STREAMs a client may send at once ... */
#define RESET_RATE      50             /* ... and per second after that */

typedef struct edge_h2 edge_h2;

enum { BODY_WHOLE, BODY_PIPE, BODY_DISCARD };   /* what becomes of a request body's bytes */

/* What a stream waits for. HEADERS, BODY and SENDING wait on the client and
 * have a deadline; DISPATCHED and SENDING are busy (edge has work to do). */
enum stream_phase {
    ST_NEW,
    ST_HEADERS,      /* header block arriving: --header-timeout from the first HEADERS */
    ST_BODY,         /* request body arriving: --body-timeout between DATA frames */
    ST_DISPATCHED,   /* the core has it (Lua, cache): the core's own bounds */
    ST_SENDING,      /* response submitted: --send-timeout between two of its DATA frames */
    ST_SENT,         /* response ended; nghttp2 closes the stream (after our RST if need be) */
    ST_RESET,        /* we submitted RST_STREAM; nghttp2 closes the stream once it is sent */
    ST_CLOSED
};

typedef struct edge_h2_stream {
    edge_h2  *h2;
    int32_t   id;
    enum stream_phase phase;        /* changed only through set_phase */
    struct edge_h2_stream *prev, *next;
    ev_timer  deadline;             /* active only in a phase that waits on the client */
    size_t    header_bytes;
    size_t    body_sent;
    int       reject_status;        /* answer this without dispatching (413, 431) */
    unsigned  abusive : 1;          /* its header list ended the connection: ignore the rest */
    unsigned  submitted : 1;        /* a response was submitted: log it when the stream ends */
    unsigned  deferred : 1;         /* its streamed body waits on the origin (NGHTTP2_ERR_DEFERRED) */
    /* a request body past --body-buffer, arriving while the request is dispatched */
    unsigned  body_mode : 2;        /* BODY_WHOLE, BODY_PIPE (into upload), BODY_DISCARD */
    unsigned  upload_paused : 1;    /* the pipe is full: the stream's window is held back */
    edge_pipe *upload;              /* BODY_PIPE: the pipe we produce */
    uint64_t  body_total;           /* body bytes received, against --max-body */
    size_t    window_held;          /* DATA bytes whose stream window is not given back yet */
    ev_timer  body_deadline;        /* --body-timeout between DATA frames while it streams */
    edge_request req;               /* last: the protocol-neutral part */
} edge_h2_stream;

struct edge_h2 {
    edge_conn       *c;
    nghttp2_session *session;
    double           reset_tokens;  /* rapid-reset bucket: RST_STREAMs the client may still send */
    double           reset_refilled_at;
    edge_h2_stream  *streams;       /* every open stream we track */
    int              n_streams;
    int              n_busy;        /* streams in ST_DISPATCHED or ST_SENDING */
    int32_t          max_client_id; /* highest stream id a client HEADERS opened */
    unsigned         in_recv : 1;   /* inside nghttp2_session_mem_recv */
    unsigned         closing : 1;   /* GOAWAY sent: close once the streams finish */
};

/* h2.c */
void edge_h2_send_pending(edge_h2 *h);                /* serialises and sends what nghttp2 queued */
void edge_h2_set_phase(edge_h2 *h, edge_h2_stream *st, enum stream_phase to);
void edge_h2_deadline_restart(edge_h2_stream *st);    /* the client made progress */
void edge_h2_on_drained(edge_conn *c);

/* h2_response.c */
extern const edge_request_ops edge_h2_request_ops;
void edge_h2_reject_stream(edge_h2 *h, edge_h2_stream *st, int status);
void edge_h2_reset_stream(edge_h2 *h, edge_h2_stream *st, uint32_t code);
void edge_h2_on_deadline(struct ev_loop *loop, ev_timer *t, int revents);

/* h2_upload.c */
void edge_h2_start_upload(edge_h2 *h, edge_h2_stream *st);
void edge_h2_upload_data(edge_h2 *h, edge_h2_stream *st, const uint8_t *data, size_t len);
void edge_h2_upload_abandon(edge_h2 *h, edge_h2_stream *st);
void edge_h2_on_body_deadline(struct ev_loop *loop, ev_timer *t, int revents);

#endif
