/* The error log: nginx-like lines on stderr, one write(2) per line.
 *   2026/11/26 06:30:00 [error] 1234#0: *5 message
 * The level is checked before the arguments are evaluated. */
#ifndef EDGE_LOG_H
#define EDGE_LOG_H

#include <stdint.h>

/* Numbered like OpenResty's ngx.ERR .. ngx.DEBUG so Lua users see familiar values. */
enum edge_log_level {
    EDGE_LOG_STDERR = 0,
    EDGE_LOG_EMERG  = 1,
    EDGE_LOG_ALERT  = 2,
    EDGE_LOG_CRIT   = 3,
    EDGE_LOG_ERR    = 4,
    EDGE_LOG_WARN   = 5,
    EDGE_LOG_NOTICE = 6,
    EDGE_LOG_INFO   = 7,
    EDGE_LOG_DEBUG  = 8
};

extern int edge_log_level;

/* A line said at most once a second (one throttle per owner and thread, no
 * lock): an outage would otherwise write one per request. */
typedef struct edge_log_throttle {
    double   last;          /* when the line last went out */
    uint64_t held;          /* occasions since, not logged */
} edge_log_throttle;

/* 1: log now, with *held the occasions held back since the last line
 * (then reset); 0: this one is held back and counted. */
static inline int edge_log_throttle_pass(edge_log_throttle *t, double now, uint64_t *held)
{
    if (now - t->last < 1.0) {
        t->held++;
        return 0;
    }
    *held = t->held;
    t->held = 0;
    t->last = now;
    return 1;
}

/* The worker id printed after the pid ("1234#2"); -1 on the main thread. */
extern _Thread_local int edge_log_worker;

/* Parses "error", "warn", "notice", "info", "debug"; -1 when unknown. */
int edge_log_parse_level(const char *name);
const char *edge_log_level_name(int level);

/* Writes one line. conn_id 0 means "no connection". */
void edge_log_write(int level, uint64_t conn_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define edge_log(level, conn_id, ...)                                   \
    do {                                                                \
        if ((level) <= edge_log_level) edge_log_write((level), (conn_id), __VA_ARGS__); \
    } while (0)

#define edge_log_enabled(level) ((level) <= edge_log_level)

#endif
