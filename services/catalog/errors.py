"""Errors raised by the catalogue area (both are ValueErrors, so the CLI prints them cleanly)."""

from __future__ import annotations


class CatalogError(ValueError):
    """A catalogue file cannot be read or does not have the catalogue's schema."""


class CatalogSourceError(CatalogError):
    """A catalogue source (hub, local path, offline build) is unavailable."""
