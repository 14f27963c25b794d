/* HTTP/1.1 over a connection, parsed with llhttp in strict mode.
 * Requests on a connection are handled one at a time, in order: pipelined
 * requests wait in the input buffer until the response before them is queued,
 * so responses always leave in request order. */
#ifndef EDGE_H1_H
#define EDGE_H1_H

struct edge_conn;

/* Makes HTTP/1.1 the connection's protocol (after ALPN picked it, or none). */
void edge_h1_attach(struct edge_conn *c);

#endif
