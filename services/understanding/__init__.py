"""Query understanding: what a shopper's words mean in the catalogue's, before encoding.

``understand(text) -> Understood`` (``understand.py``) corrects spelling, recognises
catalogue values (rules, WordNet, colour names: ``lexicon.py``) and rewrites the query in
the catalogue's words; ``semantic.py`` recognises left-over words by their sentence
vectors; ``query.py`` composes the query's dense and sparse vectors from it. The formula of
the ranking (``alpha * dense + (1 - alpha) * sparse``, ``services.search``) does not
change: understanding changes the query. ``live.py`` keeps a serving process's
understanding current with the merchandiser rules (``rules.py``, ``cli.py``).
"""
