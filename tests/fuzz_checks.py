"""The conformance checks of the fuzzing (tests/test_fuzz.py, benchmarks/bench_fuzz.py): every
check of schemathesis's ``--checks all`` (4.32.5) that a stateless run can fail on, and the
ones that cannot, kept so that a future stateful run or an auth scheme arms them.

``negative_data_rejection`` runs through :func:`rejects_mutated_data`: schemathesis 4.32.5
marks some multipart bodies (those with an image part, whose content comes from the media
type strategies the fuzzing registers) as negative although its own record of the case holds
no mutation and describes it as a "Positive test case"; such a form is valid and the API
rightly answers 200. Measured (``bench_fuzz.py --requests 1200 --per-operation 300``): 5 of
92 negative forms with an image were "accepted", every one with an empty mutation list; 0 of
48 without an image. Every case that carries a mutation is checked, JSON and multipart alike.
"""

from __future__ import annotations

import collections

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

UNMUTATED = "positive test case"  # schemathesis's description of a case with no mutation
# Cases left out of negative_data_rejection, by operation (bench_fuzz.py prints them).
SKIPPED: collections.Counter = collections.Counter()


def is_unmutated(case) -> bool:
    """True for a case schemathesis generated in negative mode without any mutation."""
    data = case.meta.phase.data if case.meta is not None else None
    description = (getattr(data, "description", None) or "").strip().lower()
    return data is not None and description == UNMUTATED and not getattr(data, "mutations", ())


def rejects_mutated_data(ctx, response, case):
    """``negative_data_rejection`` on every case that carries a mutation (module docstring)."""
    if is_unmutated(case):
        SKIPPED[f"{case.operation.label} {case.media_type or ''}".strip()] += 1
        return None
    return negative_data_rejection(ctx, response, case)


rejects_mutated_data.__name__ = "negative_data_rejection"  # reported under its own name

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    positive_data_acceptance,  # schema-valid input is answered 2xx (or 404, 503)
    rejects_mutated_data,  # schema-invalid input is answered 4xx
    unsupported_method,  # a method the path does not declare: 405 with Allow
    allow_header_conformance,  # OPTIONS' Allow lists exactly the declared methods
    missing_required_header,  # vacuous: no operation declares a required header
    ignored_auth,  # vacuous: no operation declares security
    use_after_free,  # vacuous: no DELETE, and stateless cases have no parent case
    ensure_resource_availability,  # vacuous: no POST creates a resource
]
