"""Streaming output: parquet shards written as rows arrive, and the validation hold-out."""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.schema import OUTPUT_SCHEMA

ROW_GROUP_ROWS = 64  # rows buffered before a write: bounds memory to a few dozen images


class ShardWriter:
    """Writes rows to ``{prefix}-00000.parquet``, ``{prefix}-00001.parquet``, ... (or one ``file_name``).

    Every shard uses :data:`OUTPUT_SCHEMA`; ``extra_info.index`` is the row's position in the split.
    """

    def __init__(self, out_dir: str, prefix: str, shard_rows: int = 0, file_name: str | None = None,
                 schema=OUTPUT_SCHEMA):
        self.schema = schema
        self.out_dir, self.prefix, self.file_name = out_dir, prefix, file_name
        self.shard_rows = shard_rows if shard_rows > 0 and file_name is None else 0
        self.rows_written = 0
        self.files: list[tuple[str, int]] = []  # (path, rows)
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0
        self._buffer: list[dict] = []
        self.count_by_source: dict[str, int] = {}

    def _path(self) -> str:
        name = self.file_name or f"{self.prefix}-{len(self.files):05d}.parquet"
        return os.path.join(self.out_dir, name)

    def write(self, row: dict) -> None:
        row["extra_info"]["index"] = self.rows_written
        self.rows_written += 1
        self.count_by_source[row["data_source"]] = self.count_by_source.get(row["data_source"], 0) + 1
        self._buffer.append(row)
        limit = ROW_GROUP_ROWS
        if self.shard_rows:
            limit = min(limit, self.shard_rows - self._in_shard)
        if len(self._buffer) >= limit:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self._path()
            self._writer = pq.ParquetWriter(path, self.schema)
            self.files.append((path, 0))
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table)
        self._in_shard += len(self._buffer)
        path, rows = self.files[-1]
        self.files[-1] = (path, rows + len(self._buffer))
        self._buffer = []
        if self.shard_rows and self._in_shard >= self.shard_rows:
            self._writer.close()
            self._writer, self._in_shard = None, 0

    def close(self) -> list[tuple[str, int]]:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self.files:  # an empty split still gets a (schema-only) file, so configs can name it
            path = self._path()
            pq.write_table(self.schema.empty_table(), path)
            self.files.append((path, 0))
        return self.files


class HoldOut:
    """Reservoir sampling (Algorithm R): a uniform random ``size``-row hold-out of a stream.

    Streaming-friendly: only the reservoir is in memory; a row evicted from it goes to training
    at once. Deterministic for a given seed and input order.
    """

    def __init__(self, size: int, seed: int, train: ShardWriter):
        self.size, self.train = max(0, size), train
        self.rng = random.Random(seed)
        self.rows: list[dict] = []
        self.seen = 0

    def offer(self, row: dict) -> None:
        position = self.seen
        self.seen += 1
        if position < self.size:
            self.rows.append(row)
            return
        slot = self.rng.randrange(position + 1)
        if slot < self.size:
            self.rows[slot], row = row, self.rows[slot]
        self.train.write(row)

    def write(self, writer: ShardWriter) -> None:
        for row in self.rows:
            writer.write(row)
        self.rows = []
