/* systemd's notification protocol, which is small enough not to need
 * libsystemd: the service manager passes a datagram socket's address in
 * $NOTIFY_SOCKET, and the service sends newline-separated VAR=value
 * assignments to it ("READY=1" once it serves, "STOPPING=1" when it drains).
 * With the unit's default NotifyAccess=main, only the main process may send,
 * which is the process this code runs in (threads share its PID). */
#include "sd_notify.h"
#include "common.h"
#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills sa from $NOTIFY_SOCKET's value; returns the address length, or 0 for
 * a value that is neither an absolute path nor '@' + an abstract name. */
static socklen_t notify_address(const char *name, struct sockaddr_un *sa)
{
    size_t len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len < 2 || len >= sizeof(sa->sun_path)) return 0;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, name, len);
    if (name[0] == '@') sa->sun_path[0] = '\0';   /* abstract: the name's bytes, no terminator */
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

int edge_sd_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (name == NULL || name[0] == '\0') return EDGE_DONE;
    struct sockaddr_un sa;
    socklen_t salen = notify_address(name, &sa);
    if (salen == 0) {
        edge_log(EDGE_LOG_WARN, 0, "sd_notify: NOTIFY_SOCKET=%s is not a socket address", name);
        return EDGE_ERROR;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        edge_log(EDGE_LOG_WARN, 0, "sd_notify: socket: %s", strerror(errno));
        return EDGE_ERROR;
    }
    size_t len = strlen(state);
    ssize_t n = sendto(fd, state, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa, salen);
    int saved = errno;
    close(fd);
    if (n != (ssize_t)len) {
        edge_log(EDGE_LOG_WARN, 0, "sd_notify: sending %s to %s: %s", state, name,
                 n < 0 ? strerror(saved) : "short write");
        return EDGE_ERROR;
    }
    edge_log(EDGE_LOG_DEBUG, 0, "sd_notify: %s", state);
    return EDGE_OK;
}
