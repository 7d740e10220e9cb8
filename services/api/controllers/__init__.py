"""One Litestar controller per resource: search, products, system (health/index/facets), page."""
