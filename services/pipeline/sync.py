"""Incremental catalogue sync: bring the live index version up to date with the catalogue source
in place, encoding only what changed.

``sync_catalog`` (the ``fashion-search sync`` command and the hourly ``fashion_catalog_sync``
DAG):

1. **read + hash**: reads the source (the reindex's sources: "offline", "hub", a local Parquet
   file or folder), validates every row (the same rules and report as a full build) and hashes
   each valid row (:func:`services.catalog.schema.content_hash`: id, name, metadata, photo
   bytes). Each live product's hash is the one its vectors were loaded with (the version
   table's ``content_hash``), else the product's; rows stored before hashes existed get theirs
   computed from the stored row and kept, the first time a sync sees them. Then:
   **new** = valid in the source, not in the live version; **changed** = in both, other hash;
   **removed** = in the live version, not among the source's valid rows; **unchanged** = the rest.
2. **encode**: only new + changed rows, with the LIVE version's models and its
   ``dense_image_weight`` (:mod:`services.pipeline.encode`, as the full build). When the
   configured models differ from the live version's, the sync refuses (:class:`SyncRefused`):
   a model change needs a full rebuild (``fashion-search index``), never vectors of two models
   in one index.
3. **write**, in ONE transaction: upsert the new + changed products (``products``, with their
   hashes), upsert their vectors into the live version's table (the HNSW indexes take the
   inserts; the filter columns and the hash are copied from ``products``), delete the removed.
   Removed products that are gone from the source are deleted from ``products`` for good: every
   version's table loses them by ``ON DELETE CASCADE``, the previous version included, so a
   rollback never serves a product the catalogue dropped (its ``row_count`` is refreshed and the
   report says so). A removed product whose source row is now *rejected* (say, a broken photo)
   only leaves the live version, as a full build would leave it out; its ``products`` row stays.
   Evaluation results reference versions, not products, and keep what they measured.
4. **checks**, inside that transaction, before it commits: the live table's rows equal the
   source's valid rows, both HNSW indexes exist, no removed product is left, and (when anything
   was written) the full build's search checks on the written products and a sample of the rest
   (self-retrieval, name queries, fast-vs-exact recall@10). A failure rolls everything back:
   searches never see a half-applied or failing sync, and they never wait for it either
   (readers do not block on the sync's row locks).

The build lock (:mod:`services.pipeline.run_lock`) is held throughout, so a sync never
interleaves with a reindex's create/load/swap. Every sync is recorded in ``catalog_syncs``
(status, counts, the whole report as JSON), refused and failed ones too.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import psycopg

from services.catalog.reader import iter_rows
from services.catalog.schema import content_hash
from services.catalog.sources import resolve_source
from services.catalog.validate import iter_valid
from services.config import get_settings
from services.pipeline.checks import RECALL_QUERIES, CheckFailed, search_checks
from services.pipeline.encode import encode_dense, encode_sparse, product_dense_vectors
from services.pipeline.run_lock import build_lock
from services.store import catalog_syncs as store
from services.store import index_versions as iv
from services.store.db import connect
from services.store.products import iter_products, upsert_products

log = logging.getLogger(__name__)

# Most ids of each kind listed in a report (the counts are always complete).
REPORT_IDS = 1000
# Rows encoded (and held as vectors) per encoder call; the write phase takes them all at once.
ENCODE_CHUNK = 1024
# Default guard: a sync that would remove more than this share of the live version refuses
# (a truncated source file must not empty the storefront); --max-removed-fraction 1 allows it.
MAX_REMOVED_FRACTION = 0.5
DEFAULT_MIN_RECALL = 0.9
BACKFILL_CHUNK = 500


class SyncRefused(RuntimeError):
    """The sync did not start changing anything, for a reason the user must act on (no live
    version, models changed, too many removals)."""


class NoLiveVersion(SyncRefused):
    """No index version is live: there is nothing to sync into (a fresh install)."""


@dataclass
class _Diff:
    new: list[dict]
    changed: list[dict]
    removed: list[int]  # gone from the source: deleted from products (cascade)
    withdrawn: list[int]  # their source row is rejected now: out of the live version only
    unchanged: int
    valid: int
    read: int
    rejected: list


def _connect() -> psycopg.Connection:
    conn = connect(get_settings().database_url)
    conn.autocommit = True  # every write below is in an explicit transaction
    return conn


def _ids(ids, limit: int = REPORT_IDS) -> list[int]:
    return sorted(int(i) for i in ids)[:limit]


def _models_problem(live: iv.IndexVersion) -> str | None:
    s = get_settings()
    differ = [
        f"{what} {configured!r} (FASHION_{what.upper()}_MODEL) but the live version v{live.id} "
        f"was built with {built!r}"
        for what, configured, built in (
            ("dense", s.dense_model, live.dense_model),
            ("sparse", s.sparse_model, live.sparse_model),
        )
        if configured != built
    ]
    if not differ:
        return None
    return (
        "the configured models differ from the live version's: "
        + "; ".join(differ)
        + ". A sync encodes with the live version's models only and never mixes two models in "
        "one index: run a full rebuild for a model change (fashion-search index, or the "
        "fashion_reindex DAG), or set the models back to the live version's."
    )


def _backfill_hashes(conn: psycopg.Connection, hashes: dict[int, str | None]) -> int:
    """Compute and store the content hash of live products stored before hashes existed
    (from their stored rows); updates ``hashes``. Returns how many were computed."""
    missing = sorted(pid for pid, h in hashes.items() if h is None)
    for start in range(0, len(missing), BACKFILL_CHUNK):
        chunk = missing[start : start + BACKFILL_CHUNK]
        computed = {
            int(row["id"]): content_hash(row)
            for row in iter_products(conn, ids=chunk, with_image=True)
        }
        with conn.transaction():
            store.set_product_hashes(conn, computed)
        hashes.update(computed)
    if missing:
        log.info("computed the content hash of %d products stored before hashes", len(missing))
    return len(missing)


def _diff(paths, limit: int | None, live: dict[int, str | None]) -> _Diff:
    rejected: list = []
    new: list[dict] = []
    changed: list[dict] = []
    seen: set[int] = set()
    unchanged = 0
    for row in iter_valid(iter_rows(paths, limit=limit), rejected):
        pid = int(row["id"])
        seen.add(pid)
        if pid not in live:
            new.append(row)
        elif live[pid] != content_hash(row):
            changed.append(row)
        else:
            unchanged += 1
    rejected_ids = {r.id for r in rejected if isinstance(r.id, int)}
    gone = [pid for pid in live if pid not in seen]
    return _Diff(
        new=new,
        changed=changed,
        removed=sorted(pid for pid in gone if pid not in rejected_ids),
        withdrawn=sorted(pid for pid in gone if pid in rejected_ids),
        unchanged=unchanged,
        valid=len(seen),
        read=len(seen) + len(rejected),
        rejected=rejected,
    )


def _encode(rows: list[dict], live: iv.IndexVersion) -> tuple[list, list]:
    """(dense vectors, sparse vectors) of ``rows`` with the live version's models, in chunks."""
    dense, sparse = [], []
    for start in range(0, len(rows), ENCODE_CHUNK):
        chunk = rows[start : start + ENCODE_CHUNK]
        image, name = encode_dense(chunk, live.dense_model)
        dense.append(product_dense_vectors(image, name, live.dense_image_weight))
        sparse.extend(encode_sparse(chunk, live.sparse_model))
    return dense, sparse


def _check(
    conn: psycopg.Connection,
    live: iv.IndexVersion,
    diff: _Diff,
    written: list[dict],
    *,
    min_recall: float,
    seed: int,
) -> dict:
    """The checks of the synced live version, in the sync's transaction; raises CheckFailed."""
    report: dict = {"expected_rows": diff.valid}
    problems = []
    rows = iv.row_count(conn, live.id)
    report["rows"] = rows
    if rows != diff.valid:
        problems.append(f"row count {rows} != {diff.valid} valid catalogue rows")
    if not iv.has_indexes(conn, live.id):
        problems.append("HNSW indexes or sparse postings are missing")
    left = store.present_ids(conn, live.id, diff.removed + diff.withdrawn)
    if left:
        problems.append(f"{len(left)} removed products are still in the live version: {left[:10]}")
    if written:
        # The written products first (they are what changed), then a sample of the rest.
        rng = random.Random(seed)
        picks = [(int(r["id"]), r["productDisplayName"]) for r in written]
        rng.shuffle(picks)
        picks = picks[: RECALL_QUERIES // 2]
        chosen = {pid for pid, _ in picks}
        others = [p for p in iv.product_names(conn, live.id) if p[0] not in chosen]
        picks += rng.sample(others, min(RECALL_QUERIES - len(picks), len(others)))
        found, search_problems = search_checks(conn, live, picks, min_recall=min_recall)
        report.update(found)
        problems += search_problems
    report["problems"] = problems
    if problems:
        raise CheckFailed(
            f"sync of index version {live.id} failed its checks (rolled back): "
            + "; ".join(problems)
        )
    return report


def sync_catalog(
    source: str = "offline",
    size: int = 10_000,
    limit: int | None = None,
    *,
    wait_for_lock: bool = True,
    max_removed_fraction: float = MAX_REMOVED_FRACTION,
    min_recall: float = DEFAULT_MIN_RECALL,
    seed: int = 0,
) -> dict:
    """Sync the live index version with ``source`` in place (see the module docstring).

    Returns the report: ``read, valid, rejected`` (+ ``rejected_by_reason``), ``new, changed,
    removed, unchanged, encoded`` (counts), ``new_ids, changed_ids, removed_ids, encoded_ids``
    (at most ``REPORT_IDS`` each, sorted), ``seconds`` per phase (``read_hash, encode, write,
    checks, commit, total``), ``checks``, ``row_counts`` (versions whose tables changed), and
    ``sync_id`` (its ``catalog_syncs`` row). Raises :class:`SyncRefused` (nothing changed),
    :class:`~services.pipeline.checks.CheckFailed` (rolled back), or
    :class:`~services.pipeline.run_lock.BuildLockBusy`.
    """
    label = source if source in ("offline", "hub") else "local"
    report: dict = {
        "source": source,
        "size": size,
        "limit": limit,
        "status": "running",
        "seconds": {},
    }
    seconds = report["seconds"]
    t_all = time.perf_counter()
    with _connect() as conn, build_lock(wait=wait_for_lock):
        live = iv.live_version(conn)
        sync_id = store.start_sync(conn, source, live.id if live else None)
        report["sync_id"] = sync_id
        status, error = "failed", None
        try:
            if live is None:
                raise NoLiveVersion(
                    "no index version is live: build one first (fashion-search index)"
                )
            report.update(
                version=live.id,
                dense_model=live.dense_model,
                sparse_model=live.sparse_model,
                dense_image_weight=live.dense_image_weight,
            )
            problem = _models_problem(live)
            if problem:
                raise SyncRefused(problem)
            # (stored as a PostgreSQL real: compared to float32 precision)
            if abs(live.dense_image_weight - get_settings().dense_image_weight) > 1e-6:
                report["note"] = (
                    f"the live version's dense_image_weight {live.dense_image_weight:g} is used; "
                    f"FASHION_DENSE_IMAGE_WEIGHT ({get_settings().dense_image_weight:g}) "
                    "applies to new versions (a full rebuild)"
                )

            # 1. read + hash
            t = time.perf_counter()
            paths = resolve_source(source, size=size, limit=limit)
            hashes = store.version_hashes(conn, live.id)
            report["hashes_backfilled"] = _backfill_hashes(conn, hashes)
            diff = _diff(paths, limit, hashes)
            seconds["read_hash"] = time.perf_counter() - t
            counts: dict[str, int] = {}
            for r in diff.rejected:
                counts[r.reason] = counts.get(r.reason, 0) + 1
            removed = diff.removed + diff.withdrawn
            written = diff.new + diff.changed
            report.update(
                read=diff.read,
                valid=diff.valid,
                rejected=len(diff.rejected),
                rejected_by_reason=counts,
                rejected_examples=[str(r) for r in diff.rejected[:20]],
                new=len(diff.new),
                changed=len(diff.changed),
                removed=len(removed),
                unchanged=diff.unchanged,
                encoded=len(written),
                new_ids=_ids(r["id"] for r in diff.new),
                changed_ids=_ids(r["id"] for r in diff.changed),
                removed_ids=_ids(diff.removed),
                withdrawn_ids=_ids(diff.withdrawn),
                encoded_ids=_ids(r["id"] for r in written),
            )
            log.info(
                "sync of v%d: %d read, %d valid, %d new, %d changed, %d removed, %d unchanged",
                live.id,
                diff.read,
                diff.valid,
                len(diff.new),
                len(diff.changed),
                len(removed),
                diff.unchanged,
            )
            if diff.valid == 0:
                raise SyncRefused(f"no valid rows in the source {source!r}: nothing synced")
            if hashes and len(removed) > max_removed_fraction * len(hashes):
                raise SyncRefused(
                    f"the sync would remove {len(removed)} of the live version's {len(hashes)} "
                    f"products (more than {max_removed_fraction:.0%}); check the source, or "
                    "allow it with --max-removed-fraction 1 (or rebuild: fashion-search index)"
                )

            # 2. encode (new + changed only), outside any transaction
            t = time.perf_counter()
            dense, sparse = _encode(written, live) if written else ([], [])
            seconds["encode"] = time.perf_counter() - t

            # 3. write + 4. checks: one transaction
            # Versions serving or able to serve (a rollback target): their row counts follow.
            before = {
                vid: n
                for vid, status, n in store.versions_with_tables(conn)
                if status in ("live", "previous", "ready")
            }
            with conn.transaction():
                t = time.perf_counter()
                if written:
                    upsert_products(conn, written, source=label, commit=False)
                    offset = 0
                    for block in dense:
                        ids = [int(r["id"]) for r in written[offset : offset + len(block)]]
                        iv.load_embeddings(
                            conn, live.id, ids, block, sparse[offset : offset + len(block)]
                        )
                        offset += len(block)
                store.delete_from_version(conn, live.id, diff.withdrawn)
                store.delete_products(conn, diff.removed)
                # Deletes from products cascade into every version's table.
                touched = [live.id, *(v for v in before if v != live.id and diff.removed)]
                report["row_counts"] = {
                    vid: {"before": before.get(vid), "after": n}
                    for vid, n in store.refresh_row_counts(conn, touched).items()
                }
                seconds["write"] = time.perf_counter() - t

                t = time.perf_counter()
                report["checks"] = _check(
                    conn, live, diff, written, min_recall=min_recall, seed=seed
                )
                seconds["checks"] = time.perf_counter() - t
                t = time.perf_counter()
            seconds["commit"] = time.perf_counter() - t
            status = "succeeded"
        except SyncRefused as exc:
            status, error = "refused", str(exc)
            raise
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            seconds["total"] = time.perf_counter() - t_all
            report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
            report["status"] = status
            if error:
                report["error"] = error
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                store.finish_sync(conn, sync_id, status, report, error)
            except psycopg.Error:
                log.exception("could not record the end of sync %d", sync_id)
    return report


def format_report(report: dict) -> str:
    """The sync report as a few lines of text (the command prints it)."""
    r = report
    head = f"sync #{r.get('sync_id')} of live version v{r.get('version')}: {r.get('status')}"
    rejected = f" {r['rejected_by_reason']}" if r.get("rejected") else ""
    validation = f"validation: {r.get('read')} read, {r.get('valid')} valid, "
    validation += f"{r.get('rejected')} rejected{rejected}"
    counts = f"products: {r.get('new')} new, {r.get('changed')} changed, "
    counts += f"{r.get('removed')} removed, {r.get('unchanged')} unchanged; "
    counts += f"encoded {r.get('encoded')}"
    lines = [head, validation, counts]
    for key in ("encoded_ids", "removed_ids"):
        ids = report.get(key) or []
        if ids:
            more = f" ... ({report.get(key.split('_')[0])} in all)" if len(ids) > 10 else ""
            lines.append(f"{key}: {ids[:10]}{more}")
    checks = report.get("checks") or {}
    if checks:
        line = f"checks: rows {checks.get('rows')}/{checks.get('expected_rows')}"
        if "recall_at_10_fast_vs_exact" in checks:
            line += (
                f", self-retrieval {checks['smoke_self_retrieval']}, recall@10 fast vs exact "
                f"{checks['recall_at_10_fast_vs_exact']:.3f} ({checks['recall_queries']} queries)"
            )
        lines.append(line)
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    seconds = report.get("seconds") or {}
    lines.append(
        "seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items() if v is not None)
    )
    return "\n".join(lines)
