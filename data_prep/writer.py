"""Streaming output: parquet shards written as rows arrive, the validation hold-out, and the
staged output folder that makes a build appear complete or not at all."""

from __future__ import annotations

import errno
import glob
import math
import os
import random
import shutil
import tempfile
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.schema import OUTPUT_SCHEMA
from data_prep.sources import SourceError

ROW_GROUP_ROWS = 64  # rows buffered before a write: bounds memory to a few dozen images


class ShardWriter:
    """Writes rows to ``{prefix}-00000.parquet``, ``{prefix}-00001.parquet``, ... (or one ``file_name``).

    Every shard uses ``schema`` (the RL shards' :data:`OUTPUT_SCHEMA` unless given);
    ``extra_info.index`` is the row's position in the split.
    """

    def __init__(self, out_dir: str, prefix: str, shard_rows: int = 0, file_name: str | None = None,
                 schema=OUTPUT_SCHEMA):
        self.out_dir, self.prefix, self.file_name, self.schema = out_dir, prefix, file_name, schema
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


# The validation hold-out never takes more than this share of the kept rows, so a small input (or
# --limit) still leaves rows to train on.
MAX_VAL_FRACTION = 0.2


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

    def cap(self, fraction: float = MAX_VAL_FRACTION) -> int | None:
        """Keep at most ``fraction`` of the rows seen; the surplus (a uniform draw) goes to training.

        Returns the capped size, or None when the cap did not apply."""
        allowed = math.floor(self.seen * fraction)
        if len(self.rows) <= allowed:
            return None
        keep = set(self.rng.sample(range(len(self.rows)), allowed))
        for position, row in enumerate(self.rows):
            if position not in keep:
                self.train.write(row)
        self.rows = [row for position, row in enumerate(self.rows) if position in keep]
        return allowed

    def write(self, writer: ShardWriter) -> None:
        for row in self.rows:
            writer.write(row)
        self.rows = []


# ---- the output folder ------------------------------------------------------------------------
REPORT_NAME = "report.json"  # written last: its presence marks a complete build
# errno values that mean "this location cannot take the output", as opposed to a bug or a bad input
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class OutputError(SourceError):
    """--out cannot take the build (a file, a read-only or full filesystem, an earlier build)."""


def existing_outputs(out: str, patterns: tuple[str, ...]) -> list[str]:
    return sorted(os.path.basename(p) for pattern in patterns for p in glob.glob(os.path.join(out, pattern)))


def check_out_dir(out: str, overwrite: bool, patterns: tuple[str, ...]) -> None:
    """Before any work: --out is a folder or absent, and an earlier build in it goes only with --overwrite."""
    path = os.path.expanduser(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"--out {out} is a file, not a folder: give a folder path (it is created if absent)")
    existing = existing_outputs(path, patterns) if os.path.isdir(path) else []
    if existing and not overwrite:
        what = "a build" if REPORT_NAME in existing else f"an incomplete build (no {REPORT_NAME})"
        raise OutputError(f"--out {out} already holds {what} ({existing[0]}, ...); pass --overwrite to replace it")


def write_failure(out: str, exc: OSError) -> OutputError:
    fix = {errno.ENOSPC: "free some space or choose another --out",
           errno.EDQUOT: "free some quota or choose another --out",
           errno.EFBIG: "use a smaller --shard-size or another filesystem"}.get(exc.errno, "choose a writable --out")
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputError(f"--out {out}: cannot write the build: {exc.strerror or exc}{where}; nothing was written "
                       f"there: {fix}")


@contextmanager
def staged_output(out: str, overwrite: bool, patterns: tuple[str, ...]):
    """Yield a temporary folder beside ``out`` (same filesystem) to write the build into; on success
    move it into place, on any failure remove it and leave ``out`` as it was.

    ``patterns``: the build's output files (globs), the ones an earlier build left and --overwrite
    replaces. The caller writes ``report.json`` into the stage last; it is moved in last as well.
    """
    check_out_dir(out, overwrite, patterns)
    # realpath: a symlinked --out is built beside the folder it points to (its filesystem), not replaced
    target = os.path.realpath(os.path.expanduser(out))
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=os.path.dirname(target))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp's folder is private (0700); the build is not
    except OSError as exc:
        raise write_failure(out, exc) from None
    try:
        yield stage
        publish(stage, target, patterns)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise write_failure(out, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: str, target: str, patterns: tuple[str, ...]) -> None:
    """Move a finished build from ``stage`` to ``target``.

    An absent or empty target: one rename, atomic. A folder with other content: the earlier build's
    report goes first and the new report comes last, so no moment shows a report beside a mix of
    old and new files (the preflight and the builders treat a folder without a report as incomplete).
    """
    if not os.path.isdir(target) or not os.listdir(target):
        os.replace(stage, target)  # rename(2) replaces an empty directory
        return
    report = os.path.join(target, REPORT_NAME)
    if os.path.exists(report):
        os.remove(report)
    for name in existing_outputs(target, patterns):
        os.remove(os.path.join(target, name))
    names = sorted(os.listdir(stage), key=lambda name: name == REPORT_NAME)
    for name in names:
        os.replace(os.path.join(stage, name), os.path.join(target, name))
