"""The run index: what the committed runs of one deployment processed and kept, shared across runs.

Layout under INDEX (a local directory or an S3 prefix):

    _index.json                              format and key partitions (fixed when the index is made)
    _lock.json                               the run that may append now (one at a time)
    _generations/NNNNNNNN.json               one record per generation, created only if absent
    files/gNNNNNNNN.parquet                  the input files that generation's run processed
    <namespace>/keys/qQQQQ/gNNNNNNNN-pPPPPP.parquet   a stage's keys, by key % partitions, sorted
    <namespace>/docs/gNNNNNNNN-PPPPP.parquet          (ref, id) of the documents the keys point to

A namespace is a stage and the settings its keys depend on (`exact_dedup/whitespace`,
`dedup/3f2a…`). A document is named by its `ref`, `generation << 40 | its number in the stage's
input of that run`, so a key row stays small and the earlier document and run are found from it.

A generation is made visible by its record alone: parts are written first, then the record is
created with O_EXCL (locally) or a conditional PUT (S3). Readers see only parts that a record
names, so a run killed before its record leaves the index at its previous generation; its rerun
writes the same part names again. `compact` and `forget` write a snapshot record that replaces
every record before it (readers read back from the newest record to the latest snapshot).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.schemas.config import S3Config
from winnow.storage.fs import Location, resolve
from winnow.storage.lock import create_exclusive, output_lock
from winnow.storage.shards import ShardWriter

INDEX_META = "_index.json"
GENERATIONS = "_generations"
FORMAT = 1
REF_SHIFT = 40  # a ref is generation << 40 | document number: 2^40 documents per run, 2^23 generations


class IndexStateError(ValueError):
    """The index cannot be used as asked (another format, other key settings, unknown run)."""


def make_ref(generation: int, numbers: np.ndarray) -> np.ndarray:
    return (np.int64(generation) << np.int64(REF_SHIFT)) | numbers.astype(np.int64)


def ref_generation(refs: np.ndarray) -> np.ndarray:
    return refs >> np.int64(REF_SHIFT)


def _gen_name(generation: int) -> str:
    return f"{generation:08d}.json"


@dataclass(frozen=True)
class IndexView:
    """The index as a run reads it: every generation up to `base`, and where this run's own parts go
    (generation `base + 1`). Picklable: stages hand it to their Ray tasks."""

    root: Location
    partitions: int
    base: int
    runs: dict[int, str] = field(default_factory=dict)  # generation -> run id
    keys: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # namespace -> partition -> parts
    docs: dict[str, list[list]] = field(default_factory=dict)  # namespace -> [[path, first ref, last ref]]
    keyspaces: dict[str, dict] = field(default_factory=dict)  # namespace -> the settings its keys were made with
    files: list[str] = field(default_factory=list)  # the files tables
    records: list[dict] = field(default_factory=list)  # newest first, back to the latest snapshot

    @property
    def generation(self) -> int:
        """The generation this run appends."""
        return self.base + 1

    # -- what earlier runs processed
    def known_files(self) -> dict[str, tuple[int, int]]:
        """Input file URI -> (size, mtime in ns) of every file a committed run processed (the newest)."""
        known: dict[str, tuple[int, int]] = {}
        for path in self.files:
            table = pq.read_table(self.root.join(path).open_read(), columns=["uri", "size", "mtime_ns"])
            for uri, size, mtime in zip(*(table.column(c).to_pylist() for c in ("uri", "size", "mtime_ns")),
                                        strict=True):
                known[uri] = (size, mtime)
        return known

    # -- reading a namespace's keys
    def check_keyspace(self, stage: str, namespace: str, settings: dict) -> None:
        """Refuse a run whose keys would not be comparable with the index's keys for this stage."""
        others = {ns: s for ns, s in self.keyspaces.items() if ns.split("/")[0] == stage and ns != namespace}
        if others and namespace not in self.keyspaces:
            ns, made = next(iter(others.items()))
            differ = sorted(k for k in set(made) | set(settings) if made.get(k) != settings.get(k))
            raise IndexStateError(
                f"stage {stage!r}: the index {self.root.uri} holds keys made with other settings "
                f"({', '.join(f'{k}={made.get(k)!r}' for k in differ)}; this run: "
                f"{', '.join(f'{k}={settings.get(k)!r}' for k in differ)}); use the index's settings or a new index")

    def key_parts(self, namespace: str, p: int, run_partitions: int) -> list[Location]:
        """The parts that can hold keys of run partition `p` (of `run_partitions`, a power of two):
        those of index partitions q with q = p modulo the smaller of the two partition counts."""
        m = min(run_partitions, self.partitions)
        return [self.root.join(path) for q, paths in sorted(self.keys.get(namespace, {}).items()) if q % m == p % m
                for path in paths]

    def matching_keys(self, namespace: str, p: int, run_partitions: int, keys: np.ndarray,
                      columns: list[str]) -> tuple[pa.Table | None, int]:
        """The index rows of `namespace` whose `key` is among `keys` (all of run partition p), read part
        by part (only what matches is kept in memory); and the bytes read."""
        wanted = pa.array(np.unique(keys), pa.uint64())
        found, read = [], 0
        for loc in self.key_parts(namespace, p, run_partitions):
            with loc.open_read() as f:
                parquet = pq.ParquetFile(f)
                read += parquet.metadata.serialized_size
                names = parquet.schema_arrow.names
                for group in range(parquet.num_row_groups):  # (a part is written in row groups of 1Mi rows)
                    chunks = parquet.metadata.row_group(group)
                    read += sum(chunks.column(names.index(c)).total_compressed_size for c in columns)
                    table = parquet.read_row_group(group, columns=columns)
                    hit = table.filter(pc.is_in(table.column("key"), value_set=wanted))
                    if hit.num_rows:
                        found.append(hit)
        return (pa.concat_tables(found) if found else None), read

    def lookup(self, namespace: str, refs: np.ndarray) -> dict[int, tuple[str, str]]:
        """ref -> (document id, run id) for the given refs of `namespace`."""
        table = self.documents(namespace, refs, ["ref", "id"])
        return {ref: (doc_id, self.runs.get(ref >> REF_SHIFT, "?"))
                for ref, doc_id in zip(table.column("ref").to_pylist(), table.column("id").to_pylist(), strict=True)}

    def documents(self, namespace: str, refs: np.ndarray, columns: list[str]) -> pa.Table:
        """The docs rows of the given refs (reading only the docs parts whose ref range holds one)."""
        refs = np.unique(np.asarray(refs, dtype=np.int64))
        wanted = pa.array(refs, pa.int64())
        found = []
        for path, first, last in self.docs.get(namespace, []) if len(refs) else []:
            if ((refs >= first) & (refs <= last)).any():
                table = pq.read_table(self.root.join(path).open_read(), columns=columns)
                found.append(table.filter(pc.is_in(table.column("ref"), value_set=wanted)))
        return pa.concat_tables(found) if found else pa.table({c: pa.array([], pa.int64()) for c in columns})

    # -- writing this run's parts (committed later by `RunIndex.commit`)
    def write_keys(self, namespace: str, p: int, run_partitions: int, table: pa.Table,
                   sort: list[str]) -> list[list]:
        """Run partition p's new key rows, one sorted part per index partition it covers; [[path, rows, bytes]]."""
        m = min(run_partitions, self.partitions)
        target = (table.column("key").to_numpy() % np.uint64(self.partitions)).astype(np.int64)
        written = []
        for q in range(self.partitions):
            if q % m != p % m:
                continue
            part = table.filter(pa.array(target == q)).sort_by([(c, "ascending") for c in sort])
            path = f"{namespace}/keys/q{q:04d}/g{self.generation:08d}-p{p:05d}.parquet"
            written.append([path, *_write(self.root.join(path), part)])
        return written

    def write_docs(self, namespace: str, n: int, refs: np.ndarray, ids: pa.Array, **columns) -> list:
        """Part n of this run's (ref, id, *columns) table; [path, first ref, last ref, rows, bytes]."""
        table = pa.table({"ref": pa.array(refs, pa.int64()), "id": ids, **columns}).sort_by("ref")
        path = f"{namespace}/docs/g{self.generation:08d}-{n:05d}.parquet"
        rows, size = _write(self.root.join(path), table)
        first, last = (int(refs.min()), int(refs.max())) if len(refs) else (0, -1)
        return [path, first, last, rows, size]


# Encodings that keep the index small: a key is a random 64-bit hash (stored plain); a ref in a part sorted by
# key is random in its low bytes only (byte-stream split lets zstd drop the rest); sorted columns (a part's
# band, a docs table's refs and ids) are delta- or run-length-encoded.
_ENCODINGS = {"ref": "BYTE_STREAM_SPLIT"}
_SORTED_ENCODINGS = {"ref": "DELTA_BINARY_PACKED", "id": "DELTA_BYTE_ARRAY"}


def _write(loc: Location, table: pa.Table) -> tuple[int, int]:
    docs = "id" in table.schema.names and "ref" in table.schema.names
    encodings = {c: e for c, e in (_SORTED_ENCODINGS if docs else _ENCODINGS).items() if c in table.schema.names}
    writer = ShardWriter(loc, table.schema, use_dictionary=[c for c in table.schema.names if c in ("band", "run_id")],
                         column_encoding=encodings)
    writer.write(table)
    done = writer.commit()
    return done["rows"], done["bytes"]


class RunIndex:
    """An index location: its records, its lock, its commits, and its maintenance."""

    def __init__(self, uri: str, s3: S3Config | None = None, partitions: int = 32):
        self.s3 = s3 or S3Config()
        self.root = resolve(uri, self.s3)
        meta = self.root.join(INDEX_META)
        if meta.exists():
            info = json.loads(meta.read_bytes())
            if info.get("format") != FORMAT:
                raise IndexStateError(f"index {self.root.uri}: format {info.get('format')!r}; this winnow reads "
                                      f"format {FORMAT}")
            self.partitions = int(info["partitions"])
        else:
            self.partitions = partitions

    def lock(self, run_id: str, break_lock: bool = False):
        """One appender at a time: the index's own `_lock.json`, held for the whole run."""
        return output_lock(self.root, run_id, self.s3, break_lock, what="index")

    # -- records
    def generation_numbers(self) -> list[int]:
        folder = self.root.join(GENERATIONS)
        if not folder.exists():
            return []
        return sorted(int(loc.path.rsplit("/", 1)[-1].split(".")[0]) for loc in _listing(folder))

    def record(self, generation: int) -> dict:
        return json.loads(self.root.join(GENERATIONS, _gen_name(generation)).read_bytes())

    def view(self, base: int | None = None) -> IndexView:
        """The index as of generation `base` (default the newest)."""
        numbers = [g for g in self.generation_numbers() if base is None or g <= base]
        records: list[dict] = []
        for g in reversed(numbers):
            records.append(self.record(g))
            if records[-1]["kind"] == "snapshot":
                break
        view = IndexView(self.root, self.partitions, numbers[-1] if numbers else 0, records=records)
        for record in reversed(records):
            view.runs.update({int(g): r for g, r in record["runs"].items()})
            view.files.extend(record["files"])
            for ns, entry in record["namespaces"].items():
                view.keyspaces[ns] = entry["keyspace"]
                for path, *_ in entry["keys"]:
                    q = int(path.split("/keys/q", 1)[1][:4])
                    view.keys.setdefault(ns, {}).setdefault(q, []).append(path)
                view.docs.setdefault(ns, []).extend([path, first, last] for path, first, last, *_ in entry["docs"])
        return view

    def commit(self, record: dict) -> int:
        """Make `record` (an append or a snapshot) the next generation; its parts are already written."""
        meta = self.root.join(INDEX_META)
        if not meta.exists():
            meta.write_bytes_atomic(json.dumps({"format": FORMAT, "partitions": self.partitions}).encode())
        generation = record["generation"]
        record = {**record, "committed": time.time()}
        if not create_exclusive(self.root.join(GENERATIONS, _gen_name(generation)),
                                json.dumps(record, indent=1).encode(), self.s3):
            raise IndexStateError(f"index {self.root.uri}: generation {generation} was committed by another run "
                              f"({self.record(generation).get('run_id')}) while this run held the lock")
        return generation

    def write_files(self, generation: int, run_id: str, files: list[Location]) -> str:
        """The files table of a generation: each input file's URI, size and modification time."""
        infos = [f.fs.get_file_info(f.path) for f in files]
        path = f"files/g{generation:08d}.parquet"
        _write(self.root.join(path), pa.table({
            "uri": [f.uri for f in files], "size": pa.array([i.size for i in infos], pa.int64()),
            "mtime_ns": pa.array([i.mtime_ns or 0 for i in infos], pa.int64()),
            "run_id": [run_id] * len(files)}))
        return path

    # -- maintenance
    def describe(self) -> dict:
        """Generations, runs, files, documents and bytes of the index as of now."""
        view = self.view()
        size = sum(self.root.fs.get_file_info(loc.path).size for loc in self._referenced(view))
        per_ns = {}
        for ns in sorted(view.keyspaces):
            per_ns[ns] = {"keyspace": view.keyspaces[ns],
                          "parts": sum(len(p) for p in view.keys.get(ns, {}).values()),
                          "keys": _rows([self.root.join(p) for ps in view.keys.get(ns, {}).values() for p in ps]),
                          "documents": _rows([self.root.join(d[0]) for d in view.docs.get(ns, [])])}
        return {"index": self.root.uri, "partitions": self.partitions, "generation": view.base,
                "generations": len(self.generation_numbers()), "runs": dict(sorted(view.runs.items())),
                "files": _rows([self.root.join(p) for p in view.files]), "bytes": size, "namespaces": per_ns}

    def _referenced(self, view: IndexView) -> list[Location]:
        paths = list(view.files) + [p for parts in view.keys.values() for ps in parts.values() for p in ps] \
            + [d[0] for docs in view.docs.values() for d in docs]
        return [self.root.join(p) for p in paths]

    def rewrite(self, run_id: str, forget: str | None = None) -> dict:
        """A snapshot generation: every partition's parts merged into one sorted part, every docs and
        files table into one; without the entries of run `forget` (its keys, documents and files). Parts
        no record names any more are deleted. Hold the lock around it."""
        view = self.view()
        if forget is not None and forget not in view.runs.values():
            raise IndexStateError(f"index {self.root.uri} holds no run {forget!r} (runs: "
                              f"{', '.join(sorted(set(view.runs.values()))) or 'none'})")
        dropped = {g for g, r in view.runs.items() if r == forget}
        generation = view.base + 1
        record = {"kind": "snapshot", "generation": generation, "run_id": run_id,
                  "runs": {str(g): r for g, r in view.runs.items() if g not in dropped},
                  "forgot": forget, "files": [], "namespaces": {}}
        files = [t for t in (_read_all(self.root.join(p)) for p in view.files) if t is not None]
        if files:
            table = pa.concat_tables(files)
            if forget is not None:
                table = table.filter(pc.not_equal(table.column("run_id"), forget))
            path = f"files/g{generation:08d}.parquet"
            _write(self.root.join(path), table)
            record["files"].append(path)
        for ns, keyspace in view.keyspaces.items():
            entry = {"keyspace": keyspace, "keys": [], "docs": []}
            for q, paths in sorted(view.keys.get(ns, {}).items()):
                table = pa.concat_tables([_read_all(self.root.join(p)) for p in paths])
                if dropped:
                    table = table.filter(pa.array(~np.isin(ref_generation(table.column("ref").to_numpy()),
                                                           list(dropped))))
                sort = [c for c in ("band", "key", "h2", "ref") if c in table.schema.names]
                table = table.sort_by([(c, "ascending") for c in sort])
                path = f"{ns}/keys/q{q:04d}/g{generation:08d}-p00000.parquet"
                entry["keys"].append([path, *_write(self.root.join(path), table)])
            docs = [_read_all(self.root.join(d[0])) for d in view.docs.get(ns, [])]
            if docs:
                table = pa.concat_tables(docs)
                if dropped:
                    table = table.filter(pa.array(~np.isin(ref_generation(table.column("ref").to_numpy()),
                                                           list(dropped))))
                table = table.sort_by("ref")
                refs = table.column("ref").to_numpy()
                path = f"{ns}/docs/g{generation:08d}-00000.parquet"
                rows, size = _write(self.root.join(path), table)
                entry["docs"].append([path, int(refs.min()) if rows else 0, int(refs.max()) if rows else -1,
                                      rows, size])
            record["namespaces"][ns] = entry
        self.commit(record)
        self._delete_unreferenced()
        return record

    def _delete_unreferenced(self) -> None:
        """Remove parts no record of the current view names (merged ones, a forgotten run's, a killed run's)."""
        from pyarrow.fs import FileSelector, FileType

        keep = {loc.path for loc in self._referenced(self.view())}
        for info in self.root.fs.get_file_info(FileSelector(self.root.path, recursive=True)):
            rel = info.path[len(self.root.path.rstrip("/")) + 1:]
            if info.type == FileType.File and not rel.startswith("_") and info.path not in keep:
                self.root.fs.delete_file(info.path)


def _listing(folder: Location) -> Iterator[Location]:
    from pyarrow.fs import FileSelector, FileType

    for info in folder.fs.get_file_info(FileSelector(folder.path)):
        if info.type == FileType.File and info.base_name.endswith(".json"):
            yield Location(folder.fs, info.path, folder.uri + "/" + info.base_name)


def _read_all(loc: Location) -> pa.Table | None:
    with loc.open_read() as f:
        return pq.read_table(f)


def _rows(locs: list[Location]) -> int:
    total = 0
    for loc in locs:
        with loc.open_read() as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total
