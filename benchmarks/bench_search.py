"""Benchmark of the store: COPY load, HNSW builds, exact vs fast fused search, recall vs exact.

    fashion-search db start
    .venv/bin/python benchmarks/bench_search.py                 # 44,072 rows (the real catalogue's size)
    .venv/bin/python benchmarks/bench_search.py --rows 1000000  # the 1M scale point (hours on 2 cores)
    .venv/bin/python benchmarks/bench_search.py --live --candidates 20 50 100 200  # the live index

Synthetic rows with realistic shapes, in a separate database (``fashion_bench``) on the
configured server, so the live catalogue is never touched:
- dense: 512-d unit vectors around 300 "style" centres (real CLIP spaces are clustered;
  uniform random 512-d vectors have no neighbours worth finding);
- sparse: 30,522-d (BERT vocabulary) with 20-200 non-zeros per row, term ids drawn from a
  Zipf-like distribution mixed with cluster-specific terms, L2-normalised like SPLADE's;
- metadata: 20 colours x 5 genders x ... so that "colour + gender" selects ~1-2% of rows.
Queries are perturbed copies of random rows (dense: noise of norm --query-noise, default
1.0, i.e. cosine ~0.7 to the source row) and 5-25 of their terms (sparse); seeded.
Recall@10 of fast mode is measured against the exact fused ranking of the same statement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pgvector import SparseVector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.queries import TEXT_FAMILIES, generate_queries
from services.catalog.schema import METADATA_FIELDS
from services.config import get_settings
from services.store import embedded, migrate, products, search
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


def synth(n: int, seed: int = 7, centres: int = 300):
    rng = np.random.default_rng(seed)
    c_dense = rng.normal(size=(centres, DIM)).astype(np.float32)
    c_terms = rng.integers(1000, VOCAB, size=(centres, 40))
    zipf_p = 1.0 / np.arange(1, VOCAB - 999) ** 1.1
    zipf_p /= zipf_p.sum()
    cluster = rng.integers(0, centres, size=n)
    meta = np.random.default_rng(seed + 1)
    colour = meta.integers(0, len(COLOURS), size=n)
    gender = meta.integers(0, len(GENDERS), size=n)
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
        yield start, end, dense, sparse, cl, colour[start:end], gender[start:end]


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


def run(args) -> None:
    s = get_settings()
    if s.embedded:
        embedded.start(s)
        embedded.ensure_database(s, "fashion_bench")
    url = s.database_url_for("fashion_bench")
    migrate.upgrade("head", url=url)
    conn = connect(url)
    pg, vec = server_versions(conn)
    print(
        f"# bench_search: {args.rows:,} synthetic rows, {DIM}-d dense, {VOCAB}-d sparse "
        f"(20-200 nnz), PostgreSQL {pg}, pgvector {vec}"
    )

    vid = None
    if args.reuse:
        live = iv.live_version(conn)
        vid = live.id if live is not None and live.row_count == args.rows else None
    load_rows = []
    if vid is None:
        iv.drop_all_versions_and_products(conn, truncate=True)  # fashion_bench only
        vid = iv.create_version(
            conn, dense_model="synthetic", dense_dim=DIM, sparse_model="synthetic", sparse_dim=VOCAB
        )
        gen_s = copy_p = copy_e = 0.0
        t0 = time.perf_counter()
        for start, end, dense, sparse, cl, colour, gender in synth(args.rows):
            rows = [
                {
                    "id": i,
                    "gender": GENDERS[g],
                    "masterCategory": "Apparel",
                    "subCategory": "Topwear",
                    "articleType": ARTICLES[int(c) % len(ARTICLES)],
                    "baseColour": COLOURS[col],
                    "season": "Summer",
                    "year": 2010 + i % 9,
                    "usage": "Casual",
                    "productDisplayName": f"Synthetic product {i}",
                    "image": None,
                }
                for i, c, col, g in zip(range(start, end), cl, colour, gender)
            ]
            t1 = time.perf_counter()
            gen_s += t1 - t0
            products.upsert_products(conn, rows, source="synthetic")
            t2 = time.perf_counter()
            iv.load_embeddings(conn, vid, list(range(start, end)), dense, sparse)
            t3 = time.perf_counter()
            copy_p += t2 - t1
            copy_e += t3 - t2
            t0 = time.perf_counter()
        timings = iv.build_indexes(
            conn,
            vid,
            m=args.m,
            ef_construction=args.ef_construction,
            maintenance_work_mem=args.maintenance_work_mem,
        )
        iv.mark_ready(conn, vid, {"benchmark": True})
        iv.swap_live(conn, vid)
        load_rows = [
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
            (
                f"HNSW dense build (m={args.m}, ef_c={args.ef_construction})",
                "",
                f"{timings['dense']:.1f} s",
            ),
            (
                f"HNSW sparse build (m={args.m}, ef_c={args.ef_construction})",
                "",
                f"{timings['sparse']:.1f} s",
            ),
            (
                f"B-tree builds ({len(METADATA_FIELDS)} filter columns)",
                "",
                f"{timings['filters']:.1f} s",
            ),
        ]
    else:
        iv.build_indexes(conn, vid, maintenance_work_mem=args.maintenance_work_mem)  # idempotent
    version = iv.get_version(conn, vid)
    qs = queries(conn, version, args.queries, args.query_noise)
    colour_filter = search.Filters.from_mapping({"baseColour": "Red", "gender": "Women"})
    sel = search.count_matching(conn, version, colour_filter) / iv.row_count(conn, version.id)

    if load_rows:
        print("\n| load step | throughput | time |\n|---|---|---|")
        for r in load_rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(
        "\n| mode | filter | candidates/index | ef_search | p50 ms | p95 ms | p99 ms | recall@10 vs exact |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fname, filters in (
        ("none", search.Filters()),
        (f"colour+gender ({sel:.1%})", colour_filter),
    ):
        exact_ids, lat = [], []
        for qd, qsv in qs:
            t = time.perf_counter()
            hits = search.fused_search(
                conn, search.SearchQuery(qd, qsv, args.alpha, 10, filters, exact=True), version
            )
            lat.append((time.perf_counter() - t) * 1000)
            exact_ids.append([h.product_id for h in hits])
        print(
            f"| exact | {fname} | all rows | - | {statistics.median(lat):.1f} | {pct(lat, 95):.1f} | {pct(lat, 99):.1f} | 1.000 |"
        )
        for cand in args.candidates:
            lat, rec = [], []
            for (qd, qsv), ex in zip(qs, exact_ids):
                t = time.perf_counter()
                hits = search.fused_search(
                    conn,
                    search.SearchQuery(qd, qsv, args.alpha, 10, filters, candidates=cand),
                    version,
                )
                lat.append((time.perf_counter() - t) * 1000)
                got = {h.product_id for h in hits}
                rec.append(len(got & set(ex)) / max(1, len(ex)))
            print(
                f"| fast | {fname} | {cand} | {max(40, cand)} | {statistics.median(lat):.1f} | "
                f"{pct(lat, 95):.1f} | {pct(lat, 99):.1f} | {np.mean(rec):.3f} |"
            )
    if args.explain:
        qd, qsv = qs[0]
        query = search.SearchQuery(qd, qsv, args.alpha, 10, candidates=args.candidates[-1])
        for line in search.explain_search(conn, query, version):
            print("    " + line)
    conn.close()


def run_live(args) -> None:
    """Fast vs exact on the LIVE index with real query encodings (the evaluation's text queries)."""
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    conn = connect()
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    products = iv.product_metadata(conn, version.id)
    qs = generate_queries(products, seed=0, families=TEXT_FAMILIES).queries[: args.queries]
    dense = load_clip(version.dense_model).encode_texts([q.text for q in qs])
    sparse = load_splade(version.sparse_model).encode([q.text for q in qs])
    print(
        f"# bench_search --live: index v{version.id} ({version.row_count:,} rows, "
        f"{version.dense_model} + {version.sparse_model}), {len(qs)} evaluation text queries"
    )
    print(
        "\n| alpha | candidates/index | p50 ms | p95 ms | recall@10 vs exact |\n|---|---|---|---|---|"
    )
    for alpha in args.live_alphas:
        exact = [
            [
                h.product_id
                for h in search.fused_search(
                    conn, search.SearchQuery(d, s, alpha, 10, exact=True), version
                )
            ]
            for d, s in zip(dense, sparse)
        ]
        for cand in args.candidates:
            lat, rec = [], []
            for d, s, ex in zip(dense, sparse, exact):
                t = time.perf_counter()
                hits = search.fused_search(
                    conn, search.SearchQuery(d, s, alpha, 10, candidates=cand), version
                )
                lat.append((time.perf_counter() - t) * 1000)
                rec.append(len({h.product_id for h in hits} & set(ex)) / max(1, len(ex)))
            print(
                f"| {alpha} | {cand} | {statistics.median(lat):.1f} | {pct(lat, 95):.1f} | "
                f"{np.mean(rec):.3f} |"
            )
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=44_072)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument(
        "--query-noise",
        type=float,
        default=1.0,
        help="norm of the noise added to a row's dense vector to make a query "
        "(1.0: cosine ~0.7 to its source; 4.8: nearly random queries)",
    )
    p.add_argument("--candidates", type=int, nargs="+", default=[40, 100, 200, 400])
    p.add_argument("--m", type=int, default=iv.HNSW_M)
    p.add_argument("--ef-construction", type=int, default=iv.HNSW_EF_CONSTRUCTION)
    p.add_argument(
        "--maintenance-work-mem",
        default="1GB",
        help="for the HNSW builds (use e.g. 8GB at 1M rows)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse a live bench index of the same size")
    p.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of one fast query")
    p.add_argument(
        "--live",
        action="store_true",
        help="measure fast vs exact on the live index with real encoded queries",
    )
    p.add_argument("--live-alphas", type=float, nargs="+", default=[0.3, 0.7])
    args = p.parse_args()
    run_live(args) if args.live else run(args)


if __name__ == "__main__":
    main()
