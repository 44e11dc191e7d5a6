"""Schemathesis hooks of host/shardgate/tests/schemathesis.rs.

Rules of the OpenAPI documents that JSON Schema cannot express, applied to
the generated cases. Each one is stated in the operation's description and
checked by the Rust tests named here.
"""

import base64
import json

import schemathesis
from schemathesis.generation.modes import GenerationMode
from hypothesis import strategies as st


@schemathesis.hook
def filter_case(context, case):
    operation = context.operation
    if operation is None:
        return True
    # A write takes If-Match OR If-None-Match, not both (400 `header
    # If-Match: cannot be combined with If-None-Match on a write`): two
    # optional headers that exclude each other. Checked by the key-API
    # suite (host/testkit/src/key_api, `Suite::conditions`) against node and
    # proxy.
    if operation.path == "/v1/keys/{key}" and operation.method.upper() in ("PUT", "DELETE"):
        names = {name.lower() for name in (case.headers or {})}
        if "if-match" in names and "if-none-match" in names:
            return False
    return True


# `If-Match` / `If-None-Match` values: the documents give them the format
# `entity-tag-list` and its regular expression as `pattern`. Schemathesis
# narrows header values to letters and digits in its coverage phase and
# cannot meet a pattern that needs `*` or `"`, so it is given the strategy
# of the pattern itself.
ENTITY_TAG_LIST = r'^(\*|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)$'

schemathesis.openapi.format(
    "entity-tag-list",
    st.from_regex(ENTITY_TAG_LIST, fullmatch=True),
)


def _integers_without_fraction(value):
    """`value` with every integral float (`8.0`) written as an integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
        return int(value)
    if isinstance(value, list):
        return [_integers_without_fraction(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers_without_fraction(v) for k, v in value.items()}
    return value


@schemathesis.hook
def map_case(context, case):
    # JSON Schema counts 8.0 as an integer; meta's JSON bodies (serde) take
    # an integer only without a fraction or exponent, and say so in the
    # document ("Numbers" in info.description): `"replicas": 8.0` is a 400
    # `malformed JSON body: invalid type: floating point`. Bodies of the key
    # API are opaque bytes and stay as generated.
    operation = context.operation
    if operation is not None and not operation.path.startswith("/v1/keys") and isinstance(case.body, (dict, list)):
        case.body = _integers_without_fraction(case.body)
    # The TTL parameters of the key API exclude each other, as the
    # operations' descriptions say (host/api/src/ttl.rs; the key-API suite's
    # `redis_style_operations` checks the 400s against node and proxy):
    # PUT takes one of `ttl`, `ttl_ms`, `keep_ttl`; PATCH takes `incr`
    # alone, or one of `ttl`, `ttl_ms`, `persist` (with `get`). Generated
    # queries (every phase, the coverage phase included) are cut to that.
    if operation is not None and operation.path == "/v1/keys/{key}" and case.query:
        method = operation.method.upper()
        if method == "PATCH" and "incr" in case.query:
            case.query = {"incr": case.query["incr"]}
        elif method in ("PUT", "PATCH"):
            exclusive = ["ttl", "ttl_ms", "keep_ttl" if method == "PUT" else "persist"]
            present = [name for name in exclusive if name in case.query]
            for name in present[1:]:
                del case.query[name]
    # A PATCH needs one operation (400 `PATCH needs ttl, ttl_ms,
    # persist=true or incr`, stated in the description and the 400
    # response): every parameter is optional on its own, which JSON Schema
    # cannot tie together, so a positive case without one gets
    # `persist=true` (the key-API suite's `redis_style_operations` checks
    # the 400 against node and proxy).
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if operation is not None and operation.path == "/v1/keys/{key}" and operation.method.upper() == "PATCH" and positive:
        query = dict(case.query or {})
        if not any(name in query for name in ("incr", "ttl", "ttl_ms", "persist")):
            query["persist"] = "true"
            case.query = query
    return case


# The smallest replicated state (`MetaState`, host/meta/src/state.rs).
EMPTY_META_STATE = base64.b64encode(
    json.dumps({"nodes": {}, "strategies": {}, "routing": None, "history": [], "epoch": 0, "next_join_seq": 0}).encode()
).decode()


def _leader(log_id):
    leader = log_id["leader_id"]
    return (leader["term"], leader["node_id"])


def _raft_message_a_leader_could_send(path, body):
    """A positive Raft RPC body made consistent as `host/meta/src/raft_check.rs`
    requires (the rules in the operations' descriptions)."""
    if path == "/raft/append" and isinstance(body, dict):
        body["vote"]["committed"] = True
        vote = body["vote"]["leader_id"]
        sender = (vote["term"], vote["node_id"])
        for key in ("prev_log_id", "leader_commit"):
            if body.get(key) is not None and _leader(body[key]) > sender:
                body[key]["leader_id"] = dict(vote)
        prev = body.get("prev_log_id")
        index = 0 if prev is None else prev["index"] + 1
        for entry in body["entries"]:
            entry["log_id"]["index"] = index
            entry["log_id"]["leader_id"] = dict(vote)
            index += 1
    if path == "/raft/snapshot" and isinstance(body, list) and len(body) == 3:
        body[0]["committed"] = True
        vote = body[0]["leader_id"]
        sender = (vote["term"], vote["node_id"])
        meta = body[1]
        last = meta.get("last_log_id")
        if last is not None and _leader(last) > sender:
            last["leader_id"] = dict(vote)
        membership_log_id = meta["last_membership"].get("log_id")
        if membership_log_id is not None and (last is None or (_leader(membership_log_id), membership_log_id["index"]) > (_leader(last), last["index"])):
            meta["last_membership"]["log_id"] = None
        body[2] = EMPTY_META_STATE
    return body


@schemathesis.hook("map_case")
def raft_rpcs_a_leader_could_send(context, case):
    operation = context.operation
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if operation is not None and positive and operation.path.startswith("/raft/"):
        case.body = _raft_message_a_leader_could_send(operation.path, case.body)
    return case
