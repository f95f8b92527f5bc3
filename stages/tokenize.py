"""Tokenize: token ids per document (`input_ids`: uint16, or int32 for vocabularies over 65,536 tokens,
as megatron-core stores them) and `n_tokens`, EOS appended (and BOS prepended when configured).
Documents over `max_tokens` are split into parts `<id>#<k>` (rows added), truncated, or rejected."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import StageConfig
from winnow.scorers.tokenizer import EOS, load_tokenizer, special_token, token_dtype
from winnow.stages.base import DocumentStage, Plot, StageFileError, StageResult


class TokenizeConfig(StageConfig):
    """Token ids per document with a Hugging Face fast tokenizer."""

    name: Literal["tokenize"] = "tokenize"
    tokenizer: str = Field(description="tokenizer.json or a Hugging Face directory")
    eos_token: str | None = Field(None, description="appended to every document; default: the tokenizer's EOS")
    bos_token: str | None = Field(None, description="prepended to every document when set")
    max_tokens: int | None = Field(None, ge=2, description="longer documents are split, truncated or rejected")
    on_long: Literal["split", "truncate", "reject"] = "split"
    keep_text: bool = Field(True, description="keep the text column next to the token ids")


class Tokenize(DocumentStage):
    Config = TokenizeConfig
    plots = (Plot("n_tokens", "tokens per document", "Tokens", log_counts=True),)

    def __init__(self, config: TokenizeConfig, run=None):
        super().__init__(config, run)
        try:
            tokenizer = self.loaded
        except Exception as err:  # noqa: BLE001 - missing file, bad JSON, not a tokenizer: one line naming it
            first = (str(err).strip().splitlines() or [""])[0]
            raise StageFileError(self.name, config.tokenizer, f"cannot load the tokenizer: {first}") from None
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.dtype = token_dtype(self.vocab_size)
        self.eos_id = self._token_id(tokenizer, config.eos_token or special_token(config.tokenizer, "eos") or EOS)
        self.bos_id = self._token_id(tokenizer, config.bos_token) if config.bos_token else None

    @staticmethod
    def _token_id(tokenizer, token: str) -> int:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary")
        return token_id

    def setup(self):
        return load_tokenizer(self.config.tokenizer)

    def apply(self, table: pa.Table) -> StageResult:
        tokenizer = self.loaded
        encodings = tokenizer.encode_batch_fast(table.column("text").to_pylist(), add_special_tokens=False)
        prefix = [self.bos_id] if self.bos_id is not None else []
        ids = [prefix + e.ids + [self.eos_id] for e in encodings]
        limit = self.config.max_tokens
        rows, parts, drop, details = [], [], [], []
        for i, doc in enumerate(ids):
            if limit is None or len(doc) <= limit:
                rows.append(i)
                parts.append((None, doc))
            elif self.config.on_long == "reject":
                drop.append(i)
                details.append(f"{len(doc)} tokens > max_tokens {limit}")
            elif self.config.on_long == "truncate":
                rows.append(i)
                parts.append((None, doc[:limit]))
            else:
                for k in range(0, len(doc), limit):
                    rows.append(i)
                    parts.append((k // limit, doc[k:k + limit]))
        kept = table.take(pa.array(rows, pa.int64()))
        if not self.config.keep_text:
            kept = kept.set_column(kept.schema.get_field_index("text"), "text", pa.array([""] * len(rows)))
        original = kept.column("id").to_pylist()
        new_ids = [doc_id if part is None else f"{doc_id}#{part}" for doc_id, (part, _) in zip(original, parts,
                                                                                                strict=True)]
        kept = kept.set_column(kept.schema.get_field_index("id"), kept.schema.field("id"), pa.array(new_ids))
        value_type = pa.from_numpy_dtype(self.dtype)
        flat = np.fromiter((t for _, doc in parts for t in doc), dtype=self.dtype)
        offsets = np.concatenate([[0], np.cumsum([len(doc) for _, doc in parts])]).astype(np.int64)
        kept = kept.append_column("input_ids", pa.LargeListArray.from_arrays(pa.array(offsets),
                                                                               pa.array(flat, value_type)))
        kept = kept.append_column("n_tokens", pa.array(np.diff(offsets).astype(np.int32)))
        added = len(rows) - (table.num_rows - len(drop))  # extra parts of split documents
        return StageResult.of(self.name, table.num_rows, kept, table.take(pa.array(drop, pa.int64())),
                              ["too_many_tokens"] * len(drop), details, rows_added=added)
