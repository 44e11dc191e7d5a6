"""python-hrw: weighted rendezvous hashing (HRW) in Python, as a slots table.

`configure` ranks the nodes for each of `slots` rows with weighted HRW and
returns the table; the proxy then indexes it natively (row = key hash mapped
onto the rows), so routing costs the same as a built-in table strategy and
no Python runs per key.

Build (componentize-py from PyPI; see the README, "Write your own strategy"):

    componentize-py -d wit -w strategy componentize app -o python-hrw.wasm --stub-wasi

Pitfalls this file avoids:
- componentize-py may build a new object for every exported call: keep what
  `configure` computed at module level (`_STATE`), never on `self`.
- Python's `hash()` is seeded per build/run: never route with it. Everything
  below is a fixed function of (config, nodes, replicas).
"""

import math

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

MASK = (1 << 64) - 1
DEFAULT_SLOTS = 4096
MAX_SLOTS = 1 << 16

# What `configure` computed: kept at module level (see above).
_STATE = {}


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def mix64(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def parse_config(config: str) -> int:
    """`slots = N` (rows of the table), or nothing."""
    slots = DEFAULT_SLOTS
    for number, line in enumerate(config.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or key != "slots":
            raise Err(f"line {number}: unknown setting {key!r}; the only key is slots")
        try:
            slots = int(value)
        except ValueError:
            raise Err(f"line {number}: slots must be an integer, got {value!r}")
        if not 1 <= slots <= MAX_SLOTS:
            raise Err(f"line {number}: slots must be between 1 and {MAX_SLOTS}, got {slots}")
    return slots


def rank(seeds, inv_log_weights, row: int, width: int):
    """The `width` best nodes for `row` by weighted HRW: score = -ln(u) / w."""
    scored = []
    for i, seed in enumerate(seeds):
        u = ((mix64(seed ^ row) >> 11) + 1) / float(1 << 53)  # (0, 1]
        scored.append((-math.log(u) * inv_log_weights[i], i))
    scored.sort()
    return [i for _, i in scored[:width]]


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> types.Metadata:
        return types.Metadata("python-hrw", "0.1.0", "weighted rendezvous hashing in Python, as a slots table")

    def validate_config(self, config: str) -> None:
        parse_config(config)

    def configure(self, config: str, nodes, replicas: int) -> types.RoutingTable:
        slots = parse_config(config)
        width = min(replicas, len(nodes))
        seeds = [fnv1a64(n.id.encode()) for n in nodes]
        inv = [1.0 / n.weight for n in nodes]
        entries = []
        for row in range(slots):
            entries.extend(rank(seeds, inv, row, width))
        _STATE["width"] = width
        return types.RoutingTable_Slots(types.SlotTable(width, entries))

    def route(self, key: bytes):
        # Never called: `configure` returns a slots table, which the host
        # indexes itself (see wit/strategy.wit).
        raise RuntimeError("python-hrw routes through its slots table; route is not used")

    def route_batch(self, keys: bytes, ends):
        raise RuntimeError("python-hrw routes through its slots table; route-batch is not used")
