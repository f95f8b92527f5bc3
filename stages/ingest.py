"""Ingest: JSONL (plain, .gz, .zst), Parquet, Arrow (`datasets` files) and WARC -> document schema,
with every unusable row rejected.

Reasons: invalid_json, not_an_object, missing_text, text_not_string, empty_text, invalid_utf8,
too_long, missing_id, duplicate_id, corrupt_file (the unreadable rest of a damaged file); for WARC
records also those of `winnow.stages.lib.warc` (not_a_response, truncated_record, http_status, not_html,
undecodable). A WARC page's id is its WARC-Record-ID; its date, record id, title and charset are in
`meta`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from winnow.schemas.config import InputConfig, StageConfig
from winnow.schemas.documents import DOCUMENT_SCHEMA, reject_schema_for
from winnow.stages.base import RunContext, ShardContext, Stage, StageResult
from winnow.storage.fs import Location, StorageError
from winnow.storage.shards import (
    CorruptInputError,
    detect_format,
    iter_arrow_batches,
    iter_jsonl_lines,
    iter_parquet_batches,
    parquet_schema,
)

if TYPE_CHECKING:
    from winnow.stages.lib.warc import Page

REJECT_SCHEMA = reject_schema_for(DOCUMENT_SCHEMA)


class IngestConfig(StageConfig):
    name: Literal["ingest"] = "ingest"
    source: ClassVar[bool] = True  # makes documents from the run's input
    max_doc_bytes: int = Field(1_000_000, ge=1, description="texts longer than this (UTF-8 bytes) are rejected")
    normalization: Literal["NFC", "NFKC", "none"] = "NFC"
    on_corrupt_file: Literal["reject", "fail"] = Field(
        "reject", description="a truncated/corrupt file: keep what was read and reject the rest, or fail the run"
    )
    non_response_records: Literal["reject", "count"] = Field(
        "reject", description="WARC request/metadata/warcinfo records: a reject row each, or only counted by type "
                              "in the manifest (`warc_skipped:<type>`; about two thirds of a Common Crawl file)"
    )
    html_extractor: Literal["resiliparse", "trafilatura"] = Field(
        "resiliparse", description="main-text extraction of WARC pages: resiliparse (fast, DCLM's) or trafilatura"
    )

    @field_validator("html_extractor")
    @classmethod
    def _installed(cls, extractor: str) -> str:
        """Fail at config time, not in a worker, when the chosen extractor is not installed."""
        if extractor == "trafilatura":
            try:
                import trafilatura  # noqa: F401
            except ImportError:
                raise ValueError("html_extractor: trafilatura is not installed "
                                 "(pip install 'winnow[trafilatura]')") from None
        return extractor


class MissingColumnError(ValueError):
    """A Parquet input lacks the configured text column."""


class Ingest(Stage):
    Config = IngestConfig

    def __init__(self, config: IngestConfig, run: RunContext | None = None):
        super().__init__(config, run)
        if self.run.input is None or self.run.input_root is None:
            raise ValueError("ingest reads the run's input: give RunContext(input=..., input_root=...)")
        self.input = self.run.input
        self.input_root = self.run.input_root.rstrip("/")

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        return DOCUMENT_SCHEMA

    def relative_name(self, source: Location) -> str:
        if source.uri.startswith(self.input_root + "/"):
            return source.uri[len(self.input_root) + 1:]
        return source.uri.rsplit("/", 1)[-1]

    def process_shard(self, source: Location, batch_size: int,
                      shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        rel = self.relative_name(source)
        fmt = detect_format(source) if self.input.format == "auto" else self.input.format
        converter = _Converter(self.config, self.input, rel)
        try:
            if fmt == "jsonl":
                for lines in iter_jsonl_lines(source, batch_size):
                    yield converter.convert([(line, None) for line in lines])
            elif fmt == "warc":
                yield from converter.convert_warc(source, batch_size)
            elif fmt == "arrow":
                for batch in iter_arrow_batches(source, batch_size):
                    yield converter.convert([(None, record) for record in batch.to_pylist()])
            else:
                names = parquet_schema(source).names
                if self.input.text_field not in names:
                    raise MissingColumnError(
                        f"{source.uri}: no column {self.input.text_field!r} (columns: {names}); "
                        "set input.text_field to the column that holds the text"
                    )
                for batch in iter_parquet_batches(source, batch_size):
                    yield converter.convert([(None, record) for record in batch.to_pylist()])
        except (CorruptInputError, pa.ArrowInvalid, OSError) as err:
            if isinstance(err, (FileNotFoundError, StorageError)) or self.config.on_corrupt_file == "fail":
                raise
            yield converter.corrupt_rest(str(err))


class _Converter:
    """Turns raw lines or records of one file into documents and rejects, numbering rows."""

    def __init__(self, config: IngestConfig, input_config: InputConfig, rel: str):
        self.config, self.input, self.rel = config, input_config, rel
        self.index = 0
        self.seen_ids: set[str] = set()
        self.skip_fields = {input_config.text_field, input_config.id_field, input_config.url_field}

    def convert(self, rows: list[tuple[bytes | None, dict | None]]) -> StageResult:
        outcomes = []
        for raw, record in rows:
            position = self._next_position()
            outcomes.append((f"{self.rel}:{position}", raw, self._document(raw, record, position)))
        return self._result(outcomes)

    def convert_warc(self, source: Location, batch_size: int) -> Iterator[StageResult]:
        """A WARC file's records: each page's main text a document, each other record a reject. Pages
        are extracted as they are read, so a batch holds texts, not HTML."""
        from winnow.stages.lib import warc  # FastWARC and Resiliparse, only where a WARC file is read

        outcomes, skipped = [], {}
        count_only = self.config.non_response_records == "count"
        try:
            for page in warc.iter_pages(source):
                self._next_position()
                if count_only and page.reason == "not_a_response":
                    key = f"warc_skipped:{page.record_type}"
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                row_id = page.record_id or f"{self.rel}:{page.position}"
                outcomes.append((row_id, page.raw, self._page_document(page, row_id)))
                if len(outcomes) >= batch_size:
                    yield self._result(outcomes, skipped)
                    outcomes, skipped = [], {}
        except CorruptInputError:
            if outcomes or skipped:
                yield self._result(outcomes, skipped)
            raise
        if outcomes or skipped:
            yield self._result(outcomes, skipped)

    def _next_position(self) -> int:
        self.index += 1
        return self.index - 1

    def _result(self, outcomes: list, counters: dict[str, int] | None = None) -> StageResult:
        """(id, raw, document dict or (reason, detail, fields)) per row -> kept table and rejects table."""
        docs: dict[str, list] = {name: [] for name in DOCUMENT_SCHEMA.names}
        rejects: dict[str, list] = {name: [] for name in REJECT_SCHEMA.names}
        for row_id, raw, outcome in outcomes:
            if isinstance(outcome, dict):
                for name in DOCUMENT_SCHEMA.names:
                    docs[name].append(outcome[name])
            else:
                reason, detail, partial = outcome
                row = {"id": row_id, "text": None, "source": self._source(), "url": None,
                       "meta": None, **partial, "reject_stage": "ingest", "reject_reason": reason,
                       "reject_detail": detail, "raw": raw if reason in _KEEP_RAW else None}
                for name in REJECT_SCHEMA.names:
                    rejects[name].append(row[name])
        return StageResult(len(outcomes), pa.table(docs, schema=DOCUMENT_SCHEMA),
                           pa.table(rejects, schema=REJECT_SCHEMA), counters=counters or {})

    def corrupt_rest(self, message: str) -> StageResult:
        """One reject standing for the unreadable remainder of a damaged file."""
        row = {"id": f"{self.rel}:{self.index}", "text": None, "source": self._source(), "url": None, "meta": None,
               "reject_stage": "ingest", "reject_reason": "corrupt_file",
               "reject_detail": f"rows from {self.index} on could not be read: {message}", "raw": None}
        self.index += 1
        empty = DOCUMENT_SCHEMA.empty_table()
        return StageResult(1, empty, pa.Table.from_pylist([row], schema=REJECT_SCHEMA))

    def _source(self) -> str:
        return self.input.source or self.rel

    def _document(self, raw: bytes | None, record: dict | None, position: int):
        """A document dict, or (reason, detail, fields to keep in the reject row)."""
        if record is None:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return "invalid_utf8", f"line {position}: {err.reason} at byte {err.start}", {}
            if not line.strip():
                return "invalid_json", f"line {position}: blank line", {}
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                return "invalid_json", f"line {position}: {err.msg} (column {err.colno})", {}
            if not isinstance(record, dict):
                return "not_an_object", f"line {position}: a JSON {type(record).__name__}, not an object", {}
        text = record.get(self.input.text_field)
        if text is None:
            return "missing_text", f"no {self.input.text_field!r} field", {}
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as err:
                return "invalid_utf8", f"{err.reason} at byte {err.start}", {}
        if not isinstance(text, str):
            return "text_not_string", f"{self.input.text_field!r} is a {type(text).__name__}", {}
        url = record.get(self.input.url_field) if self.input.url_field else None
        meta = {k: v for k, v in record.items() if k not in self.skip_fields}
        fields = {"url": None if url is None else str(url),
                  "meta": json.dumps(meta, ensure_ascii=False, default=str) if meta else None}
        try:
            for value in (text, fields["url"], fields["meta"]):
                if value is not None:
                    value.encode("utf-8")
        except UnicodeEncodeError as err:
            return "invalid_utf8", f"lone surrogate {err.object[err.start:err.end]!r} from a JSON escape", {}
        return self._checked(text, fields, lambda: self._record_id(record, position))

    def _record_id(self, record: dict, position: int):
        """The configured id field's value, or the row's position; a (reason, detail) if unusable."""
        if not self.input.id_field:
            return f"{self.rel}:{position}"
        doc_id = record.get(self.input.id_field)
        if doc_id is None or doc_id == "":
            return "missing_id", f"no {self.input.id_field!r} field"
        return self._unique(str(doc_id))

    def _unique(self, doc_id: str):
        if doc_id in self.seen_ids:
            return "duplicate_id", f"id {doc_id!r} already seen in this file"
        self.seen_ids.add(doc_id)
        return doc_id

    def _page_document(self, page: Page, row_id: str):
        """A WARC page's main text as a document; its record's reason if it is not a page."""
        from winnow.stages.lib.warc import extract

        meta = {"warc_record_id": page.record_id, "warc_date": page.date}
        if page.reason:
            return page.reason, page.detail, {"url": page.url, "meta": json.dumps(meta)}
        text, title = extract(page.html, self.config.html_extractor, page.url)
        fields = {"url": page.url, "meta": json.dumps({**meta, "title": title, "charset": page.charset},
                                                      ensure_ascii=False)}
        return self._checked(text, fields, lambda: self._unique(row_id))

    def _checked(self, text: str, fields: dict, doc_id):
        """Normalised, non-empty, within max_doc_bytes, with a usable id (`doc_id()` is asked last)."""
        if self.config.normalization != "none" and not unicodedata.is_normalized(self.config.normalization, text):
            text = unicodedata.normalize(self.config.normalization, text)
        if not text.strip():
            return "empty_text", "text is empty or whitespace", {**fields, "text": text}
        size = len(text.encode("utf-8"))
        if size > self.config.max_doc_bytes:
            return "too_long", f"{size} bytes > max_doc_bytes {self.config.max_doc_bytes}", {**fields, "text": text}
        doc_id = doc_id()
        if isinstance(doc_id, tuple):
            return (*doc_id, {**fields, "text": text})
        return {"id": doc_id, "text": text, "source": self._source(), **fields}


_KEEP_RAW = {"invalid_utf8", "invalid_json", "not_an_object", "undecodable"}
