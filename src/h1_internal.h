/* HTTP/1.1's connection state, shared by its three files: h1.c (parsing,
 * input, the connection's hooks), h1_upload.c (request bodies past
 * --body-buffer, streamed to edge.proxy) and h1_response.c (encoding,
 * streamed response bodies, the access log's timing). Not for other modules:
 * they see h1.h. */
#ifndef EDGE_H1_INTERNAL_H
#define EDGE_H1_INTERNAL_H

#include <llhttp.h>
#include <stdint.h>

#include "body_pipe.h"
#include "buf.h"
#include "conn.h"
#include "request.h"

#define OUT_HIGH (256 * 1024)   /* queued output above which pipelined requests wait */

enum h1_state {
    H1_IDLE,         /* between requests */
    H1_READING,      /* a request has begun arriving */
    H1_DISPATCHED,   /* complete; the core is producing its response */
    H1_STREAMING,    /* the head is out; the body comes from resp.pipe (edge.proxy) */
    H1_DRAINING,     /* the response is queued; the request's streamed body is still
                      * arriving, discarded: the next request follows its end */
    H1_CLOSING       /* the last response is queued; the connection closes after it */
};

/* What becomes of a request body's bytes. */
enum h1_body {
    BODY_WHOLE,      /* into req.body (up to --body-buffer), or no body */
    BODY_PIPE,       /* past --body-buffer: into the pipe h->upload, the request dispatched */
    BODY_DISCARD     /* streamed, but nobody reads it any more: dropped to its end */
};

typedef struct edge_h1 {
    edge_conn     *c;
    llhttp_t       parser;
    enum h1_state  state;
    int            error_status;     /* set by a callback that rejects the request */
    size_t         url_len;
    size_t         header_bytes;
    edge_buf       field;            /* the header name being received */
    edge_buf       value;            /* the header value being received */
    unsigned       in_parse : 1;     /* inside process_input: respond must not re-enter it */
    unsigned       keep_alive : 1;
    unsigned       has_te : 1;       /* a Transfer-Encoding field was received */
    unsigned       te_unsupported : 1;
    unsigned       in_trailers : 1;  /* the head is complete: fields now are chunked trailers */
    unsigned       value_started : 1; /* the current field value had a span */
    unsigned       value_ended : 1;  /* ... which reached the end of its line */
    unsigned       tail_at_line_start : 1;  /* the last parsed bytes ended in LF [SP/HTAB]* */
    unsigned       stop_after : 1;   /* server draining: close after this response */
    unsigned       chunked : 1;      /* the streamed body goes out in chunks */
    unsigned       dispatch_now : 1; /* a callback made the request ready: parse_some dispatches */
    unsigned       upload_resumed : 1;  /* parse once even with no byte buffered (see can_parse) */
    unsigned       upload_paused : 1;   /* the pipe is full: the parser and reading wait for resume */
    enum h1_body   body_mode;
    edge_pipe     *upload;           /* BODY_PIPE: the pipe we produce (req.body_pipe, or taken) */
    uint64_t       body_total;       /* body bytes of the current request, against --max-body */
    edge_buf       log_lines;        /* access log lines of responses still being written */
    edge_buf       log_marks;        /* one log_mark per line, in response order */
    size_t         log_next;         /* the first mark not yet committed */
    edge_request   req;              /* last: the protocol-neutral part */
} edge_h1;

/* Where a response ends in the connection's output, so its access log line
 * gets the time its last byte was written (nginx's $request_time). */
typedef struct log_mark {
    uint64_t done_at;      /* c->out_flushed + c->out.len after the response */
    double   start;        /* the request's start */
    size_t   line_end;     /* end of its line in log_lines */
} log_mark;

/* h1.c */
void edge_h1_reject(edge_h1 *h, int status);          /* answers status, closes after it */
void edge_h1_process_input(edge_h1 *h);               /* parses and sends what it can */

/* h1_upload.c */
int  edge_h1_uploading(const edge_h1 *h);
void edge_h1_start_upload(edge_h1 *h, int64_t length);
int  edge_h1_upload_write(edge_h1 *h, const char *at, size_t n);
void edge_h1_upload_end(edge_h1 *h);
void edge_h1_upload_failed(edge_h1 *h, int status);

/* h1_response.c */
extern const edge_request_ops edge_h1_request_ops;
void edge_h1_encode_response(edge_h1 *h);
void edge_h1_pump_body(edge_h1 *h);                   /* a streamed body: on drain */
void edge_h1_commit_log_lines(edge_h1 *h, int all);
void edge_h1_on_sent(edge_conn *c);
void edge_h1_next_request(edge_h1 *h);                /* ready for the next request */

#endif
