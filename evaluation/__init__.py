"""Search-quality evaluation: a query set generated from catalogue metadata, binary relevance
judged from that metadata, MAP@10 (primary), MRR@10, nDCG@10, P@10 and Recall@100 for the
dense, sparse, hybrid (alpha sweep) and image + text modes, stored in PostgreSQL and shown
on the analysts' dashboard. The protocol (what counts as relevant and why, exact metric
definitions) is in docs/evaluation/protocol.md and the docstrings of ``queries`` and ``metrics``.

Modules: ``queries`` (query set), ``metrics``, ``run`` (one run against the live index),
``storage`` (eval_runs / eval_metrics / eval_alerts), ``summary`` (headline numbers,
regression check), ``report`` (CLI table, markdown report), ``charts`` + ``dashboard``
(Litestar controller at /dashboard), ``nightly`` (the DAG's tasks), ``cli``.
"""
