-- How a query is ranked: ONE statement, score = alpha * dense + (1 - alpha) * sparse.
--
-- Run by services.search.ranking (the plan: its parameters, the routing, the certificate's
-- meaning) through services.store.search (this file's text, its slots filled).
--
-- Identifier slots, filled from the index version before the statement is prepared:
--   {t}            the version's table (alias e)
--   {postings}     its impact-ordered postings (term, weight, product_id), B-tree on
--                  (term, weight DESC, product_id) (services.store.postings)
--   {sort_key}     the page's sort key, a row compared ascending: ROW(-h.score,
--                  h.product_id) for relevance; a sort by a field puts -coalesce(p.<field>, 0)
--                  first (newest: the latest year first, a missing year last)
--   {after}        ROW(%(after_0)s, %(after_1)s, ...): a cursor's key, every product that
--                  sorts at or before it was shown on an earlier page
--   {filters}      the WHERE condition of the request's filters over e (TRUE without any)
--   {metadata}     the products' metadata columns of each hit (p.<column> AS m_<column>);
--                  {hit_metadata} the same columns read back from the page (h.m_<column>)
--   {dense_key}    the dense column as its HNSW index orders it: e.dense, or
--                  e.dense::halfvec(dim) for a halfvec index
--   {dense_query}  the dense query vector cast the same way
-- Named parameters: alpha, qd (dense query vector), qs (sparse query vector), k (how deep
-- the ranking goes: the page's offset + size, or the relevant set for another sort), n
-- (first candidates per side), m (postings read per query term), verify_fast (met
-- products the fast stage scores on the sparse side), budget and m_deep (the same,
-- deepened), verify (met products the deep stage scores on the sparse side),
-- deepen, use_dense, use_sparse, route_exact, fallback_exact, dense_slack (the halfvec
-- rounding), sparse_slack (float4 rounding of sparse scores), version_id,
-- the page's has_after / after_<i> (a cursor's key) and shown (the products the earlier
-- pages showed after that key), skip (an offset without a cursor),
-- k_page (the page's size), with_vectors (return the hits' sparse vectors), and one
-- parameter per filter value (f_<column>, f_<column>_min, f_<column>_max).
--
-- Stages; a stage runs only when the one before could not certify its answer (its scans sit
-- under a gating condition, which PostgreSQL evaluates once, before touching an index):
--   1. fast: n candidates from the dense HNSW index and n from the sparse one (each
--      filtered); for a ranking by the sparse side alone (use_dense false) also the
--      postings: the top m postings of each query term, the products met there ranked by an
--      upper bound of their sparse score (ub), the verify_fast highest (filtered) scored on
--      the sparse side alone, the n best of those taken; their union re-ranked by the exact
--      fused score of the stored vectors;
--   2. deep: the same with budget candidates per side (pgvector's iterative scans go past
--      ef_search); the postings of each term read down to its share of the fast answer's
--      k-th sparse score theta (in proportion to the term's largest weight; at most m_deep),
--      the verify met products of highest ub scored on the sparse side alone, the budget
--      best of those taken. Run when `deepen` (services.search.ranking: budget > n, the
--      exact fallback does not apply, and a sparse-only query asked for a budget);
--   3. exact: every row that passes the filters, when the query asked for it, when its
--      filter is selective (routed here at once: stages 1-2 skipped), or when stages 1-2
--      left the answer uncertified and the filtered rows are few enough to scan.
--
-- The certificate (the threshold algorithm, Fagin et al. 2001). Sparse side alone: a product
-- no list of m postings met has, for each query term, a weight at most the m-th posting's
-- (0 once the term's list is read whole), so its sparse score is at most the sum of query
-- weight x that weight; a product met but not scored is at most its ub (its met terms exact,
-- the others bounded the same way), one scored but not taken at most its exact sparse score
-- (the best of those left: the n+1-th, budget+1-th in the deep stage). s_B, the
-- largest of these plus sparse_slack, is PROVEN (SPLADE weights are >= 0: a query with a
-- negative weight gets no bound, 1). Hybrid: a row outside both HNSW lists has a dense score
-- <= d_N and a sparse score <= s_N, the lists' lowest, IF each list is its side's true top n,
-- which HNSW never guarantees. bound = alpha * d_N + (1 - alpha) * (s_N, or s_B alone); the
-- stage's answer stands (threshold_met) when the union holds k rows and the k-th fused score
-- is >= bound. It is proven exact when the dense side carries no weight (s_B) or on the
-- exact path (services.search.ranking, Certificate.exact).
-- An HNSW list with fewer than n rows gives no bound (its scan may have stopped early): its
-- bound is the score's maximum, 1 (unit vectors). A side the query does not use (weight 0)
-- adds nothing. On a halfvec index d_N is a half-precision score: dense_slack is added to
-- it; candidates are re-ranked at full precision.
--
--   4. the page: the ranking's rows in the page's sort order that the earlier pages did not
--      show (a cursor says which: those sorting at or before its key, and `shown`), or those
--      after `skip` rows; `k_page` of them. A product shown never comes again; one the
--      earlier pages missed (their candidates lacked it) comes first, not never.
--
-- Every row returned carries the certificate (path, threshold_met, bound, kth), the
-- version's status, how many rows were ranked and how many not shown yet remain;
-- a query with no hit on the page returns one row with a NULL product_id, so the
-- certificate always comes back. pgvector's <#> is the NEGATIVE inner product.
WITH
fast_d AS MATERIALIZED (            -- 1. fast: the dense candidates
    SELECT product_id, dense, sparse, -({dense_key} <#> {dense_query}) AS side
    FROM {t} e
    WHERE {filters} AND %(use_dense)s AND NOT %(route_exact)s
    ORDER BY {dense_key} <#> {dense_query}
    LIMIT %(n)s
), q_terms AS MATERIALIZED (         -- the sparse query's terms and weights, when the
    SELECT term, weight::float8 AS qw   -- ranking is the sparse side's alone (postings)
    FROM sparse_terms(%(qs)s::sparsevec)
    WHERE %(use_sparse)s AND NOT %(use_dense)s AND NOT %(route_exact)s
), fast_post AS MATERIALIZED (       -- the sparse side: the top m postings of each query
    SELECT q.term, q.qw, x.product_id, x.weight,   -- term, and the term's share tb of the
           CASE WHEN x.cnt < %(m)s THEN 0          -- score of a product it did not meet: 0
                ELSE greatest(0, q.qw * x.last) END AS tb  -- once its list is read whole
    FROM q_terms q CROSS JOIN LATERAL (
        SELECT product_id, weight, count(*) OVER () AS cnt, min(weight) OVER () AS last
        FROM (SELECT product_id, weight FROM {postings} x
              WHERE x.term = q.term
              ORDER BY x.weight DESC, x.product_id
              LIMIT %(m)s) x) x
), fast_tb AS MATERIALIZED (         -- the sum of tb: a bound on any product no list met
    SELECT coalesce(sum(tb), 0) AS tb FROM (SELECT DISTINCT term, tb FROM fast_post) t
), fast_ub AS MATERIALIZED (         -- a met product's sparse score is at most its ub
    SELECT product_id, sum(qw * weight - tb) + (SELECT tb FROM fast_tb) AS ub
    FROM fast_post
    GROUP BY product_id
), fast_v AS MATERIALIZED (          -- the met products of highest ub (verify_fast of them),
    SELECT product_id, -(e.sparse <#> %(qs)s::sparsevec) AS s    -- scored on the sparse side
    FROM {t} e                       -- alone (the dense vector stays in TOAST)
    WHERE {filters}
      AND e.product_id IN (SELECT product_id FROM fast_ub ORDER BY ub DESC, product_id
                           LIMIT %(verify_fast)s)
), fast_p AS MATERIALIZED (          -- the postings' candidates: n of them by that score
    SELECT product_id, dense, sparse, NULL::float8 AS side
    FROM {t} e
    WHERE e.product_id IN (SELECT product_id FROM fast_v ORDER BY s DESC, product_id
                           LIMIT %(n)s)
), fast_s AS MATERIALIZED (          -- the sparse HNSW candidates
    SELECT product_id, dense, sparse, -(e.sparse <#> %(qs)s::sparsevec) AS side
    FROM {t} e
    WHERE {filters} AND %(use_sparse)s AND NOT %(route_exact)s
    ORDER BY e.sparse <#> %(qs)s::sparsevec
    LIMIT %(n)s
), fast_r AS MATERIALIZED (          -- their union, re-ranked by the exact fused score
    SELECT product_id, sparse,
           %(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)
             + (1 - %(alpha)s) * coalesce(-(sparse <#> %(qs)s::sparsevec), 0) AS score,
           -(dense <#> %(qd)s::vector) AS dense_score,
           -(sparse <#> %(qs)s::sparsevec) AS sparse_score
    FROM (SELECT DISTINCT ON (product_id) product_id, dense, sparse
          FROM (SELECT * FROM fast_d UNION ALL SELECT * FROM fast_s
                UNION ALL SELECT * FROM fast_p) u) c
    ORDER BY score DESC, product_id
    LIMIT %(k)s
), fast_c AS MATERIALIZED (          -- its certificate
    SELECT b.bound, r.kth, r.found = %(k)s AND r.kth >= b.bound AS ok
    FROM (SELECT
            %(alpha)s * CASE WHEN NOT %(use_dense)s THEN 0
                             WHEN (SELECT count(*) FROM fast_d) < %(n)s THEN 1
                             ELSE (SELECT min(side) FROM fast_d) + %(dense_slack)s END
          + (1 - %(alpha)s) * CASE WHEN NOT %(use_sparse)s THEN 0
                             WHEN %(use_dense)s THEN  -- hybrid: the HNSW list's lowest
                                  CASE WHEN (SELECT count(*) FROM fast_s) < %(n)s THEN 1
                                       ELSE (SELECT min(side) FROM fast_s) END
                             WHEN EXISTS (SELECT 1 FROM q_terms WHERE qw < 0) THEN 1
                             ELSE greatest((SELECT tb FROM fast_tb),
                                           (SELECT ub FROM fast_ub ORDER BY ub DESC, product_id
                                            OFFSET %(verify_fast)s LIMIT 1),
                                           (SELECT s FROM fast_v ORDER BY s DESC, product_id
                                            OFFSET %(n)s LIMIT 1))
                                  + %(sparse_slack)s END AS bound) b,
         (SELECT count(*) AS found, min(score) AS kth FROM fast_r) r
), deep_d AS MATERIALIZED (          -- 2. deep: the same with budget candidates
    SELECT product_id, dense, sparse, -({dense_key} <#> {dense_query}) AS side
    FROM {t} e
    WHERE {filters} AND %(use_dense)s AND NOT %(route_exact)s
      AND %(deepen)s AND NOT (SELECT ok FROM fast_c)
    ORDER BY {dense_key} <#> {dense_query}
    LIMIT %(budget)s
), term_max AS MATERIALIZED (        -- each term's first (largest) posting weight
    SELECT term, qw, max(weight) AS maxw FROM fast_post GROUP BY term, qw
), fast_theta AS MATERIALIZED (      -- theta: a sparse score k products reach (less the
    SELECT coalesce(min(sparse_score), 0) - 2 * %(sparse_slack)s AS theta,  -- slack), and
           (SELECT nullif(sum(qw * maxw), 0) FROM term_max  -- sc: the most a product can
            WHERE qw > 0) AS sc                             -- get from all the terms
    FROM fast_r
), deep_post AS MATERIALIZED (       -- 2. deep, sparse side: each term's postings down to
    SELECT q.term, q.qw, x.product_id, x.weight  -- its share of theta, in proportion to
    FROM q_terms q JOIN term_max t ON t.term = q.term  -- its most (at most m_deep)
    CROSS JOIN fast_theta f CROSS JOIN LATERAL (
        SELECT product_id, weight FROM {postings} x
        WHERE x.term = q.term AND q.qw > 0 AND %(deepen)s AND NOT (SELECT ok FROM fast_c)
          AND x.weight >= f.theta * t.maxw / f.sc
        ORDER BY x.weight DESC, x.product_id
        LIMIT %(m_deep)s) x
), deep_tb AS MATERIALIZED (         -- a list cut at m_deep: the last weight read; else every
    SELECT q.term,                   -- posting left has query weight x weight under its share
           CASE WHEN q.qw <= 0 THEN 0
                WHEN count(x.product_id) >= %(m_deep)s THEN greatest(0, q.qw * min(x.weight))
                ELSE greatest(0, (SELECT theta / sc FROM fast_theta) * q.qw * t.maxw)
           END AS tb
    FROM q_terms q LEFT JOIN term_max t ON t.term = q.term
                   LEFT JOIN deep_post x ON x.term = q.term
    GROUP BY q.term, q.qw, t.maxw
), deep_ub AS MATERIALIZED (
    SELECT x.product_id,
           sum(x.qw * x.weight) + (SELECT sum(tb) FROM deep_tb) - sum(b.tb) AS ub
    FROM deep_post x JOIN deep_tb b ON b.term = x.term
    GROUP BY x.product_id
), deep_v AS MATERIALIZED (         -- the met products of highest ub (verify of them),
    SELECT product_id, -(e.sparse <#> %(qs)s::sparsevec) AS s    -- scored on the sparse side
    FROM {t} e                       -- alone (the dense vector stays in TOAST)
    WHERE {filters}
      AND e.product_id IN (SELECT product_id FROM deep_ub ORDER BY ub DESC, product_id
                           LIMIT %(verify)s)
), deep_p AS MATERIALIZED (          -- the postings' candidates: budget of them by that score
    SELECT product_id, dense, sparse, NULL::float8 AS side
    FROM {t} e
    WHERE e.product_id IN (SELECT product_id FROM deep_v ORDER BY s DESC, product_id
                           LIMIT %(budget)s)
), deep_s AS MATERIALIZED (
    SELECT product_id, dense, sparse, -(e.sparse <#> %(qs)s::sparsevec) AS side
    FROM {t} e
    WHERE {filters} AND %(use_sparse)s AND NOT %(route_exact)s
      AND %(deepen)s AND NOT (SELECT ok FROM fast_c)
    ORDER BY e.sparse <#> %(qs)s::sparsevec
    LIMIT %(budget)s
), deep_r AS MATERIALIZED (
    SELECT product_id, sparse,
           %(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)
             + (1 - %(alpha)s) * coalesce(-(sparse <#> %(qs)s::sparsevec), 0) AS score,
           -(dense <#> %(qd)s::vector) AS dense_score,
           -(sparse <#> %(qs)s::sparsevec) AS sparse_score
    FROM (SELECT DISTINCT ON (product_id) product_id, dense, sparse
          FROM (SELECT * FROM deep_d UNION ALL SELECT * FROM deep_s
                UNION ALL SELECT * FROM deep_p) u) c
    ORDER BY score DESC, product_id
    LIMIT %(k)s
), deep_c AS MATERIALIZED (
    SELECT b.bound, r.kth, r.found = %(k)s AND r.kth >= b.bound AS ok
    FROM (SELECT
            %(alpha)s * CASE WHEN NOT %(use_dense)s THEN 0
                             WHEN (SELECT count(*) FROM deep_d) < %(budget)s THEN 1
                             ELSE (SELECT min(side) FROM deep_d) + %(dense_slack)s END
          + (1 - %(alpha)s) * CASE WHEN NOT %(use_sparse)s THEN 0
                             WHEN %(use_dense)s THEN
                                  CASE WHEN (SELECT count(*) FROM deep_s) < %(budget)s THEN 1
                                       ELSE (SELECT min(side) FROM deep_s) END
                             WHEN EXISTS (SELECT 1 FROM q_terms WHERE qw < 0) THEN 1
                             ELSE greatest((SELECT coalesce(sum(tb), 0) FROM deep_tb),
                                           (SELECT ub FROM deep_ub ORDER BY ub DESC, product_id
                                            OFFSET %(verify)s LIMIT 1),
                                           (SELECT s FROM deep_v ORDER BY s DESC, product_id
                                            OFFSET %(budget)s LIMIT 1))
                                  + %(sparse_slack)s END AS bound) b,
         (SELECT count(*) AS found, min(score) AS kth FROM deep_r) r
), exact_r AS MATERIALIZED (         -- 3. exact: every filtered row scored
    SELECT product_id, sparse,
           %(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)
             + (1 - %(alpha)s) * coalesce(-(sparse <#> %(qs)s::sparsevec), 0) AS score,
           -(dense <#> %(qd)s::vector) AS dense_score,
           -(sparse <#> %(qs)s::sparsevec) AS sparse_score
    FROM {t} e
    WHERE {filters}
      AND (%(route_exact)s OR (%(fallback_exact)s AND NOT (SELECT ok FROM fast_c)
                                                  AND NOT (SELECT ok FROM deep_c)))
    ORDER BY score DESC, product_id
    LIMIT %(k)s
), cert AS MATERIALIZED (            -- which stage answered, and its certificate
    SELECT CASE WHEN %(route_exact)s THEN 'exact'
                WHEN f.ok THEN 'fast'
                WHEN d.ok THEN 'deepened'
                WHEN %(fallback_exact)s THEN 'exact'
                WHEN %(deepen)s THEN 'deepened'
                ELSE 'fast' END AS path,
           %(route_exact)s OR f.ok OR d.ok OR %(fallback_exact)s AS threshold_met,
           CASE WHEN %(route_exact)s THEN NULL WHEN f.ok OR NOT %(deepen)s THEN f.bound
                ELSE d.bound END AS bound,
           CASE WHEN %(route_exact)s THEN NULL WHEN f.ok OR NOT %(deepen)s THEN f.kth
                ELSE d.kth END AS kth
    FROM fast_c f, deep_c d
), hits AS (
    SELECT * FROM fast_r WHERE (SELECT path FROM cert) = 'fast'
    UNION ALL SELECT * FROM deep_r WHERE (SELECT path FROM cert) = 'deepened'
    UNION ALL SELECT * FROM exact_r WHERE (SELECT path FROM cert) = 'exact'
), keyed AS (                        -- 4. the page: the ranking in the page's sort order
    SELECT h.*, {sort_key} AS sort_key, p.product_display_name, {metadata}
    FROM hits h JOIN products p ON p.id = h.product_id
), unseen AS MATERIALIZED (         -- what the earlier pages did not show
    SELECT * FROM keyed
    WHERE (NOT %(has_after)s OR sort_key > {after})
      AND NOT product_id = ANY(%(shown)s::bigint[])
), page AS (                         -- k_page of them in order (after `skip` without a cursor)
    SELECT *, row_number() OVER (ORDER BY sort_key) AS pos
    FROM unseen
    ORDER BY sort_key
    OFFSET %(skip)s LIMIT %(k_page)s
)
SELECT c.path, c.threshold_met, c.bound, c.kth,
       (SELECT status FROM index_versions WHERE id = %(version_id)s) AS version_status,
       (SELECT count(*) FROM hits) AS ranked,
       (SELECT count(*) FROM unseen) - %(skip)s AS remaining,
       h.product_id, h.score, h.dense_score, h.sparse_score,
       CASE WHEN %(with_vectors)s THEN h.sparse END AS sparse,
       h.product_display_name, {hit_metadata}
FROM cert c
LEFT JOIN page h ON TRUE
ORDER BY h.pos
