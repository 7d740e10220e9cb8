"""Checking catalogue rows before they are indexed: bad rows are set aside with a reason.

Nothing is dropped silently: every row is either in ``report.valid`` or in
``report.rejected`` as ``Rejected(id, reason)``, and ``counts_by_reason()`` sums them for
run reports. A rejected row never stops the run.

Checks, in order (the first failure is the row's reason):
- ``missing column`` / ``extra column``: the row's fields are not exactly the schema's;
- ``invalid id``: id missing or not an integer; ``duplicate id``: seen earlier in this run;
- ``empty name``: productDisplayName missing or blank;
- ``invalid field``: a closed field (gender, masterCategory, season, usage) outside the
  real dataset's vocabulary, a required text field empty, a non-integer or out-of-range year;
- ``missing image`` / ``undecodable image``: no image bytes, or bytes that are not an image.

Open text fields (subCategory, articleType, baseColour) are only required to be text: the
real catalogue has 140+ article types and 46 colours, and a valid hub row must not be
rejected because the offline vocabulary is smaller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from services.catalog.vocabulary import (
    COLUMNS,
    GENDERS,
    MASTER_CATEGORIES,
    NULLABLE_FIELDS,
    SEASONS,
    TEXT_COLUMNS,
    USAGES,
    YEAR_RANGE,
)
from services.encoders.images import decode_image

REASONS = (
    "missing column",
    "extra column",
    "invalid id",
    "duplicate id",
    "empty name",
    "invalid field",
    "missing image",
    "undecodable image",
)
_CLOSED_FIELDS = {
    "gender": GENDERS,
    "masterCategory": MASTER_CATEGORIES,
    "season": SEASONS,
    "usage": USAGES,
}
_TEXT_FIELDS = TEXT_COLUMNS


@dataclass(frozen=True)
class Rejected:
    """A row set aside: its id (None when it has none) and why, e.g. "duplicate id"."""

    id: object
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ValidationReport:
    """The outcome of validating a batch of rows."""

    valid: list[dict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def counts_by_reason(self) -> dict[str, int]:
        """Rejections per reason, most frequent first."""
        return dict(Counter(r.reason for r in self.rejected).most_common())

    @property
    def total(self) -> int:
        return len(self.valid) + len(self.rejected)

    def summary(self) -> str:
        """One line for logs and reports, e.g. "998 valid, 2 rejected (duplicate id: 2)"."""
        counts = ", ".join(f"{reason}: {n}" for reason, n in self.counts_by_reason().items())
        return f"{len(self.valid)} valid, {len(self.rejected)} rejected" + (
            f" ({counts})" if counts else ""
        )


def _decode_check(data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else the decoder's message."""
    try:
        decode_image(data)
    # Decoders raise many types (OSError, SyntaxError, ValueError, DecompressionBombError...);
    # any of them is a property of the row and must not stop the run.
    except Exception as exc:  # noqa: BLE001
        return str(exc) or type(exc).__name__
    return None


def check_row(row: dict, seen_ids: set | None = None) -> Rejected | None:
    """The reason ``row`` must be set aside, or None when it is valid.

    ``seen_ids`` (updated for valid rows) detects duplicates across calls.
    """
    row_id = row.get("id")
    missing = [name for name in COLUMNS if name not in row]
    if missing:
        return Rejected(row_id, "missing column", ", ".join(missing))
    extra = sorted(name for name in row if name not in COLUMNS)
    if extra:
        return Rejected(row_id, "extra column", ", ".join(extra))
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        return Rejected(row_id, "invalid id", f"id {row_id!r} is not an integer")
    if seen_ids is not None and row_id in seen_ids:
        return Rejected(row_id, "duplicate id")
    name = row["productDisplayName"]
    if not isinstance(name, str) or not name.strip():
        return Rejected(row_id, "empty name")
    for column in _TEXT_FIELDS:
        value = row[column]
        if value is None and column in NULLABLE_FIELDS:
            continue
        if not isinstance(value, str) or not value.strip():
            return Rejected(row_id, "invalid field", f"{column}={value!r}")
        allowed = _CLOSED_FIELDS.get(column)
        if allowed is not None and value not in allowed:
            return Rejected(row_id, "invalid field", f"{column}={value!r} not in {list(allowed)}")
    year = row["year"]
    if year is not None:
        if not isinstance(year, int) or isinstance(year, bool):
            return Rejected(row_id, "invalid field", f"year={year!r} is not an integer")
        if not YEAR_RANGE[0] - 10 <= year <= YEAR_RANGE[1] + 10:
            return Rejected(row_id, "invalid field", f"year={year} out of range")
    image = row["image"]
    if not image:
        return Rejected(row_id, "missing image")
    if not isinstance(image, (bytes, bytearray, memoryview)):
        return Rejected(row_id, "undecodable image", f"image is {type(image).__name__}")
    problem = _decode_check(bytes(image))
    if problem:
        return Rejected(row_id, "undecodable image", problem)
    if seen_ids is not None:
        seen_ids.add(row_id)
    return None


def iter_valid(
    rows: Iterable[dict], rejected: list[Rejected], seen_ids: set | None = None
) -> Iterator[dict]:
    """Stream the valid rows of ``rows``; append each rejection to ``rejected``.

    For pipelines that must not hold every row in memory (use with write_shards).
    """
    seen_ids = set() if seen_ids is None else seen_ids
    for row in rows:
        problem = check_row(row, seen_ids)
        if problem is None:
            yield row
        else:
            rejected.append(problem)


def validate_rows(rows: Iterable[dict]) -> ValidationReport:
    """Split ``rows`` into valid rows and Rejected(id, reason) records (kept in order)."""
    report = ValidationReport()
    report.valid.extend(iter_valid(rows, report.rejected))
    return report
