"""Schemathesis hooks for tests/platform/schemathesis.rs (loaded through
SCHEMATHESIS_HOOKS).

Schemathesis sends a generated `Idempotency-Key` value again, with another
body or with other headers, and the contract answers by the key's history,
not by the request's content: the same key with another body is 422
`/problems/idempotency-key-reused`, and the same key with the same body
repeats the first answer (marked `Idempotent-Replayed: true`) without
running the request, whatever its other headers say. Only those answers are
let through, on the two checks that judge a request's content (a valid
request refused, an invalid one accepted); a 422 for a bound the document
does not state, or an invalid header accepted on a request that really ran,
still fails the run.
"""

import json

import schemathesis

CONTENT_CHECKS = {"ST201", "ST202"}


def _replayed(response):
    values = response.headers.get("idempotent-replayed") or []
    if isinstance(values, str):
        values = [values]
    return "true" in values


def _key_reused(response):
    if response.status_code != 422:
        return False
    try:
        problem = json.loads(response.content)
    except (TypeError, ValueError):
        return False
    return isinstance(problem, dict) and problem.get("type") == "/problems/idempotency-key-reused"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) not in CONTENT_CHECKS:
        return True
    return not (_replayed(response) or _key_reused(response))
