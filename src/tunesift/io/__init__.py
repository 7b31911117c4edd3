"""Reading user data and writing results atomically."""

from tunesift.io.atomic import atomic_write, write_json, write_jsonl, write_parquet
from tunesift.io.tables import TextSet, read_records, read_text_set

__all__ = [
    "TextSet",
    "atomic_write",
    "read_records",
    "read_text_set",
    "write_json",
    "write_jsonl",
    "write_parquet",
]
