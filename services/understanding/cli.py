"""``fashion-search synonyms ...`` (merchandiser rules) and ``fashion-search understand TEXT``.

    fashion-search synonyms list [--json]
    fashion-search synonyms add 'kicks -> sneakers, trainers' [--note TEXT]
    fashion-search synonyms add 'jumper <-> sweater'
    fashion-search synonyms remove ID [ID ...]
    fashion-search synonyms import FILE.csv [--replace]
    fashion-search synonyms export [FILE.csv]
    fashion-search understand 'navy jumper for men' [--sources reader-half]

A running API picks a change up within ``FASHION_RULES_CHECK_S`` seconds (2 by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.store.db import connect
from services.understanding.rules import (
    add_rule,
    import_rules,
    list_rules,
    parse_rule,
    read_csv,
    remove_rule,
    write_csv,
)


def _list(args) -> int:
    with connect() as conn:
        rules = list_rules(conn)
    if args.json:
        print(
            json.dumps(
                [{"id": r.id, "kind": r.kind, "rule": str(r), "note": r.note} for r in rules],
                indent=1,
            )
        )
        return 0
    for r in rules:
        note = f"   ({r.note})" if r.note else ""
        print(f"{r.id:>5}  {r}{note}")
    print(f"{len(rules)} rules")
    return 0


def _add(args) -> int:
    rule = parse_rule(args.rule, note=args.note or "")
    with connect() as conn:
        stored = add_rule(conn, rule)
    print(f"added rule {stored.id}: {stored}")
    return 0


def _remove(args) -> int:
    missing = []
    with connect() as conn:
        for rule_id in args.ids:
            removed = remove_rule(conn, rule_id)
            if removed is None:
                missing.append(rule_id)
            else:
                print(f"removed rule {rule_id}: {removed}")
    if missing:
        print(f"no rule {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    return 0


def _import(args) -> int:
    rules = read_csv(Path(args.file).read_text(encoding="utf-8"))
    with connect() as conn:
        added, existing = import_rules(conn, rules, replace=args.replace)
    what = "replaced the rules with" if args.replace else "imported"
    print(f"{what} {len(rules)} rules from {args.file}: {added} added, {existing} already there")
    return 0


def _export(args) -> int:
    with connect() as conn:
        text = write_csv(list_rules(conn))
    if args.file:
        Path(args.file).write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10)) - 1} rules to {args.file}")
    else:
        sys.stdout.write(text)
    return 0


def _understand(args) -> int:
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.store.index_versions import get_version  # noqa: PLC0415 - only this command reads the catalogue
    from services.understanding.live import lexicon_of, read_lexicon_inputs  # noqa: PLC0415 - builds WordNet tables: only this command needs them
    from services.understanding.query import build_understanding, encoder_of  # noqa: PLC0415 - see above

    with connect() as conn:
        inputs = read_lexicon_inputs(conn)
        if inputs.version_id is None:
            raise LookupError("no live index version: build one first (fashion-search index)")
        version = get_version(conn, inputs.version_id)
    lexicon = lexicon_of(inputs, args.sources)
    encode = encoder_of(load_clip(version.dense_model), load_splade(version.sparse_model))
    qu = build_understanding(lexicon, encode)
    u = qu.understand(args.text)
    texts = qu.texts(u)
    result = qu.finish(u, dict(zip(texts, encode(texts))))
    u = result.understood
    print(f"query:      {u.original!r}")
    print(f"encoded:    {u.text!r}" + (f" + rewrite {u.rewrite!r}" if u.rewrite else ""))
    for c in u.corrections:
        print(f"corrected:  {c.original!r} -> {c.corrected!r} (confidence {c.confidence})")
    for a in u.attributes:
        flag = "rewrites" if a.rewritten else "recognised"
        print(
            f"attribute:  {a.key} from {a.words!r} ({a.source}, confidence {a.confidence}, {flag})"
        )
    for r in u.rules:
        print(f"rule:       {r.id}: {r.rule}")
    for rec in result.recognitions:
        print(f"semantic:   {rec.attribute.words!r} nearest {rec.nearest!r} ({rec.similarity})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synonyms",
        help="merchandiser synonym rules used by query understanding (no re-index needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="synonyms_command", metavar="ACTION", required=True)
    s = sub.add_parser("list", help="every rule with its id")
    s.add_argument("--json", action="store_true", help="as JSON")
    s.set_defaults(func=_list)
    s = sub.add_parser("add", help="add a rule: 'a -> b, c' (one-way) or 'a <-> b' (two-way)")
    s.add_argument("rule", help="e.g. 'kicks -> sneakers' or 'jumper <-> sweater'")
    s.add_argument("--note", default=None, help="why the rule exists")
    s.set_defaults(func=_add)
    s = sub.add_parser("remove", help="remove rules by id (see list)")
    s.add_argument("ids", type=int, nargs="+", metavar="ID")
    s.set_defaults(func=_remove)
    s = sub.add_parser("import", help="add the rules of a CSV file (kind,terms,synonyms,note)")
    s.add_argument("file", help="CSV path (the format `export` writes)")
    s.add_argument("--replace", action="store_true", help="the table holds exactly these after")
    s.set_defaults(func=_import)
    s = sub.add_parser("export", help="every rule as CSV (stdout, or a file)")
    s.add_argument("file", nargs="?", default=None)
    s.set_defaults(func=_export)

    u = subparsers.add_parser(
        "understand",
        help="what query understanding makes of a text on the live index",
        description="Spelling, rules, colour names, WordNet words and occasions recognised in "
        "TEXT, as the API would understand it (services.understanding).",
    )
    u.add_argument("text")
    u.add_argument(
        "--sources",
        choices=["all", "reader-half"],
        default="all",
        help="all (as the API) or reader-half (the evaluation's held-out configuration)",
    )
    u.set_defaults(func=_understand)
