/* Address ranges: parsing "ADDR[/BITS]" lists and matching peers. */
#include "cidr.h"
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* Parses one range of n bytes at s. */
static int parse_one(const char *s, size_t n, edge_cidr *out)
{
    char text[64];
    if (n == 0 || n >= sizeof(text)) return EDGE_ERROR;
    memcpy(text, s, n);
    text[n] = '\0';
    char *slash = strchr(text, '/');
    if (slash) *slash = '\0';
    memset(out, 0, sizeof(*out));
    int max_bits;
    if (inet_pton(AF_INET, text, out->addr) == 1) {
        out->family = AF_INET;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, text, out->addr) == 1) {
        out->family = AF_INET6;
        max_bits = 128;
    } else {
        return EDGE_ERROR;
    }
    out->prefix = max_bits;
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end != '\0' || bits < 0 || bits > max_bits) return EDGE_ERROR;
        out->prefix = (int)bits;
    }
    /* Clear the host bits so matching compares whole bytes and one mask. */
    for (int i = 0; i < max_bits / 8; i++) {
        int keep = out->prefix - i * 8;
        if (keep >= 8) continue;
        out->addr[i] &= keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
    return EDGE_OK;
}

int edge_cidr_list_add(edge_cidr_list *list, const char *s)
{
    edge_cidr_list next = *list;
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        while (n && *s == ' ') s++, n--;
        while (n && s[n - 1] == ' ') n--;
        if (next.n == EDGE_CIDR_MAX || parse_one(s, n, &next.items[next.n]) != EDGE_OK) return EDGE_ERROR;
        next.n++;
        s += comma ? (size_t)(comma - s) + 1 : strlen(s);
    }
    *list = next;
    return EDGE_OK;
}

static int prefix_matches(const uint8_t *net, const uint8_t *addr, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(net, addr, (size_t)whole) != 0) return 0;
    if (rest == 0) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[whole] & mask) == net[whole];
}

int edge_cidr_list_match(const edge_cidr_list *list, const struct sockaddr_storage *ss)
{
    uint8_t v4[4], v6[16];
    int has_v4 = 0, has_v6 = 0;
    if (ss->ss_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        has_v4 = 1;
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        memcpy(v6, a, 16);
        has_v6 = 1;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(v4, v6 + 12, 4);
            has_v4 = 1;
        }
    }
    for (int i = 0; i < list->n; i++) {
        const edge_cidr *c = &list->items[i];
        if (c->family == AF_INET && has_v4 && prefix_matches(c->addr, v4, c->prefix)) return 1;
        if (c->family == AF_INET6 && has_v6 && prefix_matches(c->addr, v6, c->prefix)) return 1;
    }
    return 0;
}
