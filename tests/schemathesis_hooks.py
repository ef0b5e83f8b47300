"""Schemathesis hooks for tests/platform/schemathesis.rs (named in
tests/schemathesis.toml).

Schemathesis reuses a generated `Idempotency-Key` value with another body, and
the contract answers that with 422 `/problems/idempotency-key-reused`: the
request is valid by the schema, and refused for the key's history, not for
its content. Only that refusal is dropped, by its problem type, so a 422 for a
bound the document does not state still fails the run.
"""

import json

import schemathesis


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202" or response.status_code != 422:
        return True
    try:
        problem = json.loads(response.content)
    except (TypeError, ValueError):
        return True
    return problem.get("type") != "/problems/idempotency-key-reused"
