/* systemd's readiness notification (sd_notify(3)) without libsystemd. */
#ifndef EDGE_SD_NOTIFY_H
#define EDGE_SD_NOTIFY_H

/* Sends state (e.g. "READY=1", "STOPPING=1") as one datagram to the AF_UNIX
 * socket named by $NOTIFY_SOCKET: a path, or an abstract name when it starts
 * with '@'. Returns EDGE_OK when sent, EDGE_DONE when $NOTIFY_SOCKET is unset
 * (not started by systemd with Type=notify), EDGE_ERROR (logged) otherwise.
 * Never blocks: the datagram is sent with MSG_DONTWAIT. */
int edge_sd_notify(const char *state);

#endif
