/* The access log: one line per response, in nginx's combined format or as
 * JSON lines, to a file, stdout, or nowhere. Each worker buffers its lines and
 * writes them with one write(2) when the buffer fills or once a second, so
 * logging never blocks the loop for long; SIGUSR1 reopens the file. */
#ifndef EDGE_ACCESS_LOG_H
#define EDGE_ACCESS_LOG_H

#include <stddef.h>

struct edge_worker;
struct edge_request;
struct edge_buf;

/* path: "off", "-" (stdout) or a file (appended, created 0644). format: an
 * EDGE_LOG_FORMAT_*. EDGE_OK, or EDGE_ERROR with a message in err. */
int edge_access_log_open(const char *path, int format, char *err, size_t errlen);
/* Reopens the file under the same fd number (for log rotation). */
void edge_access_log_reopen(void);
void edge_access_log_close(void);

/* Whether lines are written anywhere. */
int edge_access_log_enabled(void);
/* Appends the line for req's response to the worker's buffer, its request
 * time ending now (the response's last byte was just handed to the socket). */
void edge_access_log_request(struct edge_worker *w, struct edge_request *req);
/* For a response whose last byte goes out later (HTTP/1.1 pipelining):
 * formats req's line, without its request time, onto out ... */
void edge_access_log_format(struct edge_worker *w, struct edge_request *req, struct edge_buf *out);
/* ... and, once the last byte was written, completes and queues it. */
void edge_access_log_commit(struct edge_worker *w, const char *line, size_t n, double seconds);
/* Writes the worker's buffered lines now. */
void edge_access_log_flush(struct edge_worker *w);

#endif
