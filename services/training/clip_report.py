"""Measure a CLIP model on held-out products: text->image retrieval and zero-shot classification.

Metrics (all on products never trained on):
- attribute queries ("green shirts", "men grey jacket"): Recall@1 / Recall@10 as *success
  rate* (share of queries with at least one relevant product in the top k) and MRR
  (reciprocal rank of the first relevant product). Relevant = every named attribute matches.
- colour + category queries ("{colour} {article}", >= 10 relevant products): P@10.
- zero-shot category accuracy: each image is given the articleType whose prompt-ensemble text
  embedding is nearest; scored at subCategory level (Topwear, Bottomwear, Shoes, ...: what the
  pixels can show) and, stricter, at articleType level (offline images of one Fashion-MNIST
  class are sold as several article types, e.g. T-shirt or Top, so that ceiling is below 1).
- zero-shot colour accuracy: nearest colour prompt ensemble ("{colour} {article}" over articles).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.training.data import article_words, colour_words

TARGETS = {
    "colour_category_p_at_10": 0.80,
    "zero_shot_category_acc": 0.85,
    "zero_shot_colour_acc": 0.90,
}
MIN_RELEVANT_FOR_P10 = 10


@dataclass(frozen=True)
class Query:
    text: str
    attributes: dict[str, str]  # field -> required value

    def relevant(self, row: dict) -> bool:
        return all(row.get(k) == v for k, v in self.attributes.items())


def _plural_word(article: str) -> str:
    return article_words(article)[0]


def attribute_queries(rows: list[dict]) -> list[Query]:
    """'{colour} {article}' and '{gender} {colour} {article}' queries present in ``rows``."""
    seen: dict[str, Query] = {}
    for row in rows:
        colour, article, gender = row.get("baseColour"), row.get("articleType"), row.get("gender")
        if not (colour and article):
            continue
        word = _plural_word(article)
        col = colour_words(colour)[0]
        q1 = Query(f"{col} {word}", {"baseColour": colour, "articleType": article})
        seen.setdefault(q1.text, q1)
        if gender:
            q2 = Query(
                f"{gender.lower()} {col} {word}",
                {"gender": gender, "baseColour": colour, "articleType": article},
            )
            seen.setdefault(q2.text, q2)
    return sorted(seen.values(), key=lambda q: q.text)


def colour_category_queries(rows: list[dict]) -> list[Query]:
    """'{colour} {article}' queries with at least MIN_RELEVANT_FOR_P10 relevant products."""
    counts = Counter((r.get("baseColour"), r.get("articleType")) for r in rows)
    out = []
    for (colour, article), n in sorted(
        counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))
    ):
        if colour and article and n >= MIN_RELEVANT_FOR_P10:
            out.append(
                Query(
                    f"{colour_words(colour)[0]} {_plural_word(article)}",
                    {"baseColour": colour, "articleType": article},
                )
            )
    return out


def _rank_metrics(scores: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float, float]:
    """(hit@1, hit@10, reciprocal rank, precision@10) for one query."""
    order = np.argsort(-scores, kind="stable")
    rel = relevant[order]
    first = int(np.argmax(rel)) if rel.any() else None
    rr = 0.0 if first is None else 1.0 / (first + 1)
    return float(rel[:1].any()), float(rel[:10].any()), rr, float(rel[:10].mean())


def retrieval_metrics(
    encoder, image_vecs: np.ndarray, rows: list[dict], queries: list[Query]
) -> dict:
    if not queries:
        return {"queries": 0}
    text_vecs = encoder.encode_texts([q.text for q in queries])
    scores = text_vecs @ image_vecs.T
    results = np.array(
        [
            _rank_metrics(scores[i], np.array([q.relevant(r) for r in rows]))
            for i, q in enumerate(queries)
        ]
    )
    return {
        "queries": len(queries),
        "recall_at_1": float(results[:, 0].mean()),
        "recall_at_10": float(results[:, 1].mean()),
        "mrr": float(results[:, 2].mean()),
        "p_at_10": float(results[:, 3].mean()),
    }


def _prompt_ensemble(
    encoder, prompts_by_label: dict[str, list[str]]
) -> tuple[list[str], np.ndarray]:
    labels = list(prompts_by_label)
    vecs = []
    for label in labels:
        emb = encoder.encode_texts(prompts_by_label[label]).mean(axis=0)
        vecs.append(emb / np.linalg.norm(emb))
    return labels, np.stack(vecs)


def zero_shot_metrics(encoder, image_vecs: np.ndarray, rows: list[dict]) -> dict:
    """Category (subCategory and articleType level) and colour accuracy by nearest prompt."""
    articles = sorted({r["articleType"] for r in rows if r.get("articleType")})
    colours = sorted({r["baseColour"] for r in rows if r.get("baseColour")})
    sub_of = {r["articleType"]: r.get("subCategory") for r in rows}
    article_prompts = {
        a: [w for w in article_words(a)] + [f"a photo of {article_words(a)[0]}"] for a in articles
    }
    colour_prompts = {
        c: [f"{cw} {article_words(a)[0]}" for a in articles for cw in colour_words(c)[:1]]
        for c in colours
    }

    art_labels, art_vecs = _prompt_ensemble(encoder, article_prompts)
    col_labels, col_vecs = _prompt_ensemble(encoder, colour_prompts)
    pred_article = [art_labels[i] for i in (image_vecs @ art_vecs.T).argmax(axis=1)]
    pred_colour = [col_labels[i] for i in (image_vecs @ col_vecs.T).argmax(axis=1)]

    article_ok = [p == r["articleType"] for p, r in zip(pred_article, rows)]
    category_ok = [sub_of.get(p) == r.get("subCategory") for p, r in zip(pred_article, rows)]
    colour_ok = [p == r.get("baseColour") for p, r in zip(pred_colour, rows)]
    per_colour: dict[str, list[bool]] = defaultdict(list)
    for ok, r in zip(colour_ok, rows):
        per_colour[r.get("baseColour")].append(ok)
    return {
        "zero_shot_category_acc": float(np.mean(category_ok)),
        "zero_shot_article_type_acc": float(np.mean(article_ok)),
        "zero_shot_colour_acc": float(np.mean(colour_ok)),
        "colour_acc_by_colour": {
            c: round(float(np.mean(v)), 3) for c, v in sorted(per_colour.items())
        },
    }


def evaluate_encoder(encoder, heldout_rows: list[dict]) -> dict:
    """Every metric for ``encoder`` (a ClipEncoder) on the held-out rows."""
    rows = [r for r in heldout_rows if r.get("image")]
    image_vecs = encoder.encode_images([r["image"] for r in rows], batch_size=256)
    attribute = retrieval_metrics(encoder, image_vecs, rows, attribute_queries(rows))
    colour_category = retrieval_metrics(encoder, image_vecs, rows, colour_category_queries(rows))
    return {
        "model": encoder.name,
        "heldout_products": len(rows),
        "attribute_queries": attribute,
        "colour_category_queries": colour_category,
        "colour_category_p_at_10": colour_category.get("p_at_10"),
        **zero_shot_metrics(encoder, image_vecs, rows),
    }


def compare(before: dict, after: dict) -> dict:
    """Before/after table with pass/fail against :data:`TARGETS`."""
    return {
        "before": before,
        "after": after,
        "targets": {
            k: {"target": v, "after": after.get(k), "met": (after.get(k) or 0) >= v}
            for k, v in TARGETS.items()
        },
    }


def _fmt(get, metrics: dict) -> str:
    try:
        value = get(metrics)
    except KeyError:
        value = None
    return "n/a" if value is None else f"{value:.3f}"


def format_report(report: dict) -> str:
    """A markdown table of the headline metrics."""
    before, after = report["before"], report["after"]
    rows = [
        ("attribute queries: Recall@1", lambda m: m["attribute_queries"]["recall_at_1"]),
        ("attribute queries: Recall@10", lambda m: m["attribute_queries"]["recall_at_10"]),
        ("attribute queries: MRR", lambda m: m["attribute_queries"]["mrr"]),
        ("colour+category queries: P@10", lambda m: m["colour_category_p_at_10"]),
        ("zero-shot category acc (subCategory)", lambda m: m["zero_shot_category_acc"]),
        ("zero-shot articleType acc", lambda m: m["zero_shot_article_type_acc"]),
        ("zero-shot colour acc", lambda m: m["zero_shot_colour_acc"]),
    ]
    lines = [
        (
            f"held-out products: {after['heldout_products']}; attribute queries: "
            f"{after['attribute_queries']['queries']}; colour+category queries: "
            f"{after['colour_category_queries']['queries']}"
        ),
        "",
        f"| metric | before ({before['model']}) | after ({after['model']}) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {label} | {_fmt(get, before)} | {_fmt(get, after)} |" for label, get in rows]
    lines.append("")
    lines += [
        f"- target {k} >= {v['target']}: {'MET' if v['met'] else 'NOT MET'} ({v['after']})"
        for k, v in report["targets"].items()
    ]
    return "\n".join(lines)


def save_report(report: dict, folders: Iterable[Path], stem: str = "clip-report") -> list[Path]:
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
        (folder / f"{stem}.md").write_text("# CLIP report\n\n" + format_report(report) + "\n")
        written += [folder / f"{stem}.json", folder / f"{stem}.md"]
    return written
