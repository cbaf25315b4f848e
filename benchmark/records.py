"""Kept for imports written before benchmark.store: the atomic writers and CorruptRecord live there
(the store owns the results folder: layout, record schema, the one atomic writer, claims)."""

from .store import CorruptRecord, write_json_atomic, write_text_atomic

__all__ = ["CorruptRecord", "write_json_atomic", "write_text_atomic"]
