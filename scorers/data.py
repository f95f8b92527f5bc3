"""Reading training text: JSONL/JSON(.gz), Parquet, CSV, or plain text (one example per line), labelled
text for classifiers, and benchmark items as fine-tuning text for CoLoR-Filter's conditional model."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl


def read_table(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return pl.read_parquet(path)
    if name.endswith(".csv"):
        return pl.read_csv(path, infer_schema_length=0)  # every column as text: labels stay strings
    if name.endswith((".jsonl", ".json", ".ndjson")):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        return pl.read_ndjson(data, infer_schema_length=None)
    if name.endswith(".txt"):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return pl.DataFrame({"text": [line.strip() for line in f if line.strip()]})
    raise ValueError(f"{path}: expected .jsonl/.json/.parquet/.csv/.txt (optionally .gz)")


def _column(df: pl.DataFrame, name: str, path) -> pl.Series:
    if name not in df.columns:
        raise ValueError(f"{path}: no column {name!r} (columns: {df.columns})")
    return df[name]


def read_texts(paths: list[str | Path], text_field: str = "text", min_chars: int = 1) -> list[str]:
    texts: list[str] = []
    for path in paths:
        column = _column(read_table(path), text_field, path).cast(pl.Utf8)
        texts += [t for t in column.to_list() if t and len(t) >= min_chars]
    return texts


def benchmark_text(item: dict) -> str:
    """One benchmark item in llm-foundry's local-data JSONL form as text with its correct answer: the
    context, one space, the answer (OLMo's `doc_to_sft`, which CoLoR-Filter fine-tunes on, joins a
    task's prompt and its gold continuation the same way).

    - multiple choice `{query, choices, gold}`: query + " " + choices[gold]
    - language modelling `{context, continuation}`: context + " " + continuation
    - Winogrande `{context_options, continuation, gold}`: context_options[gold] + " " + continuation
    - TriviaQA `{context, answer}`: context + " " + answer
    """
    if {"query", "choices", "gold"} <= item.keys():
        context, answer = item["query"], item["choices"][int(item["gold"])]
    elif {"context_options", "continuation", "gold"} <= item.keys():
        context, answer = item["context_options"][int(item["gold"])], item["continuation"]
    elif {"context", "continuation"} <= item.keys():
        context, answer = item["context"], item["continuation"]
    elif {"context", "answer"} <= item.keys():
        context, answer = item["context"], item["answer"]
    else:
        raise ValueError(f"not a benchmark item in llm-foundry's form (query/choices/gold, context/continuation, "
                         f"context_options/continuation/gold or context/answer): keys {sorted(item)}")
    return f"{context} {answer}"


def read_benchmark_texts(paths: list[str | Path]) -> list[str]:
    """Every item of llm-foundry-form benchmark files as fine-tuning text (`benchmark_text`)."""
    texts: list[str] = []
    for path in paths:
        try:
            texts += [benchmark_text(item) for item in read_table(path).to_dicts()]
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return texts


def read_labelled(path: str | Path, text_field: str, label_field: str,
                  label_map: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Texts and their labels (as strings, renamed by `label_map`; unmapped labels are dropped)."""
    df = read_table(path)
    texts = _column(df, text_field, path).cast(pl.Utf8).to_list()
    labels = [str(x) for x in _column(df, label_field, path).to_list()]
    pairs = [(t, label_map.get(lab) if label_map else lab) for t, lab in zip(texts, labels, strict=True) if t]
    pairs = [(t, lab) for t, lab in pairs if lab is not None]
    return [t for t, _ in pairs], [lab for _, lab in pairs]


def parse_label_map(spec: str | None) -> dict[str, str] | None:
    """'0=toxic,1=toxic,2=clean' -> {'0': 'toxic', '1': 'toxic', '2': 'clean'}."""
    if not spec:
        return None
    try:
        return dict(item.split("=", 1) for item in spec.split(","))
    except ValueError:
        raise ValueError(f"--label-map wants 'from=to,from=to', got {spec!r}") from None
