"""The job's own files between stages (the work folder): Arrow IPC, LZ4-compressed.

They are written once and read once or twice by the same job on the same machine (or a Dask
worker beside it), so they need no encoding: Arrow's own layout, read back without parsing. LZ4
(Arrow's fastest codec) keeps the folder a fraction of the raw tables' decoded size, which a big base
on a small disk needs, for little CPU. Only the output and the published snapshot are Parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

SUFFIX = ".arrow"
_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def piece_path(folder: Path, chunk: int, part: int) -> Path:
    """One part's piece of one chunk, in a folder of pieces (a chunk's pieces sort in part order)."""
    return folder / f"{chunk:05d}.{part:04d}{SUFFIX}"


def read_chunk(folder: Path, chunk: int, columns: Sequence[str] | None = None) -> pa.Table | None:
    """A chunk's pieces in part order, as one table; None if it has none."""
    paths = sorted(folder.glob(f"{chunk:05d}.*{SUFFIX}"), key=lambda path: int(path.name.split(".")[1]))
    tables = [read_piece(path, columns) for path in paths]
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def write_piece(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)


class PieceWriter:
    """A piece written in parts (tables of one schema, appended); `close` finishes the file."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema, options=_OPTIONS)

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._sink.close()


def read_piece(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The piece (memory-mapped: only the columns read are decompressed)."""
    with pa.memory_map(str(path)) as source:
        if columns is None:
            return pa.ipc.open_file(source).read_all()
        names = pa.ipc.open_file(source).schema.names
        wanted = [names.index(name) for name in columns]
        options = pa.ipc.IpcReadOptions(included_fields=sorted(wanted))
        table = pa.ipc.open_file(source, options=options).read_all()
    return table.select(list(columns))


def read_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def piece_rows(path: Path) -> int:
    """Rows in a piece, from its footer (no data read)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
