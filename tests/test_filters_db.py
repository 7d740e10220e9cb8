"""Every filter of the search contract against the real PostgreSQL + pgvector (issue #26).

A small live version of 96 products whose metadata is known here: each value filter field
takes four values in a fixed pattern (so any two of them match a known half of the catalogue),
the catalogue years run 2010..2016. For every filter field the tests assert the EXACT set of
product ids a search returns (k above the matching count, so every match comes back) against
the set computed in Python from the rows, on every path of the fused statement (exact scan,
the service's routing, the filtered HNSW scans), and the filtered count and the selectivity
estimate the routing reads.

A multi-value (OR) filter is asked with its values in both orders: an implementation that
kept only the first (or the last) value of a list returns half the expected set in one of
them. Both ends of the year range are checked on their own and together (``year_max`` is the
end no other test reaches).
"""

from __future__ import annotations

import pytest
from synthetic import build_version, unit_vectors

from services import search
from services.catalog.schema import BY_COLUMN, BY_NAME, RANGE_FILTER_FIELDS, VALUE_FILTER_FIELDS
from services.store import index_versions as iv
from services.store import products
from services.store.db import connect

N, DIM, VOCAB = 96, 32, 400

# Field (dataset name) -> its four values; product i takes VALUES[field][(i // STRIDE[field]) % 4]
# (different strides: the fields vary independently of each other).
VALUES = {
    "gender": ("Men", "Women", "Boys", "Girls"),
    "masterCategory": ("Apparel", "Accessories", "Footwear", "Personal Care"),
    "subCategory": ("Topwear", "Bottomwear", "Shoes", "Bags"),
    "articleType": ("Tshirts", "Shirts", "Jackets", "Dresses"),
    "baseColour": ("Red", "Navy Blue", "Black", "Green"),
    "season": ("Summer", "Fall", "Winter", "Spring"),
    "usage": ("Casual", "Formal", "Sports", "Ethnic"),
    "brand": ("Nike", "Peter England", "Puma", "Roadster"),
}
STRIDE = {
    "gender": 1,
    "masterCategory": 2,
    "subCategory": 3,
    "articleType": 5,
    "baseColour": 7,
    "season": 11,
    "usage": 13,
    "brand": 4,
}
YEARS = range(2010, 2017)  # product i: 2010 + i % 7

# The three ways the statement can answer a filtered query: the exact scan; the service's
# routing (a catalogue this small is always routed to the exact scan); the filtered HNSW
# scans (exact_max_rows=0 turns routing and the exact fallback off).
PATHS = {
    "exact": {"exact": True},
    "routed": {},
    "hnsw": {"exact_max_rows": 0},
}


def _value(field: str, i: int) -> str:
    return VALUES[field][(i // STRIDE[field]) % 4]


def _rows() -> list[dict]:
    rows = []
    for i in range(N):
        row = {f: _value(f, i) for f in VALUES if f != "brand"}
        # The brand is derived from the display name ("<brand> <gender> ..."), as in production.
        row["productDisplayName"] = f"{_value('brand', i)} {row['gender']} {row['articleType']} {i}"
        row.update(id=i, year=YEARS[0] + i % len(YEARS), image=b"\x89PNG\r\n\x1a\nxx")
        rows.append(row)
    return rows


def _vectors(seed: int = 26):
    return unit_vectors(N, DIM, VOCAB, nnz=10, low=0.05, seed=seed)


@pytest.fixture(scope="module")
def catalogue(settings):
    """A live version of the N products in this module's database: (connection, version,
    metadata rows as the version holds them, dense vectors, sparse vectors)."""
    conn = connect(settings.database_url)
    try:
        products.upsert_products(conn, _rows(), source="test-filters")
        dense, sparse = _vectors()
        vid = build_version(conn, range(N), dense, sparse, {"test": "filters"})
        version = iv.swap_live(conn, vid)
        meta = iv.product_metadata(conn, vid)
        conn.commit()
        # The metadata went in as written (brand derived from the name): the oracle below
        # reads the same values the database filters.
        assert [{f: m[f] for f in VALUES} for m in meta] == [
            {f: _value(f, i) for f in VALUES} for i in range(N)
        ]
        yield conn, version, meta, dense, sparse
    finally:
        conn.close()


def _expected(meta: list[dict], mapping: dict) -> set[int]:
    """The ids of the products that pass ``mapping`` (the request's filter object), computed
    here from the rows: OR within a field, AND across fields, both year bounds inclusive.
    A key may be a field's dataset name or its column."""
    out = set()
    for m in meta:
        ok = True
        for key, want in mapping.items():
            if key == "year_min":
                ok &= m["year"] >= want
            elif key == "year_max":
                ok &= m["year"] <= want
            else:
                name = BY_COLUMN[key].name if key in BY_COLUMN else key
                ok &= m[name] in ([want] if isinstance(want, str) else want)
        if ok:
            out.add(int(m["id"]))
    return out


def _search_ids(conn, version, dense, sparse, mapping: dict, path: str, q: int = 0) -> list[int]:
    """The ids a search with the filter object ``mapping`` returns on ``path`` (k = MAX_K)."""
    f = search.Filters.from_mapping(mapping)
    ranking = search.certified_search(
        conn,
        search.SearchQuery(dense[q], sparse[q], 0.5, search.MAX_K, filters=f, **PATHS[path]),
        version,
    )
    conn.commit()
    if path != "hnsw":
        assert ranking.certificate.path == "exact", ranking.certificate
    elif ranking.certificate.estimated_rows:  # (no row passes: nothing to scan, "exact")
        assert ranking.certificate.path != "exact" and not ranking.certificate.routed
    ids = [h.product_id for h in ranking.hits]
    assert len(ids) == len(set(ids))
    return ids


def _check(catalogue, mapping: dict, path: str) -> set[int]:
    """Search, count and estimate with ``mapping``; each must agree with the rows."""
    conn, version, meta, dense, sparse = catalogue
    expected = _expected(meta, mapping)
    assert len(expected) < search.MAX_K  # every match comes back: the set is comparable
    for q in (0, 17):
        got = _search_ids(conn, version, dense, sparse, mapping, path, q)
        assert set(got) == expected, (mapping, path, sorted(set(got) ^ expected))
    f = search.Filters.from_mapping(mapping)
    assert search.count_matching(conn, version, f) == len(expected), mapping
    if len(f.values) + len(f.ranges) == 1:  # one column: the estimate is exact
        assert search.estimated_rows(conn, version, f) == len(expected), mapping
    conn.commit()
    return expected


def test_the_fixture_covers_every_filter_field_of_the_schema():
    """A filter field added to the schema without a case here fails this test."""
    assert {f.name for f in VALUE_FILTER_FIELDS} == set(VALUES)
    assert [f.name for f in RANGE_FILTER_FIELDS] == ["year"]
    assert all(BY_NAME[name].filter == "any" for name in VALUES)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("field", VALUES)
def test_a_multi_value_filter_matches_any_of_its_values_in_either_order(catalogue, field, path):
    _, _, meta, _, _ = catalogue
    a, b, c = VALUES[field][0], VALUES[field][2], VALUES[field][3]
    only_a = _check(catalogue, {field: a}, path)
    only_b = _check(catalogue, {field: [b]}, path)
    # The cases have teeth: each value alone matches a non-empty part of the union, and
    # the union is not the whole catalogue.
    assert only_a and only_b and not only_a & only_b
    for values in ([a, b], [b, a]):
        assert _check(catalogue, {field: values}, path) == only_a | only_b, values
    three = _check(catalogue, {field: [c, b, a]}, path)
    assert three == only_a | only_b | _expected(meta, {field: c}) and len(three) < N
    # A value no product has neither adds nor removes anything, wherever it stands.
    for values in (["Ultraviolet", a], [a, "Ultraviolet"]):
        assert _check(catalogue, {field: values}, path) == only_a


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "bounds",
    [
        {"year_max": 2012},
        {"year_min": 2014},
        {"year_min": 2011, "year_max": 2013},
        {"year_min": 2013, "year_max": 2013},
        {"year_max": 2010},
        {"year_min": 2016},
        {"year_max": 2009},
        {"year_min": 2017},
    ],
    ids=lambda b: "-".join(f"{k[5:]}{v}" for k, v in b.items()),
)
def test_year_bounds_are_inclusive_at_both_ends(catalogue, bounds, path):
    _, _, meta, _, _ = catalogue
    expected = _check(catalogue, bounds, path)
    low, high = bounds.get("year_min", 0), bounds.get("year_max", 9999)
    years = {m["year"] for m in meta if m["id"] in expected}
    assert years == {y for y in YEARS if low <= y <= high}


def test_year_max_alone_excludes_every_later_year(catalogue):
    """The upper bound on its own: a bound read as a lower one (or dropped) returns the
    later years instead of (or as well as) the earlier ones."""
    conn, version, meta, dense, sparse = catalogue
    for path in PATHS:
        ids = _search_ids(conn, version, dense, sparse, {"year_max": 2011}, path)
        assert ids and all(meta[i]["year"] in (2010, 2011) for i in ids), path
        assert len(ids) == sum(m["year"] <= 2011 for m in meta)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "mapping",
    [
        {"gender": ["Men", "Girls"], "baseColour": ["Black", "Red"], "year_max": 2013},
        {"gender": ["Girls", "Men"], "baseColour": ["Red", "Black"], "year_max": 2013},
        {"articleType": ["Dresses", "Tshirts"], "season": ["Winter", "Summer"], "year_min": 2012},
        {"brand": ["Roadster", "Peter England"], "usage": ["Sports", "Casual"]},
        {"master_category": ["Footwear", "Apparel"], "sub_category": ["Bags", "Topwear"]},
    ],
    ids=["gender-colour-ymax", "same-reversed", "type-season-ymin", "brand-usage", "columns"],
)
def test_fields_are_anded_and_each_field_ors_its_values(catalogue, mapping, path):
    """Several fields at once (AND), each with several values (OR); request keys in dataset
    spelling or column names alike."""
    _, _, meta, _, _ = catalogue
    expected = _check(catalogue, mapping, path)
    assert expected and len(expected) < N
    # each value of each field contributes: dropping any one of them changes the answer
    for key, values in mapping.items():
        if isinstance(values, list):
            for v in values:
                fewer = {**mapping, key: [x for x in values if x != v]}
                assert _expected(meta, fewer) != expected, (key, v)
