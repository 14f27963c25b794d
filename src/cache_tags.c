/* An entry's tags: read from its response's Surrogate-Key (space-separated)
 * and Cache-Tag (comma-separated) fields, plus, for a derived key (one with
 * a '\0'), its base key; and the per-shard index from a tag to the entries
 * carrying it, so a purge by tag costs what the tag holds, not a scan. */
#include "cache_internal.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define MIN_TAG_BUCKETS 16

/* ---- reading ---- */

static int same_name(const cache_tag_name *t, const char *p, size_t len, int kind)
{
    return t->kind == kind && t->len == len && memcmp(t->p, p, len) == 0;
}

/* Adds a tag unless empty, too long, already there, or the set is full. */
static void add_tag(cache_tag_set *ts, const char *p, size_t len)
{
    if (len == 0 || len > CACHE_MAX_TAG_LEN || ts->n >= CACHE_MAX_TAGS) return;
    for (uint32_t i = 0; i < ts->n; i++)
        if (same_name(&ts->t[i], p, len, CACHE_TAG_USER)) return;
    ts->t[ts->n++] = (cache_tag_name){.p = p, .len = (uint32_t)len, .kind = CACHE_TAG_USER};
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Surrogate-Key: tags separated by spaces. */
static void read_spaced(cache_tag_set *ts, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ts->n < CACHE_MAX_TAGS) {
        while (i < n && is_space(p[i])) i++;
        size_t start = i;
        while (i < n && !is_space(p[i])) i++;
        add_tag(ts, p + start, i - start);
    }
}

/* Cache-Tag: tags separated by commas, spaces around them trimmed. */
static void read_commas(cache_tag_set *ts, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ts->n < CACHE_MAX_TAGS) {
        while (i < n && (is_space(p[i]) || p[i] == ',')) i++;
        size_t start = i;
        while (i < n && p[i] != ',') i++;
        size_t end = i;
        while (end > start && is_space(p[end - 1])) end--;
        add_tag(ts, p + start, end - start);
    }
}

static int name_is(const edge_response *resp, const edge_header *h, const char *name, size_t len)
{
    return h->name.len == len && memcmp(resp->data.base + h->name.off, name, len) == 0;
}

void cache_tags_read(const char *key, size_t klen, const edge_response *resp, cache_tag_set *ts)
{
    ts->n = 0;
    for (int i = 0; i < resp->n_headers && resp->status >= 100; i++) {   /* markers carry no tags */
        const edge_header *h = &resp->headers[i];
        const char *v = resp->data.base + h->value.off;
        if (name_is(resp, h, "surrogate-key", 13)) read_spaced(ts, v, h->value.len);
        else if (name_is(resp, h, "cache-tag", 9)) read_commas(ts, v, h->value.len);
    }
    const char *nul = klen ? memchr(key, '\0', klen) : NULL;
    if (nul)
        ts->t[ts->n++] = (cache_tag_name){.p = key, .len = (uint32_t)(nul - key), .kind = CACHE_TAG_BASE};
}

size_t cache_tags_charge(const cache_tag_set *ts)
{
    if (ts->n == 0) return 0;
    size_t bytes = 7;                                /* the links' alignment after the body */
    for (uint32_t i = 0; i < ts->n; i++)
        bytes += sizeof(struct edge_cache_tag_link) + sizeof(cache_tag) + ts->t[i].len;
    return bytes;
}

/* ---- the index ---- */

void cache_tag_list_remove(struct edge_cache_tag_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

void cache_tag_list_insert_after(struct edge_cache_tag_link *at, struct edge_cache_tag_link *l)
{
    l->prev = at;
    l->next = at->next;
    at->next->prev = l;
    at->next = l;
}

/* A base key's tag hashes apart from a response tag of the same bytes. */
static uint64_t tag_hash(int kind, const char *name, size_t len)
{
    return cache_hash(name, len) ^ (kind == CACHE_TAG_BASE ? 0x9e3779b97f4a7c15ULL : 0);
}

static cache_tag **tag_slot(cache_shard *s, uint64_t hash, int kind, const char *name, size_t len)
{
    cache_tag **p = &s->tags[hash & (s->n_tag_buckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        cache_tag *t = *p;
        if (t->hash == hash && t->kind == kind && t->len == len && (len == 0 || memcmp(t->name, name, len) == 0))
            return p;
    }
    return p;
}

cache_tag *cache_tag_find(cache_shard *s, int kind, const char *name, size_t len)
{
    if (s->tags == NULL) return NULL;
    return *tag_slot(s, tag_hash(kind, name, len), kind, name, len);
}

static void grow_tags(cache_shard *s)
{
    size_t n = s->n_tag_buckets ? s->n_tag_buckets * 2 : MIN_TAG_BUCKETS;
    cache_tag **b = edge_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->n_tag_buckets; i++) {
        cache_tag *t = s->tags[i], *next;
        for (; t; t = next) {
            next = t->hnext;
            cache_tag **slot = &b[t->hash & (n - 1)];
            t->hnext = *slot;
            *slot = t;
        }
    }
    free(s->tags);
    s->tags = b;
    s->n_tag_buckets = n;
}

/* The tag, made (with an empty list) when the shard has none of that name. */
static cache_tag *tag_get(cache_shard *s, const cache_tag_name *name)
{
    if (s->n_tags >= s->n_tag_buckets) grow_tags(s);
    uint64_t hash = tag_hash(name->kind, name->p, name->len);
    cache_tag **slot = tag_slot(s, hash, name->kind, name->p, name->len);
    if (*slot) return *slot;
    cache_tag *t = edge_malloc(sizeof(*t) + name->len);
    t->hnext = NULL;
    t->hash = hash;
    t->head = (struct edge_cache_tag_link){.prev = &t->head, .next = &t->head, .tag = t};
    t->len = name->len;
    t->kind = name->kind;
    memcpy(t->name, name->p, name->len);
    *slot = t;
    s->n_tags++;
    return t;
}

void cache_tag_drop_if_empty(cache_shard *s, cache_tag *t)
{
    if (t->head.next != &t->head) return;
    cache_tag **slot = &s->tags[t->hash & (s->n_tag_buckets - 1)];
    while (*slot != t) slot = &(*slot)->hnext;
    *slot = t->hnext;
    s->n_tags--;
    free(t);
}

/* New entries go first: a purge's cursor, which starts at the head and
 * walks on, never meets an entry stored after the purge began. */
void cache_tags_link(cache_shard *s, edge_cache_entry *e, const cache_tag_set *ts)
{
    for (uint32_t i = 0; i < ts->n; i++) {
        cache_tag *t = tag_get(s, &ts->t[i]);
        e->tags[i].tag = t;
        cache_tag_list_insert_after(&t->head, &e->tags[i]);
    }
}

void cache_tags_unlink(cache_shard *s, edge_cache_entry *e)
{
    for (uint32_t i = 0; i < e->n_tags; i++) {
        cache_tag_list_remove(&e->tags[i]);
        cache_tag_drop_if_empty(s, e->tags[i].tag);
    }
}

void cache_tags_free(cache_shard *s)
{
    for (size_t i = 0; i < s->n_tag_buckets; i++) {
        while (s->tags[i]) {               /* none when every entry is gone; freed all the same */
            cache_tag *t = s->tags[i];
            s->tags[i] = t->hnext;
            free(t);
        }
    }
    free(s->tags);
    s->tags = NULL;
    s->n_tag_buckets = s->n_tags = 0;
}
