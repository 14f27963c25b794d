/* Lists of address ranges ("10.0.0.0/8", "::1", "127.0.0.1/32"), for
 * options that trust some peers more than others (--trusted-proxies). */
#ifndef EDGE_CIDR_H
#define EDGE_CIDR_H

#include <stdint.h>
#include <sys/socket.h>

#define EDGE_CIDR_MAX 64

typedef struct edge_cidr {
    int     family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];      /* network byte order, host bits cleared */
    int     prefix;        /* bits that must match */
} edge_cidr;

typedef struct edge_cidr_list {
    edge_cidr items[EDGE_CIDR_MAX];
    int       n;
} edge_cidr_list;

/* Adds the comma-separated ranges in s to list. EDGE_OK, or EDGE_ERROR
 * (nothing added) for a malformed range or a full list. */
int edge_cidr_list_add(edge_cidr_list *list, const char *s);
/* Whether addr (AF_INET, AF_INET6, or an IPv4-mapped IPv6 address) is in list. */
int edge_cidr_list_match(const edge_cidr_list *list, const struct sockaddr_storage *addr);

#endif
