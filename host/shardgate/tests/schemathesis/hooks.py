"""Schemathesis hooks of host/shardgate/tests/schemathesis.rs.

Rules of the OpenAPI documents that JSON Schema cannot express, applied to
the generated cases. Each one is stated in the operation's description and
checked by the Rust tests named here.
"""

import schemathesis
from hypothesis import strategies as st


@schemathesis.hook
def filter_case(context, case):
    operation = context.operation
    if operation is None:
        return True
    # A write takes If-Match OR If-None-Match, not both (400 `header
    # If-Match: cannot be combined with If-None-Match on a write`): two
    # optional headers that exclude each other. Checked by the key-API
    # suite (host/testkit/src/key_api) against node and proxy.
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
