/* HTTP/2 over a connection, with one nghttp2 server session per connection.
 * Every stream fills the same protocol-neutral edge_request as HTTP/1.1 and
 * goes through the same dispatcher; streams run concurrently, each request's
 * hooks in their own coroutine. */
#ifndef EDGE_H2_H
#define EDGE_H2_H

struct edge_conn;
struct edge_worker;

/* Makes HTTP/2 the connection's protocol (ALPN "h2", or the cleartext
 * preface). Expects the client connection preface as the first input. */
void edge_h2_attach(struct edge_conn *c);

/* Creates the shared nghttp2 callbacks and options; once, before workers start. */
void edge_h2_global_init(void);
void edge_h2_global_free(void);

/* Frees the worker's spare streams (at its exit). */
void edge_h2_free_spares(struct edge_worker *w);

#endif
