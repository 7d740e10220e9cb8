"""``/v1/suggest``: type-ahead completions from the live index's vocabulary."""

from __future__ import annotations

from typing import Annotated, ClassVar

import anyio.to_thread
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from services.api import suggest as suggest_service
from services.api.runtime import Runtime
from services.api.schemas import DocumentedOperation, ErrorBody, error_responses
from services.api.suggest import DEFAULT_LIMIT, MAX_QUERY_CHARS, Suggestions
from services.search.suggest import (
    LONG_WORD,
    MAX_SUGGESTIONS,
    MIN_PHRASE_PRODUCTS,
    TYPO_AFTER,
)

_DESCRIPTION = (
    "Up to `limit` completions of the text being typed, from the live index's vocabulary: "
    "article types, colours, brands, sub-categories, usages (`kind`: the field's name, "
    "its search filter key) and phrases of 1 to 3 words that at least "
    f'{MIN_PHRASE_PRODUCTS} product names contain (`kind` "phrase"). A suggestion matches '
    'when the text is a prefix of it, or of it from any of its words on ("jac" finds '
    '"Jackets" and "Denim Jacket"), ignoring case; earlier words must be complete, the '
    "last is completed. Exact matches come first, by `count` (products that match) then "
    f"text; when fewer than `limit` match and the last word has more than {TYPO_AFTER} "
    "characters, matches with a typo in the last word follow (`typo: true`; edit distance 1, "
    f"2 from {LONG_WORD} characters on). A blank `q` answers no suggestions."
)


class SuggestController(Controller):
    path = "/v1/suggest"
    tags: ClassVar[list[str]] = ["search"]

    @get(
        "/",
        summary="Type-ahead suggestions",
        description=_DESCRIPTION,
        operation_class=DocumentedOperation,
        responses={
            **error_responses(400, 503),
            422: ResponseSpec(
                data_container=ErrorBody,
                description=f"`q` longer than {MAX_QUERY_CHARS} characters or with a NUL "
                f"character, `limit` outside 1..{MAX_SUGGESTIONS}.",
                generate_examples=False,
            ),
        },
    )
    async def suggest(
        self,
        runtime: NamedDependency[Runtime],
        q: Annotated[
            str,
            QueryParameter(
                description=f"The text typed so far: at most {MAX_QUERY_CHARS} characters "
                "(422 over), no NUL character (422); blank (whitespace or invisible "
                "characters only): no suggestions.",
                schema_extra={"maxLength": MAX_QUERY_CHARS, "pattern": r"^[^\x00]*$"},
            ),
        ],
        limit: Annotated[
            int,
            QueryParameter(
                description=f"Suggestions, 1..{MAX_SUGGESTIONS} (422 outside).",
                schema_extra={"minimum": 1, "maximum": MAX_SUGGESTIONS},
            ),
        ] = DEFAULT_LIMIT,
    ) -> Suggestions:
        suggest_service.check_request(q, limit)
        # Built once per live version: in a worker thread (a database read and a build);
        # afterwards answered from memory, microseconds, on the event loop.
        built = suggest_service.ready(runtime)
        if built is None:
            built = await anyio.to_thread.run_sync(suggest_service.load, runtime)
        return suggest_service.answer(built, q, limit)
