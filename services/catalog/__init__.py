"""Product catalogues: where rows come from, how they are read, checked and sharded.

- ``sources.resolve_source``: "offline" | "hub" | a local Parquet file or folder -> files;
- ``offline``: the built-in catalogue (real Fashion-MNIST images, SYNTHETIC metadata);
- ``hub``: ``ashraq/fashion-product-images-small`` from Hugging Face, verified;
- ``reader.iter_rows`` / ``validate.validate_rows`` / ``shards.write_shards``;
- ``vocabulary``: field values, colours, article types and shopper synonyms, as data.
"""
