"""Schemathesis hooks for tests/fuzz/schemathesis.sh.

A blocking query (`index=N`) with nothing new past N waits for its `wait`, 60 s by default
and up to 300 s: that is the API working, not a hang, but thousands of generated cases
cannot each sit for a minute. Where a case's `wait` would be accepted (absent, empty or a
valid duration) it is cut to 100 ms, so the blocking path still runs and the run's
`--request-timeout` still catches a real hang. Invalid `wait` values are left alone: they
must be refused with 400 before anything blocks.

`map_case` is the hook every phase applies (coverage, fuzzing and stateful alike).
"""

import re

import schemathesis

# The grammar of api::parse_duration: seconds as an integer, or numbers with units.
DURATION = re.compile(r"^\s*(\+?[0-9]+|(([0-9]+\.?[0-9]*|\.[0-9]+)(ms|s|m|h))+)\s*$")


@schemathesis.hook
def map_case(context, case):
    query = case.query
    if isinstance(query, dict) and "index" in query:
        wait = query.get("wait")
        if wait is None or wait == "" or (isinstance(wait, str) and DURATION.match(wait)):
            query["wait"] = "100ms"
    return case
