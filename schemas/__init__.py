"""Arrow schemas of every table that crosses a stage boundary, and the run's config models."""

from winnow.schemas.documents import (
    DOCUMENT_SCHEMA,
    REJECT_COLUMNS,
    SCHEMA_VERSION,
    SchemaError,
    make_rejects,
    reject_schema_for,
    validate_documents,
)

__all__ = [
    "DOCUMENT_SCHEMA",
    "REJECT_COLUMNS",
    "SCHEMA_VERSION",
    "SchemaError",
    "make_rejects",
    "reject_schema_for",
    "validate_documents",
]
