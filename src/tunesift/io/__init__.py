"""Reading user data and writing results atomically."""

from tunesift.io.atomic import atomic_npy, atomic_write, write_json, write_jsonl, write_parquet
from tunesift.io.tables import ShardRecords, TextSet, read_records, read_text_set

__all__ = [
    "ShardRecords",
    "TextSet",
    "atomic_npy",
    "atomic_write",
    "read_records",
    "read_text_set",
    "write_json",
    "write_jsonl",
    "write_parquet",
]
