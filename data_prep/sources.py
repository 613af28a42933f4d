"""Opening the inputs: local ``datasets`` saves, parquet files or folders, ViRL39K folders, hub ids.

Everything here runs before any row is processed, so a wrong path, a missing split or a missing
required column is a :class:`SourceError` with a clear message, not a failure halfway through.
Rows come out as undecoded Arrow values (images stay encoded bytes) in bounded batches.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from typing import Iterator

import pyarrow.parquet as pq

from data_prep.images import ImageStore
from data_prep.rows import REQUIRED_COLUMNS
from data_prep.schema import BENCHMARK, CHARTQA, GEOMETRY3K, UNDECODABLE_TEXT, UNREADABLE_FILE, VIRL39K

VIRL_PARQUET = "39Krelease.parquet"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceError(ValueError):
    """An input that cannot be used at all; raised before any work starts."""


@dataclass
class Unreadable:
    """A run of rows whose bytes could not be read (a damaged parquet row group): counted, not lost."""

    num_rows: int
    detail: str


@dataclass
class BadRow:
    """One row that could not be turned into Python values (a text cell that is not UTF-8): dropped alone."""

    reason: str
    detail: str


def rows_of(batch) -> list[dict | BadRow]:
    """An Arrow batch/table as row dicts; a row that cannot be converted becomes a :class:`BadRow`.

    Converting the whole batch is the fast path; a failure there (one invalid UTF-8 string raises for
    the whole batch) falls back to row by row, so a bad cell costs its own row, not its batch.
    """
    try:
        return batch.to_pylist()
    except Exception:
        pass
    rows = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            rows.append(row.to_pylist()[0])
        except Exception as exc:
            rows.append(_bad_row(row, exc))
    return rows


def _bad_row(row, exc: Exception) -> BadRow:
    reason = UNDECODABLE_TEXT if isinstance(exc, UnicodeDecodeError) else UNREADABLE_FILE
    bad_columns = []
    for name in row.schema.names:
        try:
            row.column(name).to_pylist()
        except Exception:
            bad_columns.append(name)
    return BadRow(reason, f"column(s) {', '.join(bad_columns) or '?'}: {type(exc).__name__}: {exc}")


class SplitTable:
    """One split of one input: its columns, its length, and its rows in batches of dicts."""

    label: str
    split: str
    columns: list[str]
    num_rows: int

    def batches(self, batch_size: int, columns: list[str]) -> Iterator[list[dict | BadRow] | Unreadable]:
        raise NotImplementedError


class DatasetSplit(SplitTable):
    """A ``datasets.Dataset`` (from ``load_from_disk`` or the hub): memory-mapped Arrow, read in slices."""

    def __init__(self, dataset, label: str, split: str):
        self.dataset, self.label, self.split = dataset, label, split
        self.columns = list(dataset.column_names)
        self.num_rows = len(dataset)

    def batches(self, batch_size, columns):
        # Arrow format: no feature decoding, so images stay {"bytes", "path"} structs.
        table = self.dataset.select_columns(columns).with_format("arrow")
        for start in range(0, self.num_rows, batch_size):
            yield rows_of(table[start:start + batch_size])


class ParquetSplit(SplitTable):
    """Parquet files streamed record batch by record batch; a damaged row group becomes Unreadable."""

    def __init__(self, files: list[str], label: str, split: str):
        self.files, self.label, self.split = files, label, split
        self.columns, self.num_rows = None, 0
        for path in files:
            try:
                meta = pq.ParquetFile(path)
            except Exception as exc:
                raise SourceError(f"{label}: cannot read parquet file {path}: {exc}") from None
            names = meta.schema_arrow.names
            if self.columns is None:
                self.columns = list(names)
            else:  # a column only some files have is unusable as a required column
                self.columns = [c for c in self.columns if c in names]
            self.num_rows += meta.metadata.num_rows

    def batches(self, batch_size, columns):
        for path in self.files:
            pfile = pq.ParquetFile(path)
            for group in range(pfile.num_row_groups):
                expected, done = pfile.metadata.row_group(group).num_rows, 0
                try:
                    for batch in pfile.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
                        rows = rows_of(batch)
                        done += len(rows)
                        yield rows
                except Exception as exc:
                    yield Unreadable(expected - done, f"{path} row group {group}: {type(exc).__name__}: {exc}")


def _looks_like_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not spec.startswith((".", "~"))


def _split_names_error(label: str, wanted: str, available) -> SourceError:
    return SourceError(f"{label}: no split {wanted!r}; available: {', '.join(sorted(available)) or 'none'}")


def _select_splits(label: str, available: dict, splits: list[str], make) -> list[SplitTable]:
    missing = [s for s in splits if s not in available]
    if missing:
        raise _split_names_error(label, missing[0], available)
    return [make(available[s], s) for s in splits]


def _single_split(label: str, splits: list[str]) -> str:
    if len(splits) != 1:
        raise SourceError(f"{label} holds a single split, but splits {splits} were asked for")
    return splits[0]


def open_tabular(spec: str, splits: list[str], label: str, *, optional_splits: bool = False,
                 config: str | None = None) -> list[SplitTable]:
    """Open ``spec`` (a ``save_to_disk`` folder, a parquet file or folder, or a hub id) at ``splits``.

    With ``optional_splits`` a missing split is skipped instead of being an error (used for the
    automatic test-split exclusion, where an input without a test split is normal). ``config`` is
    the hub dataset's configuration name (MMMU-Pro's ``vision``); local copies hold one configuration.
    """
    spec = os.path.expanduser(spec)
    if os.path.isfile(spec):
        if not spec.endswith(".parquet"):
            raise SourceError(f"{label}: {spec} is a file but not a .parquet file")
        if optional_splits:
            return []
        return [ParquetSplit([spec], label, _single_split(label, splits))]
    if os.path.isdir(spec):
        if any(os.path.exists(os.path.join(spec, name)) for name in ("dataset_dict.json", "state.json")):
            import datasets

            try:
                loaded = datasets.load_from_disk(spec)
            except Exception as exc:
                raise SourceError(f"{label}: cannot load the datasets save at {spec}: {exc}") from None
            if isinstance(loaded, datasets.Dataset):
                if optional_splits:
                    return []
                return [DatasetSplit(loaded, label, _single_split(label, splits))]
            if optional_splits:
                splits = [s for s in splits if s in loaded]
            return _select_splits(label, loaded, splits, lambda ds, s: DatasetSplit(ds, label, s))
        return _open_parquet_folder(spec, splits, label, optional_splits)
    if _looks_like_hub_id(spec):
        return _open_hub(spec, splits, label, optional_splits, config)
    raise SourceError(f"{label}: {spec} does not exist (and is not a hub dataset id)")


def _open_parquet_folder(spec: str, splits: list[str], label: str, optional_splits: bool) -> list[SplitTable]:
    # datasets' own split inference (train-*.parquet, data/test/..., ...), then our streaming reader.
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(spec), spec)
    except Exception as exc:
        raise SourceError(f"{label}: {spec} is neither a datasets save nor a folder of data files: {exc}") from None
    by_split = {name: [str(f) for f in found if str(f).endswith(".parquet")] for name, found in files.items()}
    by_split = {name: found for name, found in by_split.items() if found}
    if not by_split:
        raise SourceError(f"{label}: no parquet files under {spec}")
    if optional_splits:
        splits = [s for s in splits if s in by_split]
    return _select_splits(label, by_split, splits, lambda found, s: ParquetSplit(sorted(found), label, s))


def _open_hub(spec: str, splits: list[str], label: str, optional_splits: bool,
              config: str | None = None) -> list[SplitTable]:
    import datasets

    try:
        available = datasets.get_dataset_split_names(spec, config)
    except Exception as exc:
        raise SourceError(f"{label}: {spec} is not a local path, and opening it as a Hugging Face hub "
                          f"dataset failed: {type(exc).__name__}: {exc}") from None
    if optional_splits:
        splits = [s for s in splits if s in available]
    missing = [s for s in splits if s not in available]
    if missing:
        raise _split_names_error(label, missing[0], available)
    return [DatasetSplit(datasets.load_dataset(spec, config, split=s), label, s) for s in splits]


def check_columns(tables: list[SplitTable], required: tuple[str, ...], label: str) -> None:
    for table in tables:
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise SourceError(f"{label} (split {table.split}): missing required column(s) {missing}; "
                              f"it has {table.columns}")


@dataclass
class ViRLInput:
    table: ParquetSplit
    store: ImageStore


def open_virl(spec: str, label: str = "--virl39k") -> ViRLInput:
    """A folder with ``39Krelease.parquet`` and ``images/`` and/or ``images.zip`` (or the hub id)."""
    spec = os.path.expanduser(spec)
    if not os.path.exists(spec) and _looks_like_hub_id(spec):
        try:
            from huggingface_hub import snapshot_download

            spec = snapshot_download(repo_id=spec, repo_type="dataset",
                                     allow_patterns=[VIRL_PARQUET, "images.zip"])
        except Exception as exc:
            raise SourceError(f"{label}: {spec} is not a local folder, and downloading it from the Hugging "
                              f"Face hub failed: {type(exc).__name__}: {exc}") from None
    if os.path.isfile(spec) and spec.endswith(".parquet"):
        parquet, folder = spec, os.path.dirname(os.path.abspath(spec))
    elif os.path.isdir(spec):
        parquet, folder = os.path.join(spec, VIRL_PARQUET), spec
        if not os.path.isfile(parquet):
            raise SourceError(f"{label}: {spec} has no {VIRL_PARQUET}")
    else:
        raise SourceError(f"{label}: {spec} does not exist (expected a folder with {VIRL_PARQUET} and "
                          f"images/ or images.zip)")
    images_dir = os.path.join(folder, "images")
    zip_path = os.path.join(folder, "images.zip")
    has_dir, has_zip = os.path.isdir(images_dir), os.path.isfile(zip_path)
    if not (has_dir or has_zip):
        raise SourceError(f"{label}: {folder} has neither images/ nor images.zip")
    if has_zip:
        try:
            zipfile.ZipFile(zip_path).close()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{label}: {zip_path} is not a readable zip archive: {exc}") from None
    table = ParquetSplit([parquet], label, "train")
    check_columns([table], REQUIRED_COLUMNS[VIRL39K], label)
    return ViRLInput(table, ImageStore(root=folder if has_dir else None, zip_path=zip_path if has_zip else None))


def exclude_kind(table: SplitTable) -> str:
    """Which benchmark a test split looks like, from its columns."""
    cols = set(table.columns)
    if {"query", "image"} <= cols:
        return CHARTQA
    if {"problem", "images"} <= cols:
        return GEOMETRY3K
    if {"question", "images"} <= cols:
        return BENCHMARK
    raise SourceError(f"{table.label} (split {table.split}): columns {sorted(cols)} look like neither ChartQA "
                      f"(query, image), Geometry3K (problem, images) nor a benchmark set (question, images)")


class JsonSplit(SplitTable):
    """A JSON array file (Vision-R1-cold ships two) or a JSON-lines file, streamed row by row.

    ``json.load`` would hold the whole file (~1 GB of reasoning text) in memory; ``ijson`` walks the
    array item by item. Rows are counted in a first streaming pass so progress bars and ``--limit``
    know the total. A syntax error mid-file turns the rest of the file into one Unreadable run.
    """

    def __init__(self, path: str, label: str, split: str):
        self.path, self.label, self.split = path, label, split
        self.lines = path.endswith((".jsonl", ".ndjson"))
        self.columns, self.num_rows = [], 0
        seen: dict[str, None] = {}
        try:
            for row in self._rows():
                self.num_rows += 1
                if isinstance(row, dict) and len(seen) < 64:
                    seen.update(dict.fromkeys(row))
        except Exception as exc:
            raise SourceError(f"{label}: cannot parse {path} as {'JSON lines' if self.lines else 'a JSON array'}: "
                              f"{type(exc).__name__}: {exc}") from None
        self.columns = list(seen)

    def _rows(self):
        if self.lines:
            import json

            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
            return
        import ijson

        with open(self.path, "rb") as fh:
            yield from ijson.items(fh, "item", use_float=True)

    def batches(self, batch_size, columns):
        batch, done = [], 0
        try:
            for row in self._rows():
                batch.append({c: row.get(c) for c in columns} if isinstance(row, dict) else {})
                if len(batch) >= batch_size:
                    done += len(batch)
                    yield batch
                    batch = []
        except Exception as exc:  # the file changed since it was counted
            if batch:
                done += len(batch)
                yield batch
                batch = []
            yield Unreadable(self.num_rows - done, f"{self.path}: {type(exc).__name__}: {exc}")
            return
        if batch:
            yield batch


# Vision-R1-cold's files, by subset, and the image folder its README puts each subset's images in.
VISION_R1_FILES = {"llava_cot": "vision_r1_llava_cot_full.json", "mulberry": "vision_r1_mulberry_sft_full.json"}
VISION_R1_IMAGE_DIRS = {"llava_cot": "llava_cot_images", "mulberry": "mulberry_images"}


@dataclass
class ColdStartInput:
    tables: dict[str, JsonSplit]  # subset -> its file
    image_root: str  # image paths in the files are relative to this folder (LLaMA-Factory's dataset_dir)


def open_vision_r1_cold(spec: str, subsets: list[str], image_root: str | None = None,
                        label: str = "--vision-r1-cold") -> ColdStartInput:
    """A folder with Vision-R1-cold's JSON files (and its image folders), or the hub id.

    The hub repository holds only the JSON files: the images come from LLaVA-CoT-100k and
    Mulberry-SFT and must be unpacked under ``image_root`` (default: the folder itself).
    """
    spec = os.path.expanduser(spec)
    if not os.path.exists(spec) and _looks_like_hub_id(spec):
        try:
            from huggingface_hub import snapshot_download

            spec = snapshot_download(repo_id=spec, repo_type="dataset",
                                     allow_patterns=[VISION_R1_FILES[s] for s in subsets])
        except Exception as exc:
            raise SourceError(f"{label}: {spec} is not a local folder, and downloading it from the Hugging "
                              f"Face hub failed: {type(exc).__name__}: {exc}") from None
    if not os.path.isdir(spec):
        raise SourceError(f"{label}: {spec} is not a folder (expected one holding "
                          f"{', '.join(VISION_R1_FILES[s] for s in subsets)})")
    root = os.path.expanduser(image_root) if image_root else spec
    if not os.path.isdir(root):
        raise SourceError(f"--image-root: {root} is not a folder")
    tables = {}
    for subset in subsets:
        path = os.path.join(spec, VISION_R1_FILES[subset])
        if not os.path.isfile(path):
            raise SourceError(f"{label}: {spec} has no {VISION_R1_FILES[subset]} (subset {subset}); "
                              f"choose others with --subsets")
        tables[subset] = JsonSplit(path, f"{label} {VISION_R1_FILES[subset]}", "train")
        check_columns([tables[subset]], REQUIRED_COLUMNS[subset], tables[subset].label)
    return ColdStartInput(tables, root)
