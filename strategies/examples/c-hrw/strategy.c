/* c-hrw: weighted rendezvous hashing (HRW) in C, as a slots table.
 *
 * `configure` ranks the nodes for each of `slots` rows with weighted HRW and
 * returns the table; the proxy then indexes it natively (row = key hash
 * mapped onto the rows), so routing costs the same as a built-in table
 * strategy and no C runs per key. The same algorithm as the Python example
 * (strategies/examples/python-hrw/app.py): FNV-1a of the node id as its
 * seed, a 64-bit mixer per (seed, row), score = -ln(u) / weight, best first.
 *
 * Build (wit-bindgen-cli 0.63.0 and wasm-tools 1.262.0 from crates.io, zig
 * from PyPI's ziglang; see build.sh and the README, "Write your own
 * strategy"):
 *
 *     ./build.sh            # writes c-hrw.wasm
 *
 * Pitfalls this file avoids:
 * - An empty list or string arrives with len == 0 and a pointer that was
 *   never allocated (the canonical ABI's realloc answers the alignment for a
 *   zero-byte request): look at the length first; never dereference or
 *   free such a pointer (the generated *_free functions check the length).
 * - Arguments belong to the callee: `config` and `nodes` are freed here.
 *   Returned strings and lists are freed by the generated post-return
 *   functions, so they must come from malloc (strategy_string_dup), never
 *   from a string literal.
 * - Nothing seeded at build time (addresses, __DATE__, a random seed)
 *   feeds routing: everything below is a fixed function of
 *   (config, nodes, replicas).
 * - No stdio: printf and friends would import WASI functions the host
 *   refuses. Messages are built with the small helpers below.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

#define DEFAULT_SLOTS 4096u
#define MAX_SLOTS 65536u
/* How much of an offending setting an error repeats. */
#define QUOTE_MAX 64u

/* ---- error messages without stdio ---- */

typedef struct {
  char text[256];
  size_t len;
} message_t;

static void put(message_t *m, const char *s, size_t n) {
  for (size_t i = 0; i < n && m->len + 1 < sizeof m->text; i++) m->text[m->len++] = s[i];
  m->text[m->len] = 0;
}

static void puts_(message_t *m, const char *s) { put(m, s, strlen(s)); }

static void putu(message_t *m, uint64_t v) {
  char digits[20];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) put(m, &digits[--n], 1);
}

/* 'text' (at most QUOTE_MAX bytes of it). */
static void putq(message_t *m, const char *s, size_t n) {
  puts_(m, "'");
  put(m, s, n < QUOTE_MAX ? n : QUOTE_MAX);
  puts_(m, n > QUOTE_MAX ? "...'" : "'");
}

static void fail(strategy_string_t *err, const message_t *m) { strategy_string_dup_n(err, m->text, m->len); }

/* ---- config: `slots = N`, `#` comments, blank lines ---- */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Trims [*s, *s + *n) in place. */
static void trim(const char **s, size_t *n) {
  while (*n && is_space(**s)) (*s)++, (*n)--;
  while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* Parses `config` into *slots; on error writes a message naming the line. */
static int parse_config(const strategy_string_t *config, uint32_t *slots, strategy_string_t *err) {
  *slots = DEFAULT_SLOTS;
  /* len == 0: ptr was never allocated, and the loop below never reads it. */
  const char *text = (const char *)config->ptr;
  size_t pos = 0, number = 0;
  while (pos < config->len) {
    number++;
    size_t end = pos;
    while (end < config->len && text[end] != '\n') end++;
    const char *line = text + pos;
    size_t n = end - pos;
    pos = end + 1;
    for (size_t i = 0; i < n; i++) {
      if (line[i] == '#') {
        n = i;
        break;
      }
    }
    trim(&line, &n);
    if (n == 0) continue;
    const char *eq = memchr(line, '=', n);
    const char *key = line;
    size_t key_len = eq ? (size_t)(eq - line) : n;
    trim(&key, &key_len);
    message_t m = {{0}, 0};
    if (!eq || key_len != 5 || memcmp(key, "slots", 5) != 0) {
      puts_(&m, "line ");
      putu(&m, number);
      puts_(&m, ": unknown setting ");
      putq(&m, key, key_len);
      puts_(&m, "; the only key is slots");
      fail(err, &m);
      return 0;
    }
    const char *value = eq + 1;
    size_t value_len = (size_t)(line + n - value);
    trim(&value, &value_len);
    uint64_t v = 0;
    int digits = value_len > 0 && value_len <= 12;
    for (size_t i = 0; digits && i < value_len; i++) {
      if (value[i] < '0' || value[i] > '9') digits = 0;
      else v = v * 10 + (uint64_t)(value[i] - '0');
    }
    if (!digits) {
      puts_(&m, "line ");
      putu(&m, number);
      puts_(&m, ": slots must be an integer, got ");
      putq(&m, value, value_len);
      fail(err, &m);
      return 0;
    }
    if (v < 1 || v > MAX_SLOTS) {
      puts_(&m, "line ");
      putu(&m, number);
      puts_(&m, ": slots must be between 1 and ");
      putu(&m, MAX_SLOTS);
      puts_(&m, ", got ");
      putu(&m, v);
      fail(err, &m);
      return 0;
    }
    *slots = (uint32_t)v;
  }
  return 1;
}

/* ---- weighted HRW ---- */

static uint64_t fnv1a64(const uint8_t *data, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

typedef struct {
  double score;
  uint32_t node;
} ranked_t;

/* The `width` best nodes for `row` into out[0..width): lowest score first,
 * ties to the lower position (as Python's sort of (score, i) does). */
static void rank(const uint64_t *seeds, const double *inv_weight, uint32_t n, uint32_t row, uint32_t width,
                 ranked_t *best, uint32_t *out) {
  uint32_t have = 0;
  for (uint32_t i = 0; i < n; i++) {
    double u = (double)((mix64(seeds[i] ^ row) >> 11) + 1) / 9007199254740992.0; /* (0, 1] */
    ranked_t r = {-log(u) * inv_weight[i], i};
    if (have == width && r.score >= best[width - 1].score) continue;
    uint32_t at = have < width ? have++ : width - 1;
    while (at > 0 && best[at - 1].score > r.score) {
      best[at] = best[at - 1];
      at--;
    }
    best[at] = r;
  }
  for (uint32_t i = 0; i < width; i++) out[i] = best[i].node;
}

/* ---- the exports (wit/strategy.wit) ---- */

void exports_strategy_metadata(strategy_metadata_t *ret) {
  /* Freed by the host's post-return call: heap copies, not literals. */
  strategy_string_dup(&ret->name, "c-hrw");
  strategy_string_dup(&ret->version, "0.1.0");
  strategy_string_dup(&ret->description, "weighted rendezvous hashing in C, as a slots table");
}

bool exports_strategy_validate_config(strategy_string_t *config, strategy_string_t *err) {
  uint32_t slots;
  int ok = parse_config(config, &slots, err);
  strategy_string_free(config);
  return ok;
}

bool exports_strategy_configure(strategy_string_t *config, strategy_list_node_t *nodes, uint32_t replicas,
                                strategy_routing_table_t *ret, strategy_string_t *err) {
  uint32_t slots;
  int ok = parse_config(config, &slots, err);
  strategy_string_free(config);
  uint32_t n = (uint32_t)nodes->len;
  uint32_t width = replicas < n ? replicas : n;
  uint64_t *seeds = NULL;
  double *inv_weight = NULL;
  ranked_t *best = NULL;
  uint32_t *entries = NULL;
  if (ok && width == 0) {
    /* The host never sends an empty node list or replicas == 0; say so
     * rather than build an empty table. */
    message_t m = {{0}, 0};
    puts_(&m, "configure needs at least one node and one replica");
    fail(err, &m);
    ok = 0;
  }
  if (ok) {
    seeds = malloc(n * sizeof *seeds);
    inv_weight = malloc(n * sizeof *inv_weight);
    best = malloc(width * sizeof *best);
    entries = malloc((size_t)slots * width * sizeof *entries);
    if (!seeds || !inv_weight || !best || !entries) {
      message_t m = {{0}, 0};
      puts_(&m, "out of memory for a table of ");
      putu(&m, slots);
      puts_(&m, " rows");
      fail(err, &m);
      free(entries);
      entries = NULL;
      ok = 0;
    }
  }
  if (ok) {
    for (uint32_t i = 0; i < n; i++) {
      const strategy_node_t *node = &nodes->ptr[i];
      /* An empty id: len 0, fnv1a64 reads nothing. */
      seeds[i] = fnv1a64(node->id.ptr, node->id.len);
      inv_weight[i] = 1.0 / node->weight;
    }
    for (uint32_t row = 0; row < slots; row++) rank(seeds, inv_weight, n, row, width, best, entries + (size_t)row * width);
    ret->tag = SHARDGATE_STRATEGY_TYPES_ROUTING_TABLE_SLOTS;
    ret->val.slots.width = width;
    ret->val.slots.entries.ptr = entries; /* freed by the post-return call */
    ret->val.slots.entries.len = (size_t)slots * width;
  }
  free(seeds);
  free(inv_weight);
  free(best);
  strategy_list_node_free(nodes);
  return ok;
}

/* Never called: `configure` returns a slots table, which the host indexes
 * itself (see wit/strategy.wit). Trap rather than answer wrongly. */
void exports_strategy_route(strategy_list_u8_t *key, strategy_list_u32_t *ret) {
  (void)key;
  (void)ret;
  __builtin_trap();
}

void exports_strategy_route_batch(strategy_list_u8_t *keys, strategy_list_u32_t *ends, strategy_list_u32_t *ret) {
  (void)keys;
  (void)ends;
  (void)ret;
  __builtin_trap();
}
