"""Checkpoints that survive a SIGKILL at any moment, and appended outputs cut back to the resumed step.

verl 0.9.1 lays a run folder out as::

    <default_local_dir>/latest_checkpointed_iteration.txt      the tracker: "N"
    <default_local_dir>/global_step_N/actor/model_world_size_W_rank_R.pt   (and optim_, extra_state_;
                                         fsdp_config.json, huggingface/ from rank 0)
    <default_local_dir>/global_step_N/data.pt                   the dataloader state

and writes all of it in place (``torch.save`` / ``open("w")``): the tracker is its only commit marker,
and it is truncated before it is rewritten, so a kill there leaves an empty tracker that verl cannot
parse; its actor rotation deletes the previous actor folder before the tracker moves on.
This module adds, for the trainer (``recipe.care.trainer``):

- a completion mark ``global_step_N/COMPLETE.json`` (``{step, world_size, files}``, ``files``: relative
  path -> size in bytes), written atomically after every file of the checkpoint is on disk;
- an atomic tracker write (tmp + fsync + ``os.replace``);
- :func:`resolve_resume`: the newest complete folder, the tracker repaired to name it, a clear error when
  folders exist but none is complete or the world size changed;
- :func:`rotate`: whole ``global_step_X`` folders removed oldest first, scanning the disk, only after the
  new checkpoint is complete and the tracker names it;
- :func:`trim_jsonl` / :func:`move_aside`: JSON-lines outputs (metrics, care records) cut back to the
  last newline and to ``step <= N`` on a resume from N.

Stdlib only: a ``torch.save`` file is checked through its default zip layout with :mod:`zipfile`;
no verl import, so the tests need neither verl nor Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

FILE_LOGGER_ENV = "VERL_FILE_LOGGER_PATH"  # verl 0.9.1 utils/tracking.py FileLogger: its JSON-lines file
TRACKER = "latest_checkpointed_iteration.txt"  # verl 0.9.1 checkpoint_manager.get_checkpoint_tracker_filename
STEP_PREFIX = "global_step_"
MARK = "COMPLETE.json"
DATA_STATE = "data.pt"
ACTOR = "actor"
FSDP_CONFIG = "fsdp_config.json"
SHARD_KINDS = ("model", "optim", "extra_state")
TMP_TAG = ".tmp-"  # <name>.tmp-<pid>: an atomic write in progress
TRASH_PREFIX = ".trash-"  # a folder renamed away before it is deleted

_STEP_RE = re.compile(rf"^{STEP_PREFIX}(\d+)$")
_SHARD_RE = re.compile(r"^(model|optim|extra_state)_world_size_(\d+)_rank_(\d+)\.pt$")

Log = Callable[[str], None]


class CheckpointError(RuntimeError):
    """A run folder whose checkpoints cannot be resumed as they are; the message says what to do."""


# ---------------------------------------------------------------- atomic writes

def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a restart after a kill) sees the old content or
    the new, never a mix: a temporary file in the same folder, fsync'd, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_tracker(root: str | os.PathLike, step: int) -> None:
    """verl's tracker ``<root>/latest_checkpointed_iteration.txt`` = ``step``, written atomically."""
    atomic_write_text(Path(root) / TRACKER, str(int(step)))


def read_tracker(root: str | os.PathLike) -> tuple[int | None, str]:
    """The tracker's step and a description of what was found: ``(N, "N")``, or ``(None, why)`` for a
    missing, empty or unparsable tracker (a kill while verl truncated and rewrote it)."""
    path = Path(root) / TRACKER
    if not path.exists():
        return None, "no tracker"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"an unreadable tracker ({exc})"
    if not text:
        return None, "an empty tracker"
    try:
        return int(text), text
    except ValueError:
        return None, f"an unparsable tracker ({text[:40]!r})"


# ---------------------------------------------------------------- folders and completeness

def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"{STEP_PREFIX}{int(step)}"


def step_dirs(root: str | os.PathLike) -> dict[int, Path]:
    """Every ``global_step_<N>`` folder under ``root``: step -> folder (empty when ``root`` is missing)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found = {}
    for child in root.iterdir():
        match = _STEP_RE.match(child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def list_files(folder: str | os.PathLike) -> dict[str, int]:
    """Relative path -> size of every file under a step folder, less the mark and unfinished temporaries."""
    folder = Path(folder)
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name == MARK or TMP_TAG in name:
                continue
            full = Path(dirpath) / name
            files[full.relative_to(folder).as_posix()] = full.stat().st_size
    return dict(sorted(files.items()))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_mark(folder: str | os.PathLike, step: int, world_size: int, sync_files: bool = True) -> dict:
    """Write ``<folder>/COMPLETE.json`` = ``{step, world_size, files}`` atomically; returns it.

    ``sync_files`` fsyncs every file first, so that the mark never outlives the data it vouches for
    when the node itself goes down (a SIGKILL alone loses nothing the kernel already holds).
    """
    folder = Path(folder)
    files = list_files(folder)
    if sync_files:
        for rel in files:
            _fsync_file(folder / rel)
    mark = {"step": int(step), "world_size": int(world_size), "files": files}
    atomic_write_text(folder / MARK, json.dumps(mark, indent=1))
    return mark


def read_mark(folder: str | os.PathLike) -> dict | None:
    """The folder's completion mark, or None when it has none or it does not parse."""
    try:
        mark = json.loads((Path(folder) / MARK).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(mark, dict) and isinstance(mark.get("step"), int) and isinstance(mark.get("files"), dict)
    return mark if ok else None


def _opens_as_zip(path: Path) -> bool:
    """torch.save's default format is a zip archive whose directory sits at the end of the file: reading
    it (no tensor data) is cheap and fails for a file cut short by a kill."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def shard_world_size(actor_dir: str | os.PathLike) -> int | None:
    """The world size the actor shards were saved with (from their file names, else ``fsdp_config.json``)."""
    actor_dir = Path(actor_dir)
    sizes = set()
    if actor_dir.is_dir():
        for child in actor_dir.iterdir():
            match = _SHARD_RE.match(child.name)
            if match:
                sizes.add(int(match.group(2)))
    if len(sizes) == 1:
        return sizes.pop()
    try:
        return int(json.loads((actor_dir / FSDP_CONFIG).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def why_incomplete(folder: str | os.PathLike) -> str | None:
    """None when ``folder`` is a complete checkpoint, else the first reason it is not.

    With a mark: every listed file is present with its recorded size. Without one (a folder written
    by plain verl): ``data.pt`` and every ``model_/optim_/extra_state_world_size_W_rank_R.pt`` for
    R in 0..W-1 (per kind present; ``model`` required) exist and open as zip archives, and
    ``actor/fsdp_config.json`` parses.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    if (folder / MARK).exists():
        mark = read_mark(folder)
        if mark is None:
            return f"{MARK} does not parse"
        for rel, size in mark["files"].items():
            path = folder / rel
            if not path.is_file():
                return f"{rel} (listed in {MARK}) is missing"
            if path.stat().st_size != size:
                return f"{rel} has {path.stat().st_size} bytes, {MARK} says {size}"
        return None
    data = folder / DATA_STATE
    if not data.is_file():
        return f"no {DATA_STATE}"
    if not _opens_as_zip(data):
        return f"{DATA_STATE} is truncated or not a torch.save file"
    actor = folder / ACTOR
    try:
        world = int(json.loads((actor / FSDP_CONFIG).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{ACTOR}/{FSDP_CONFIG} is missing or does not parse"
    present = {m.group(1) for m in (_SHARD_RE.match(p.name) for p in actor.iterdir()) if m}
    if "model" not in present:
        return f"no {ACTOR}/model_world_size_*_rank_*.pt"
    for kind in SHARD_KINDS:
        if kind not in present:
            continue
        for rank in range(world):
            name = f"{kind}_world_size_{world}_rank_{rank}.pt"
            if not (actor / name).is_file():
                return f"{ACTOR}/{name} is missing"
            if not _opens_as_zip(actor / name):
                return f"{ACTOR}/{name} is truncated"
    return None


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a whole checkpoint (see :func:`why_incomplete`)."""
    return why_incomplete(folder) is None


def checkpoint_world_size(folder: str | os.PathLike) -> int | None:
    """The actor world size a checkpoint was saved with: its mark's, else its shards'."""
    mark = read_mark(folder)
    if mark is not None and isinstance(mark.get("world_size"), int):
        return mark["world_size"]
    return shard_world_size(Path(folder) / ACTOR)


# ---------------------------------------------------------------- resume

def resolve_resume(root: str | os.PathLike, world_size: int | None = None, log: Log = print) -> int | None:
    """The step to resume from under ``root`` (verl's ``default_local_dir``), with the tracker made to name it.

    None: nothing to resume (no ``global_step_*`` folder and no tracker naming one). Otherwise the
    newest complete folder; a tracker that is missing, empty, unparsable or names another folder is
    rewritten atomically, with one log line saying what was found and what is used. Raises
    :class:`CheckpointError` when folders exist but none is complete, when the tracker names a
    checkpoint but no folder exists (a moved folder or a different working directory: starting over
    would silently overwrite the run), or when ``world_size`` differs from the checkpoint's.
    """
    root = Path(root)
    remove_leftovers(root)
    tracked, found = read_tracker(root)
    folders = step_dirs(root)
    if not folders:
        if tracked is None:
            return None
        raise CheckpointError(
            f"{root}: the tracker names step {tracked} but there is no {STEP_PREFIX}* folder; was the folder moved, "
            f"or is trainer.default_local_dir relative to another working directory? Delete {root / TRACKER} to "
            f"start from scratch")
    reasons = {step: why_incomplete(folder) for step, folder in folders.items()}
    complete = [step for step, why in reasons.items() if why is None]
    if not complete:
        listed = "; ".join(f"{folders[s].name}: {why}" for s, why in reasons.items())
        raise CheckpointError(
            f"{root}: {len(folders)} checkpoint folder(s) and none is complete ({listed}). Refusing to train from "
            f"scratch over them; move them away to start over")
    chosen = max(complete)
    saved = checkpoint_world_size(folders[chosen])
    if world_size is not None and saved is not None and saved != world_size:
        raise CheckpointError(
            f"{folders[chosen]}: saved by {saved} actor ranks, this run has {world_size}; the FSDP shards only load "
            f"with the same world size (trainer.nnodes * trainer.n_gpus_per_node = {saved})")
    if tracked != chosen:
        if tracked is None:
            what = found
        elif tracked not in folders:
            what = f"a tracker naming step {tracked}, which has no folder"
        elif reasons[tracked] is not None:
            what = f"a tracker naming step {tracked}, which is incomplete ({reasons[tracked]})"
        else:
            what = f"a tracker naming step {tracked}, older than the newest complete one"
        skipped = [f"{folders[s].name} ({reasons[s]})" for s in folders if s > chosen]
        log(f"care checkpoints: {root}: found {what}; resuming from {folders[chosen].name}, the newest complete "
            f"checkpoint" + (f" (skipped incomplete {', '.join(skipped)})" if skipped else "") + "; tracker rewritten")
        write_tracker(root, chosen)
    return chosen


# ---------------------------------------------------------------- deletion and rotation

def remove_step_dir(folder: str | os.PathLike) -> None:
    """Delete a step folder so that no kill leaves a half-deleted folder that looks whole: the mark goes
    first, the folder is renamed away (one atomic step), then deleted."""
    folder = Path(folder)
    if not folder.exists():
        return
    (folder / MARK).unlink(missing_ok=True)
    trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    _fsync_dir(folder.parent)
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(root: str | os.PathLike) -> list[str]:
    """Delete what a kill left mid-operation in ``root``: renamed-away folders and unfinished temporaries
    (the tracker's, and marks' inside step folders). Returns the names removed."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    candidates = list(root.iterdir()) + [p for d in step_dirs(root).values() for p in d.iterdir()]
    for path in candidates:
        if path.name.startswith(TRASH_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif TMP_TAG in path.name and path.is_file() and (path.name.startswith(TRACKER) or path.name.startswith(MARK)):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path.name)
    return removed


def rotate(root: str | os.PathLike, keep: int | None, current: int, log: Log = print) -> list[int]:
    """Keep the newest ``keep`` complete checkpoints up to ``current``; delete older ones oldest first.

    Scans the disk, so folders of earlier runs count too. Does nothing unless ``current`` is complete
    and the tracker names it (a new checkpoint must exist before an old one goes). Incomplete folders
    older than ``current`` (a killed save) are deleted as well; folders newer than ``current`` and the
    folder the tracker names are never touched. ``keep`` None or < 1: nothing is deleted. Returns the
    deleted steps.
    """
    if not keep or keep < 1:
        return []
    root = Path(root)
    tracked, _ = read_tracker(root)
    folders = step_dirs(root)
    if tracked != current or current not in folders or not is_complete(folders[current]):
        log(f"care checkpoints: no rotation, {STEP_PREFIX}{current} is not the complete, tracked checkpoint")
        return []
    older = [s for s in folders if s <= current]
    complete = [s for s in older if is_complete(folders[s])]
    kept = set(sorted(complete)[-keep:]) | {current, tracked}
    doomed = sorted(s for s in older if s not in kept)
    for step in doomed:
        remove_step_dir(folders[step])
    if doomed:
        log(f"care checkpoints: kept {sorted(kept)}, deleted {[folders[s].name for s in doomed]}")
    return doomed


# ---------------------------------------------------------------- appended JSON lines

@dataclass(frozen=True)
class TrimResult:
    """What :func:`trim_jsonl` did to one file: rows kept, rows dropped for ``step > N``, the bytes of a
    torn last line cut, lines that did not parse (dropped)."""

    kept: int
    dropped_rows: int
    torn_bytes: int
    bad_lines: int

    @property
    def changed(self) -> bool:
        return bool(self.dropped_rows or self.torn_bytes or self.bad_lines)


def trim_jsonl(path: str | os.PathLike, max_step: int, step_of: Callable[[dict], object] = lambda row: row.get("step"),
               ) -> TrimResult | None:
    """Cut a JSON-lines file back to its last newline and drop rows whose ``step`` is above ``max_step``.

    A kill mid-append leaves a last line without its newline; a row for a step past the resumed one
    belongs to a timeline that the resume discards (it will be written again). Lines that do not
    parse are dropped and counted. Rewritten atomically, only when something changes; deleted when no
    row is left. None when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        return None
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    body, torn = raw[:end], len(raw) - end
    kept_lines, dropped, bad = [], 0, 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        step = step_of(row) if isinstance(row, dict) else None
        if isinstance(step, int) and step > max_step:
            dropped += 1
            continue
        kept_lines.append(line)
    result = TrimResult(len(kept_lines), dropped, torn, bad)
    if not kept_lines:
        path.unlink()  # an empty JSON-lines file is not a valid one for its readers (report/load.py)
        _fsync_dir(path.parent)
    elif result.changed:
        tmp = path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(line + b"\n" for line in kept_lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    return result


def aside_files(path: str | os.PathLike) -> list[Path]:
    """``<stem>.<K><ext>`` beside ``path`` (``metrics.jsonl`` -> ``metrics.1.jsonl``, ...), by K ascending."""
    path = Path(path)
    stem, ext = os.path.splitext(path.name)
    pattern = re.compile(rf"^{re.escape(stem)}\.(\d+){re.escape(ext)}$")
    found = []
    if path.parent.is_dir():
        for child in path.parent.iterdir():
            match = pattern.match(child.name)
            if match and child.is_file():
                found.append((int(match.group(1)), child))
    return [p for _, p in sorted(found)]


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename a non-empty ``path`` to ``<stem>.<K><ext>``, K one above the highest already there (so the
    aside files' numbers follow the runs' order); returns the new path, None when there was nothing."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    existing = aside_files(path)
    stem, ext = os.path.splitext(path.name)
    k = 1 + max((int(p.name[len(stem) + 1:len(p.name) - len(ext)]) for p in existing), default=0)
    target = path.with_name(f"{stem}.{k}{ext}")
    os.replace(path, target)
    _fsync_dir(path.parent)
    return target


def trim_files(paths: Iterable[str | os.PathLike], max_step: int, log: Log = print) -> dict[str, TrimResult]:
    """:func:`trim_jsonl` over ``paths`` (missing ones skipped), one log line per file it changed."""
    results = {}
    for path in paths:
        result = trim_jsonl(path, max_step)
        if result is None:
            continue
        results[str(path)] = result
        if result.changed:
            log(f"care checkpoints: {path}: resumed at step {max_step}, dropped {result.dropped_rows} row(s) of later "
                f"steps, {result.torn_bytes} byte(s) of a torn last line, {result.bad_lines} unparsable line(s); "
                f"{result.kept} row(s) kept")
    return results
