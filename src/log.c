/* Error log writer. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int edge_log_level = EDGE_LOG_NOTICE;
_Thread_local int edge_log_worker = -1;

static const char *const level_names[] = {
    "stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"
};

int edge_log_parse_level(const char *name)
{
    for (int i = EDGE_LOG_ERR; i <= EDGE_LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    if (strcmp(name, "err") == 0) return EDGE_LOG_ERR;
    return -1;
}

const char *edge_log_level_name(int level)
{
    if (level < 0 || level > EDGE_LOG_DEBUG) return "?";
    return level_names[level];
}

void edge_log_write(int level, uint64_t conn_id, const char *fmt, ...)
{
    char line[4096];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(line, sizeof(line), "%Y/%m/%d %H:%M:%S", &tm);
    int w = snprintf(line + n, sizeof(line) - n, " [%s] %d#%d: ", edge_log_level_name(level),
                     (int)getpid(), edge_log_worker < 0 ? 0 : edge_log_worker);
    n += (size_t)w;
    if (conn_id) n += (size_t)snprintf(line + n, sizeof(line) - n, "*%llu ", (unsigned long long)conn_id);

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2) n = sizeof(line) - 2;  /* truncated: still one line */
    line[n++] = '\n';
    /* One write per line keeps lines from different workers whole. */
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}
