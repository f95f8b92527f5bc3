"""The document table and the rejects table.

Every stage reads and writes tables that start with the document columns; stages add one
column per annotation. Rejects carry the row as it entered the stage plus why it left, so
nothing a stage drops is lost.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("meta", pa.string()),  # JSON object as a string
    ],
    metadata={"winnow.schema_version": SCHEMA_VERSION},
)

# Appended to the input columns of a stage to form its rejects table. `raw` keeps the
# undecodable bytes of an ingest row that never became a document (bad JSON, invalid UTF-8).
REJECT_COLUMNS = [
    pa.field("reject_stage", pa.string(), nullable=False),
    pa.field("reject_reason", pa.string(), nullable=False),
    pa.field("reject_detail", pa.string()),
    pa.field("raw", pa.binary()),
]


def documents_table(texts: list[str], ids: list[str] | None = None, source: str = "eval") -> pa.Table:
    """Texts as a document table (ids d0, d1, ... unless given): for scoring or matching text that is
    not read from a run's input."""
    n = len(texts)
    return pa.table({"id": ids or [f"d{i}" for i in range(n)], "text": texts, "source": [source] * n,
                     "url": [None] * n, "meta": [None] * n}, schema=DOCUMENT_SCHEMA)


class SchemaError(ValueError):
    """A table does not match the document contract."""


def validate_documents(table: pa.Table | pa.RecordBatch, where: str = "") -> None:
    """Check the document columns exist with the contracted types and no nulls in id/text."""
    prefix = f"{where}: " if where else ""
    for field in DOCUMENT_SCHEMA:
        if field.name not in table.schema.names:
            raise SchemaError(
                f"{prefix}missing column {field.name!r}; a document table needs "
                f"{DOCUMENT_SCHEMA.names}, got {table.schema.names}"
            )
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise SchemaError(f"{prefix}column {field.name!r} has type {actual}, expected {field.type}")
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{prefix}column {field.name!r} has null values")


def document_schema_for(schema: pa.Schema) -> pa.Schema:
    """The document columns first (in contract order and types), then annotations as they came."""
    extra = [f for f in schema if f.name not in DOCUMENT_SCHEMA.names]
    return pa.schema(list(DOCUMENT_SCHEMA) + extra, metadata=DOCUMENT_SCHEMA.metadata)


def reject_schema_for(schema: pa.Schema) -> pa.Schema:
    """Rejects of a stage: its input columns (text made nullable for unparseable rows) + reasons."""
    fields = [f.with_nullable(True) if f.name == "text" else f for f in document_schema_for(schema)]
    return pa.schema(fields + REJECT_COLUMNS, metadata=DOCUMENT_SCHEMA.metadata)


def make_rejects(
    rows: pa.Table,
    stage: str,
    reasons: list[str] | pa.Array,
    details: list[str | None] | pa.Array | None = None,
) -> pa.Table:
    """Turn rows a stage drops into its rejects table, one reason (and optional detail) per row."""
    n = rows.num_rows
    schema = reject_schema_for(rows.schema)
    columns = {name: rows.column(name) for name in rows.schema.names}
    columns["reject_stage"] = pa.array([stage] * n, pa.string())
    columns["reject_reason"] = pa.array(reasons, pa.string())
    columns["reject_detail"] = pa.array(details if details is not None else [None] * n, pa.string())
    columns["raw"] = pa.nulls(n, pa.binary())
    return pa.table([columns[f.name] for f in schema], schema=schema)
