"""Benchmark of the store: COPY load, HNSW builds, exact vs fast fused search, certificates.

    fashion-search db start
    .venv/bin/python benchmarks/bench_search.py                 # 44,072 rows (the real catalogue's size)
    .venv/bin/python benchmarks/bench_search.py --rows 1000000  # the 1M scale point (hours on 2 cores)
    .venv/bin/python benchmarks/bench_search.py --realistic --rows 200000  # derived from real encodings
    .venv/bin/python benchmarks/bench_search.py --selectivity-sweep  # exact vs filtered HNSW, by filter
    .venv/bin/python benchmarks/bench_search.py --live --candidates 20 50 100 200  # the live index

Modes. Benchmark rows go to a separate database (``fashion_bench``) on the configured server;
the live catalogue (main database) is only ever read (--realistic, --live).
- synthetic (default): rows with realistic shapes:
  - dense: 512-d unit vectors around 300 "style" centres (real CLIP spaces are clustered;
    uniform random 512-d vectors have no neighbours worth finding);
  - sparse: 30,522-d (BERT vocabulary) with 20-200 non-zeros per row, term ids drawn from a
    Zipf-like distribution mixed with cluster-specific terms, L2-normalised like SPLADE's;
  - metadata: 20 colours x 5 genders (a colour + gender pair selects ~1 % of rows); usage
    with set shares (Formal 0.1 %, Sports 0.4 %, Ethnic 0.5 %, Smart Casual 1 %, Party 3 %,
    Travel 5 %, Home 20 %, Casual the rest), so unions of the rarest select 0.1-30 %.
  Queries are perturbed copies of random rows (dense: noise of norm --query-noise, default
  1.0, i.e. cosine ~0.7 to the source row) and 5-25 of their terms (sparse); seeded.
- --realistic: rows derived from the real encodings of the live index (benchmarks/realistic.py):
  row i from real product i % N, its dense vector perturbed (noise of norm --realistic-noise:
  cosine ~0.95 to the source), its sparse terms subsampled and reweighted, its metadata copied
  (real filters, real selectivities). Queries: the evaluation's text queries (spread over its
  families), encoded with the live version's models.
- --live: the live index itself, with those real encoded queries, for each --live-alphas.

The table, per filter (none; the gender + baseColour pair nearest 1 % of rows): the exact scan
(``exact=True``, the reference), then per --candidates value n two policies:
- plain: n candidates per index, no deepening, no exact fallback (budget = n,
  exact_max_rows = 0): the old fast mode, its certificate only reported;
- service: as the service runs it: deepened to --budget candidates per index when the first n
  cannot certify the answer, then the exact scan when the filtered rows are at most
  search.EXACT_MAX_ROWS; a selective filter goes to the exact scan at once (search.route_exact).
  A ranking by the sparse side alone (alpha 0) deepens only when a budget is asked for: with
  the default --budget it does not (as the API runs it), with another one it does.
Columns: p50/p95/p99 latency; recall@10 of the returned ids against the exact top 10;
threshold met: share of answers whose k-th score reached the threshold bound (exact IF each
HNSW list held its side's true top n); exact: share of answers that claim to be exact (proven:
every filtered row scored, or at alpha 0 the sparse postings' bound met); paths: shares answered fast / deepened / exact; exact violations:
answers that claim exact and whose top-10 ids differ from the exact top 10 (must be 0);
threshold misses: answers that met the threshold and still differ (an HNSW scan missed a row
that belonged in its list; the ones explained by a tie at the 10th score in brackets).

--selectivity-sweep (any mode) replaces the table with: filters of increasing selectivity
(0.1-30 %; synthetic: usage values and unions of the rarest, which hit each share exactly;
otherwise the real filter nearest each share), the exact scan's p50 against the plain policy's
(default candidates; "HNSW plans": how many queries' plans read the dense / sparse candidates
from the HNSW index, the planner sorting the filtered rows instead for the others), and where
search.route_exact sends each: where the crossover really is, against ROUTE_FACTOR.

--reuse keeps the bench index when its row count and mode (the rows' recipe) match.
Before the table (built or reused): the sizes of the version's table, HNSW indexes and sparse
postings; after a build, each step's time (the postings' too). --alpha takes several values.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from pgvector import SparseVector
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import realistic
from benchmarks.bench_db import use_bench_database
from benchmarks.realistic import Batch
from services import search
from services.catalog.schema import BY_NAME, METADATA_FIELDS, VALUE_FILTER_FIELDS
from services.store import hnsw, products
from services.store import index_versions as iv
from services.store.db import connect, server_versions

DIM, VOCAB = 512, 30522
COLOURS = [
    "Black",
    "White",
    "Blue",
    "Navy Blue",
    "Grey",
    "Red",
    "Green",
    "Brown",
    "Pink",
    "Purple",
    "Yellow",
    "Beige",
    "Olive",
    "Maroon",
    "Orange",
    "Silver",
    "Gold",
    "Teal",
    "Cream",
    "Khaki",
]
GENDERS = ["Men", "Women", "Boys", "Girls", "Unisex"]
ARTICLES = [
    "Tshirts",
    "Shirts",
    "Jackets",
    "Trousers",
    "Sweaters",
    "Dresses",
    "Sandals",
    "Sports Shoes",
    "Casual Shoes",
    "Handbags",
    "Boots",
    "Socks",
]
# Synthetic usage values and their exact shares of the rows (the last one takes the rest);
# the unions of the rarest select 0.1, 0.5, 1, 2, 5, 10 and 30 % of the rows.
USAGES = (
    ("Formal", 0.001),
    ("Sports", 0.004),
    ("Ethnic", 0.005),
    ("Smart Casual", 0.01),
    ("Party", 0.03),
    ("Travel", 0.05),
    ("Home", 0.2),
    ("Casual", None),
)
SWEEP_SHARES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.10, 0.30)
# The synthetic rows' recipe, recorded in the bench version's report (--reuse checks it);
# bump it when synth() changes. 2: usage shares.
SYNTHETIC_KEY = "synthetic/2"
PATHS = ("fast", "deepened", "exact")
WARM_UP = 20  # untimed queries before each timed run

Query = tuple[np.ndarray, SparseVector]


def _shares(n: int, shares: list[float], rng: np.random.Generator) -> np.ndarray:
    """``n`` labels 0..len(shares), label j on exactly int(shares[j] * n) rows (the last one
    on the rest), shuffled."""
    counts = [int(s * n) for s in shares]
    labels = np.repeat(np.arange(len(shares) + 1), counts + [n - sum(counts)])
    rng.shuffle(labels)
    return labels


def synth(n: int, seed: int = 7, centres: int = 300) -> Iterator[Batch]:
    rng = np.random.default_rng(seed)
    c_dense = rng.normal(size=(centres, DIM)).astype(np.float32)
    c_terms = rng.integers(1000, VOCAB, size=(centres, 40))
    zipf_p = 1.0 / np.arange(1, VOCAB - 999) ** 1.1
    zipf_p /= zipf_p.sum()
    cluster = rng.integers(0, centres, size=n)
    meta = np.random.default_rng(seed + 1)
    colour = meta.integers(0, len(COLOURS), size=n)
    gender = meta.integers(0, len(GENDERS), size=n)
    usage = _shares(n, [s for _, s in USAGES[:-1]], meta)
    for start in range(0, n, 20_000):
        end = min(n, start + 20_000)
        cl = cluster[start:end]
        dense = c_dense[cl] + 0.9 * rng.normal(size=(end - start, DIM)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        sparse = []
        for c in cl:
            nnz = int(rng.integers(20, 201))
            own = rng.choice(c_terms[c], size=min(nnz // 3, 40), replace=False)
            common = 1000 + rng.choice(VOCAB - 1000, size=nnz, p=zipf_p)
            ids = np.unique(np.concatenate([own, common]))[:nnz]
            w = rng.gamma(2.0, 0.5, size=len(ids)).astype(np.float32)
            w /= np.linalg.norm(w)
            sparse.append(SparseVector(dict(zip(ids.tolist(), w.tolist())), VOCAB))
        rows = [
            {
                "id": i,
                "gender": GENDERS[gender[i]],
                "masterCategory": "Apparel",
                "subCategory": "Topwear",
                "articleType": ARTICLES[int(cluster[i]) % len(ARTICLES)],
                "baseColour": COLOURS[colour[i]],
                "season": "Summer",
                "year": 2010 + i % 9,
                "usage": USAGES[usage[i]][0],
                "productDisplayName": f"Synthetic product {i}",
                "image": None,
            }
            for i in range(start, end)
        ]
        yield rows, dense, sparse


def queries(conn, version: iv.IndexVersion, count: int, noise: float, seed: int = 11):
    """``count`` queries, each made from a random row: its dense vector plus Gaussian noise
    of norm ``noise`` (1.0: cosine ~0.7 to its source row), re-normalised; 5-25 of its terms."""
    rng = np.random.default_rng(seed)
    n_rows = iv.row_count(conn, version.id)
    ids = sorted(int(i) for i in rng.choice(n_rows, size=min(count, n_rows), replace=False))
    out = []
    for pid in ids:
        d, s = search.stored_vectors(conn, pid, version)
        d = d + noise * rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM)
        d /= np.linalg.norm(d)
        idx, val = np.array(s.indices()), np.array(s.values(), dtype=np.float32)
        keep = rng.choice(len(idx), size=min(len(idx), int(rng.integers(5, 25))), replace=False)
        q = dict(zip(idx[keep].tolist(), val[keep].tolist()))
        norm = np.sqrt(sum(v * v for v in q.values()))
        out.append((d.astype(np.float32), SparseVector({k: v / norm for k, v in q.items()}, VOCAB)))
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


# --- what a run loads and queries --------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The rows a bench index is built from and the queries run against it."""

    mode: str
    key: str  # the rows' recipe, recorded in the version's report (--reuse needs the same)
    description: str
    dense_model: str
    dense_dim: int
    sparse_model: str
    sparse_dim: int
    batches: Callable[[int], Iterator[Batch]]  # rows -> batches of rows with ids 0..rows-1
    queries: Callable[[psycopg.Connection, iv.IndexVersion], list[Query]]


def synthetic_source(args) -> Source:
    return Source(
        mode="synthetic",
        key=SYNTHETIC_KEY,
        description=f"{args.rows:,} synthetic rows, {DIM}-d dense, {VOCAB}-d sparse (20-200 nnz)",
        dense_model="synthetic",
        dense_dim=DIM,
        sparse_model="synthetic",
        sparse_dim=VOCAB,
        batches=synth,
        queries=lambda conn, version: queries(conn, version, args.queries, args.query_noise),
    )


def realistic_source(args) -> Source:
    main = connect()
    try:
        cat = realistic.read_live(main)
    finally:
        main.close()
    v = cat.version

    def batches(n: int) -> Iterator[Batch]:
        return realistic.derive(cat, n, noise=args.realistic_noise)

    dense_cos, sparse_cos = realistic.closeness(cat, next(batches(min(args.rows, 2000))))
    return Source(
        mode="realistic",
        key=f"realistic/1:v{v.id}:{v.dense_model}+{v.sparse_model}:noise={args.realistic_noise}",
        description=(
            f"{args.rows:,} rows derived from live index v{v.id} ({len(cat.metadata):,} products, "
            f"{v.dense_model} {v.dense_dim}-d + {v.sparse_model} {v.sparse_dim}-d); derived row "
            f"vs its source: dense cosine {dense_cos:.3f}, sparse cosine {sparse_cos:.3f}; "
            f"{args.queries} evaluation text queries"
        ),
        dense_model=v.dense_model,
        dense_dim=v.dense_dim,
        sparse_model=v.sparse_model,
        sparse_dim=v.sparse_dim,
        batches=batches,
        queries=lambda conn, version: realistic.encoded_queries(v, cat.metadata, args.queries),
    )


def open_bench(args, source: Source) -> tuple[psycopg.Connection, iv.IndexVersion, list]:
    """The bench database's connection and its live version holding ``source``'s rows (built
    unless --reuse finds one of the same size and mode), with the load steps' timings."""
    url = use_bench_database(args.database).database_url
    conn = connect(url)
    pg, vec = server_versions(conn)
    print(f"# bench_search ({source.mode}): {source.description}, PostgreSQL {pg}, pgvector {vec}")

    live = iv.live_version(conn) if args.reuse else None
    if (
        live is not None
        and live.row_count == args.rows
        and live.report.get("mode") == source.key
        and search.dense_index(live) == args.dense_index
    ):
        hnsw.build_indexes(conn, live.id, maintenance_work_mem=args.maintenance_work_mem)
        return conn, iv.get_version(conn, live.id), []
    iv.drop_all_versions_and_products(conn, truncate=True)  # fashion_bench only
    vid = iv.create_version(
        conn,
        dense_model=source.dense_model,
        dense_dim=source.dense_dim,
        sparse_model=source.sparse_model,
        sparse_dim=source.sparse_dim,
    )
    gen_s = copy_p = copy_e = 0.0
    t0 = time.perf_counter()
    for rows, dense, sparse in source.batches(args.rows):
        t1 = time.perf_counter()
        gen_s += t1 - t0
        products.upsert_products(conn, rows, source=source.mode)
        t2 = time.perf_counter()
        iv.load_embeddings(conn, vid, [r["id"] for r in rows], dense, sparse)
        t3 = time.perf_counter()
        copy_p += t2 - t1
        copy_e += t3 - t2
        t0 = time.perf_counter()
    dense_m, dense_ef = args.dense_graph or (args.m, args.ef_construction)
    timings = hnsw.build_indexes(
        conn,
        vid,
        m=args.m,
        ef_construction=args.ef_construction,
        maintenance_work_mem=args.maintenance_work_mem,
        dense_index=args.dense_index,
        dense_graph=(dense_m, dense_ef),
    )
    iv.mark_ready(conn, vid, {"benchmark": True, "mode": source.key})
    iv.swap_live(conn, vid)
    graph = f"(m={args.m}, ef_c={args.ef_construction})"
    lists = hnsw.ivf_lists(args.rows)
    dense_build = (
        f"IVFFlat (lists={lists}, probes={hnsw.ivf_probes(lists)})"
        if args.dense_index == "ivfflat"
        else f"HNSW (m={dense_m}, ef_c={dense_ef}, {args.dense_index})"
    )
    load_rows = [
        (f"generate rows ({source.mode})", f"{args.rows / gen_s:,.0f} rows/s", f"{gen_s:.1f} s"),
        (
            "COPY products (binary, staged upsert)",
            f"{args.rows / copy_p:,.0f} rows/s",
            f"{copy_p:.1f} s",
        ),
        (
            "COPY embeddings (binary, staged upsert)",
            f"{args.rows / copy_e:,.0f} rows/s",
            f"{copy_e:.1f} s",
        ),
        ("rows into hierarchy order (CLUSTER)", "", f"{timings['cluster']:.1f} s"),
        (f"{dense_build} dense build", "", f"{timings['dense']:.1f} s"),
        (f"HNSW sparse build {graph}", "", f"{timings['sparse']:.1f} s"),
        (
            "sparse postings build (table, impact B-tree, VACUUM)",
            "",
            f"{timings['postings']:.1f} s",
        ),
        (
            f"B-tree builds ({len(METADATA_FIELDS)} filter columns)",
            "",
            f"{timings['filters']:.1f} s",
        ),
    ]
    return conn, iv.get_version(conn, vid), load_rows


# --- filters of a version's rows -----------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    kind: str  # "value", "union" (a field's rarest values) or "pair" (gender + baseColour)
    label: str
    filters: search.Filters
    rows: int


def filter_pool(conn: psycopg.Connection, version: iv.IndexVersion) -> list[Pick]:
    """Real filters of ``version``'s rows and the rows each passes: every value of every
    value-filter field, the unions of a field's 2-8 rarest values, every gender + baseColour
    pair."""
    t = sql.Identifier(version.table)
    pool = []
    for f in VALUE_FILTER_FIELDS:
        counts = conn.execute(
            sql.SQL(
                "SELECT {c}, count(*) FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 2, 1"
            ).format(c=sql.Identifier(f.column), t=t)
        ).fetchall()
        for value, rows in counts:
            pool.append(Pick("value", f"{f.name}={value}", _filters({f.name: value}), rows))
        for j in range(2, min(8, len(counts) - 1) + 1):
            values = [value for value, _ in counts[:j]]
            label = f"{f.name} in {{{', '.join(values)}}}"
            rows = sum(r for _, r in counts[:j])
            pool.append(Pick("union", label, _filters({f.name: values}), rows))
    gender, colour = BY_NAME["gender"], BY_NAME["baseColour"]
    for g, c, rows in conn.execute(
        sql.SQL("SELECT {g}, {c}, count(*) FROM {t} GROUP BY 1, 2 ORDER BY 1, 2").format(
            g=sql.Identifier(gender.column), c=sql.Identifier(colour.column), t=t
        )
    ).fetchall():
        if g is not None and c is not None:
            label = f"{gender.name}={g} + {colour.name}={c}"
            pool.append(Pick("pair", label, _filters({gender.name: g, colour.name: c}), rows))
    return pool


def _filters(mapping: dict) -> search.Filters:
    return search.Filters.from_mapping(mapping)


def nearest(pool: list[Pick], rows: float, kinds: tuple[str, ...] = ()) -> Pick:
    """The filter of ``pool`` (of ``kinds``, default all) passing the nearest to ``rows`` rows
    (by ratio)."""
    return min(
        (p for p in pool if not kinds or p.kind in kinds),
        key=lambda p: abs(math.log(p.rows / rows)),
    )


# --- measuring -----------------------------------------------------------------------------


def timed(
    conn: psycopg.Connection, version: iv.IndexVersion, qs: list[Query], **config
) -> tuple[list[float], list[search.Ranking]]:
    """Latency (ms) and ranking of each query, top 10, ``config`` being SearchQuery's other
    fields; after WARM_UP untimed queries (an exact scan run before may have evicted the
    HNSW pages a policy reads)."""

    def one(dense: np.ndarray, sparse: SparseVector) -> search.Ranking:
        query = search.SearchQuery(dense, sparse, k=10, **config)
        return search.certified_search(conn, query, version)

    for dense, sparse in qs[:WARM_UP]:
        one(dense, sparse)
    lat, out = [], []
    for dense, sparse in qs:
        t = time.perf_counter()
        out.append(one(dense, sparse))
        lat.append((time.perf_counter() - t) * 1000)
    return lat, out


def latency(lat: list[float]) -> str:
    return f"{statistics.median(lat):.1f} | {pct(lat, 95):.1f} | {pct(lat, 99):.1f}"


def _ids(ranking: search.Ranking) -> set[int]:
    return {h.product_id for h in ranking.hits}


def recall(got: list[search.Ranking], exact: list[search.Ranking]) -> float:
    return float(
        np.mean([len(_ids(g) & _ids(e)) / max(1, len(e.hits)) for g, e in zip(got, exact)])
    )


def threshold_share(got: list[search.Ranking]) -> float:
    return sum(r.certificate.threshold_met for r in got) / len(got)


def quality(got: list[search.Ranking], exact: list[search.Ranking]) -> str:
    """The recall, threshold met, exact, paths, exact violations and threshold misses cells
    of ``got`` against ``exact``."""
    violations = misses = ties = 0
    for g, e in zip(got, exact):
        wrong = _ids(g) != _ids(e)
        violations += g.certificate.exact and wrong
        if g.certificate.threshold_met and wrong:
            misses += 1
            ties += len(g.hits) == len(e.hits) and all(
                abs(a.score - b.score) <= 1e-6 for a, b in zip(g.hits, e.hits)
            )
    paths = "/".join(
        f"{100 * sum(r.certificate.path == p for r in got) / len(got):.0f}" for p in PATHS
    )
    return (
        f"{recall(got, exact):.3f} | {threshold_share(got):.0%} | "
        f"{sum(r.certificate.exact for r in got) / len(got):.0%} | {paths} | {violations} | "
        f"{misses}{f' ({ties} ties)' if ties else ''}"
    )


def policies(
    candidates: int, budget: int, ef_search: int | None = None
) -> tuple[tuple[str, dict], ...]:
    """(name, SearchQuery fields) of the two fast policies at ``candidates`` per index (and
    ``ef_search``, None: the service's default)."""
    ef = {"ef_search": ef_search} if ef_search else {}
    tag = f" (ef {ef_search})" if ef_search else ""
    return (
        (
            "plain" + tag,
            {"candidates": candidates, "budget": candidates, "exact_max_rows": 0, **ef},
        ),
        # The service as the API runs it: the default budget is left unset (a sparse-only
        # ranking then does not deepen); another budget is asked for, as a request may.
        (
            "service" + tag,
            {
                "candidates": candidates,
                "budget": None if budget == search.DEFAULT_BUDGET else budget,
            }
            | ef,
        ),
    )


def compare(conn, version: iv.IndexVersion, qs: list[Query], alphas: list[float], args) -> None:
    """The table: exact vs the two policies, per alpha, filter and candidates."""
    total = iv.row_count(conn, version.id)
    pair = nearest(filter_pool(conn, version), 0.01 * total, ("pair",))
    filters = (
        ("none", search.Filters()),
        (f"{pair.label} ({pair.rows / total:.1%})", pair.filters),
    )
    print(
        "\n| alpha | filter | policy | candidates/index | budget/index | p50 ms | p95 ms | p99 ms "
        "| recall@10 vs exact | threshold met | exact | paths % fast/deepened/exact "
        "| exact violations | threshold misses |"
    )
    print("|---" * 14 + "|")
    # The exact references first, so that no policy is timed right after a run of exact scans.
    refs = {
        (alpha, fname): timed(conn, version, qs, alpha=alpha, filters=f, exact=True)
        for alpha in alphas
        for fname, f in filters
    }
    for alpha in alphas:
        for fname, f in filters:
            lat, exact = refs[alpha, fname]
            head = f"| {alpha} | {fname}"
            print(f"{head} | exact | all rows | - | {latency(lat)} | {quality(exact, exact)} |")
            for cand, ef in itertools.product(args.candidates, args.ef_search):
                for name, config in policies(cand, args.budget, ef):
                    lat, got = timed(conn, version, qs, alpha=alpha, filters=f, **config)
                    budget = config["budget"] or search.DEFAULT_BUDGET
                    budget = budget if budget > cand else "-"
                    print(
                        f"{head} | {name} | {cand} | {budget} | {latency(lat)} "
                        f"| {quality(got, exact)} |"
                    )


def hnsw_plans(conn, version: iv.IndexVersion, qs: list[Query], **config) -> str:
    """How many of the queries' plans read the fast stage's dense / sparse candidates from
    the side's HNSW index (otherwise the planner sorts the filtered rows: exact lists)."""
    used = {"fast_d": 0, "fast_s": 0}
    for dense, sparse in qs:
        query = search.SearchQuery(dense, sparse, k=10, **config)
        cte, seen = None, False
        for line in search.explain_search(conn, query, version, analyze=False):
            text = line.strip()
            if text.startswith("CTE "):
                cte = text[4:]
                seen = False
            elif cte in used and not seen and "_hnsw" in text:
                used[cte] += 1
                seen = True
    return f"{used['fast_d']}/{len(qs)}, {used['fast_s']}/{len(qs)}"


def sweep(conn, version: iv.IndexVersion, qs: list[Query], alpha: float) -> None:
    """Exact vs filtered HNSW scans (plain policy, default candidates) by filter selectivity,
    and where route_exact sends each filter."""
    total = iv.row_count(conn, version.id)
    n = search.DEFAULT_CANDIDATES
    pool = filter_pool(conn, version)
    r_max = math.sqrt(search.ROUTE_FACTOR * n * total)
    print(
        f"\nSelectivity sweep, alpha {alpha}, {n} candidates/index: route_exact sends a filter "
        f"passing r of {total:,} rows to the exact scan while r^2 <= ROUTE_FACTOR "
        f"({search.ROUTE_FACTOR:g}) * {n} * {total:,}, i.e. r <= {r_max:,.0f} "
        f"({r_max / total:.2%}). HNSW plans: queries whose plan reads the dense, sparse "
        "candidates from the HNSW index (the others sort the filtered rows). Faster: by p50, "
        "~ within 10 %."
    )
    print(
        "\n| target | filter | rows (estimated; share) | exact p50 ms | HNSW p50 ms | HNSW plans "
        "| HNSW recall@10 | HNSW threshold met | faster | route_exact sends to |"
    )
    print("|---" * 10 + "|")
    for share in SWEEP_SHARES:
        pick = nearest(pool, share * total)
        est = search.estimated_rows(conn, version, pick.filters)
        ex_lat, exact = timed(conn, version, qs, alpha=alpha, filters=pick.filters, exact=True)
        config = {"alpha": alpha, "filters": pick.filters, "candidates": n, "budget": n}
        config["exact_max_rows"] = 0
        lat, got = timed(conn, version, qs, **config)
        ex_p50, p50 = statistics.median(ex_lat), statistics.median(lat)
        faster = "~" if abs(ex_p50 - p50) <= 0.1 * min(ex_p50, p50) else "exact"
        faster = "HNSW" if faster == "exact" and p50 < ex_p50 else faster
        routed = "exact" if search.route_exact(est, total, n) else "HNSW"
        print(
            f"| {share:.1%} | {pick.label} | {pick.rows:,} ({est:,}; {pick.rows / total:.2%}) "
            f"| {ex_p50:.1f} | {p50:.1f} | {hnsw_plans(conn, version, qs, **config)} "
            f"| {recall(got, exact):.3f} | {threshold_share(got):.0%} | {faster} "
            f"| {routed}{'' if faster in (routed, '~') else ' (mismatch)'} |"
        )


def measure(conn, version: iv.IndexVersion, qs: list[Query], alphas: list[float], args) -> None:
    if args.selectivity_sweep:
        sweep(conn, version, qs, alphas[0])
    else:
        compare(conn, version, qs, alphas, args)


def run(args) -> None:
    source = realistic_source(args) if args.realistic else synthetic_source(args)
    conn, version, load_rows = open_bench(args, source)
    qs = source.queries(conn, version)
    if load_rows:
        print("\n| load step | throughput | time |\n|---|---|---|")
        for r in load_rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print_sizes(conn, version)
    measure(conn, version, qs, args.alpha, args)
    if args.explain:
        qd, qsv = qs[0]
        query = search.SearchQuery(qd, qsv, args.alpha[0], 10, candidates=args.candidates[-1])
        for line in search.explain_search(conn, query, version):
            print("    " + line)
    conn.close()


def print_sizes(conn: psycopg.Connection, version: iv.IndexVersion) -> None:
    """The version's table and index sizes (the dense and sparse indexes, the postings)."""
    rows = conn.execute(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
        "WHERE c.relname LIKE %s AND c.relkind IN ('r', 'i') ORDER BY c.relname",
        (version.table + "%",),
    ).fetchall()
    print("\n| relation | size |\n|---|---:|")
    for name, size in rows:
        if name.endswith(("_hnsw", "_ivf", "_postings", "_impact")) or name == version.table:
            print(f"| {name} | {size / 2**20:,.1f} MiB |")


def run_live(args) -> None:
    """The tables on the LIVE index with real query encodings (the evaluation's text queries)."""
    conn = connect()
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    qs = realistic.encoded_queries(version, iv.product_metadata(conn, version.id), args.queries)
    print(
        f"# bench_search (live): index v{version.id} ({version.row_count:,} rows, "
        f"{version.dense_model} + {version.sparse_model}), {len(qs)} evaluation text queries"
    )
    measure(conn, version, qs, args.live_alphas, args)
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=44_072)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument(
        "--alpha", type=float, nargs="+", default=[0.5], help="alphas to measure (e.g. 0 0.5 1)"
    )
    p.add_argument(
        "--query-noise",
        type=float,
        default=1.0,
        help="norm of the noise added to a row's dense vector to make a query "
        "(1.0: cosine ~0.7 to its source; 4.8: nearly random queries)",
    )
    p.add_argument("--candidates", type=int, nargs="+", default=[40, 100, 200, 400])
    p.add_argument(
        "--budget",
        type=int,
        default=search.DEFAULT_BUDGET,
        help="candidates per index when the service policy deepens",
    )
    p.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=[0],
        help="hnsw.ef_search values to measure each policy at (0: the service's default, "
        "max(40, min(candidates, 1000)))",
    )
    p.add_argument("--m", type=int, default=hnsw.HNSW_M)
    p.add_argument("--ef-construction", type=int, default=hnsw.HNSW_EF_CONSTRUCTION)
    p.add_argument(
        "--dense-graph",
        type=int,
        nargs=2,
        metavar=("M", "EF_CONSTRUCTION"),
        help="the dense graph's own options (FASHION_DENSE_HNSW_M / _EF_CONSTRUCTION); "
        "default: --m and --ef-construction, as the sparse graph",
    )
    p.add_argument(
        "--maintenance-work-mem",
        default="1GB",
        help="for the HNSW builds (use e.g. 8GB at 1M rows)",
    )
    p.add_argument(
        "--dense-index",
        choices=sorted(hnsw.DENSE_INDEXES),
        default="vector",
        help="the dense index: an HNSW graph of the float32 column (vector) or of its halfvec "
        "copy, or IVFFlat lists (hnsw.ivf_lists, searched with hnsw.ivf_probes)",
    )
    p.add_argument(
        "--reuse", action="store_true", help="reuse a live bench index of the same size and mode"
    )
    p.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of one fast query")
    p.add_argument(
        "--realistic",
        action="store_true",
        help="rows derived from the live index's real encodings, real encoded queries",
    )
    p.add_argument(
        "--realistic-noise",
        type=float,
        default=0.33,
        help="norm of the noise added to a real dense vector (0.33: cosine ~0.95 to it)",
    )
    p.add_argument(
        "--selectivity-sweep",
        action="store_true",
        help="exact vs filtered HNSW by filter selectivity, against route_exact",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="measure on the live index with real encoded queries",
    )
    p.add_argument("--live-alphas", type=float, nargs="+", default=[0.3, 0.7])
    p.add_argument(
        "--database",
        default="fashion_bench",
        help="the benchmark database to (re)build (never the main one)",
    )
    args = p.parse_args()
    if not args.database.startswith("fashion_bench"):
        raise SystemExit("--database: a benchmark database's name starts with fashion_bench")
    run_live(args) if args.live else run(args)


if __name__ == "__main__":
    main()
