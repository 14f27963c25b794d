/* The access log: one line per response, in nginx's combined format or as
 * JSON lines, to a file, stdout, or nowhere. Each worker buffers its lines and
 * writes them with one write(2) when the buffer fills or once a second, so
 * logging never blocks the loop for long; SIGUSR1 reopens the file. */
#ifndef EDGE_ACCESS_LOG_H
#define EDGE_ACCESS_LOG_H

#include <stddef.h>

struct edge_worker;
struct edge_request;

/* path: "off", "-" (stdout) or a file (appended, created 0644). format: 0
 * combined, 1 JSON. EDGE_OK, or EDGE_ERROR with a message in err. */
int edge_access_log_open(const char *path, int json, char *err, size_t errlen);
/* Reopens the file under the same fd number (for log rotation). */
void edge_access_log_reopen(void);
void edge_access_log_close(void);

/* Appends the line for req's response to the worker's buffer. */
void edge_access_log_request(struct edge_worker *w, struct edge_request *req);
/* Writes the worker's buffered lines now. */
void edge_access_log_flush(struct edge_worker *w);

#endif
