"""recipe.care.checkpoints against the leftovers of a SIGKILL in every window of verl 0.9.1's save.

Folders are laid out as verl's FSDP checkpoint manager and trainer write them (notes: trainer_base
_save_checkpoint, fsdp_checkpoint_manager.save_checkpoint): ``global_step_N/actor/{model,optim,
extra_state}_world_size_W_rank_R.pt`` (torch.save zip files), ``actor/fsdp_config.json``,
``actor/huggingface/``, ``global_step_N/data.pt`` and the tracker ``latest_checkpointed_iteration.txt``.
"""

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.care import checkpoints as ck
from recipe.care.checkpoints import CheckpointError


def write_actor(actor, step, world=2, ranks=None, kinds=ck.SHARD_KINDS):
    """verl's actor folder: every rank's shards, then rank 0's huggingface/ and fsdp_config.json."""
    actor.mkdir(parents=True, exist_ok=True)
    for rank in range(world) if ranks is None else ranks:
        for kind in kinds:
            torch.save({"w": torch.full((8,), float(step)), "rank": rank}, actor / f"{kind}_world_size_{world}_rank_{rank}.pt")
    if ranks is None or 0 in ranks:
        (actor / "huggingface").mkdir(exist_ok=True)
        (actor / "huggingface" / "config.json").write_text("{}")
        (actor / ck.FSDP_CONFIG).write_text(json.dumps({"FSDP_version": 2, "world_size": world}))


def save_like_verl(root, step, world=2, data=True, tracker=True, mark=False):
    """One checkpoint as plain verl writes it (optionally with the recipe's mark)."""
    folder = ck.step_dir(root, step)
    write_actor(folder / "actor", step, world)
    if data:
        torch.save({"sampler": step}, folder / ck.DATA_STATE)
    if mark:
        ck.write_mark(folder, step, world)
    if tracker:
        (root / ck.TRACKER).write_text(str(step))
    return folder


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_plain_verl_folder_is_complete_and_its_mark_vouches_for_its_files(tmp_path):
    folder = save_like_verl(tmp_path, 5)
    assert ck.is_complete(folder), ck.why_incomplete(folder)
    mark = ck.write_mark(folder, 5, 2)
    assert mark["step"] == 5 and mark["world_size"] == 2
    assert "actor/model_world_size_2_rank_1.pt" in mark["files"] and "data.pt" in mark["files"]
    assert ck.read_mark(folder) == mark and ck.checkpoint_world_size(folder) == 2
    # a listed file that later changes size or disappears makes the folder incomplete
    truncate(folder / "actor" / "optim_world_size_2_rank_1.pt")
    assert "optim_world_size_2_rank_1.pt" in ck.why_incomplete(folder)
    (folder / "actor" / "optim_world_size_2_rank_1.pt").unlink()
    assert "missing" in ck.why_incomplete(folder)


@pytest.mark.parametrize("damage, reason", [
    (lambda f: (f / "data.pt").unlink(), "no data.pt"),  # W7: actor saved, data.pt not yet
    (lambda f: truncate(f / "data.pt"), "data.pt is truncated"),
    (lambda f: (f / "actor" / "model_world_size_2_rank_1.pt").unlink(), "model_world_size_2_rank_1.pt is missing"),  # W1
    (lambda f: truncate(f / "actor" / "extra_state_world_size_2_rank_0.pt", 0.9), "is truncated"),  # W1, torch.save cut
    (lambda f: (f / "actor" / ck.FSDP_CONFIG).write_text('{"FSDP_ver'), "fsdp_config.json"),
    (lambda f: (f / ck.MARK).write_text('{"step": 3, "wor'), "COMPLETE.json does not parse"),  # mark torn
])
def test_leftovers_of_a_killed_save_are_incomplete(tmp_path, damage, reason):
    folder = save_like_verl(tmp_path, 3)
    damage(folder)
    assert reason in ck.why_incomplete(folder)


def test_resume_from_scratch_only_when_there_is_nothing(tmp_path):
    assert ck.resolve_resume(tmp_path / "missing") is None
    assert ck.resolve_resume(tmp_path) is None


def test_w1_partial_shards_of_n_resume_from_previous(tmp_path):
    save_like_verl(tmp_path, 10)
    write_actor(ck.step_dir(tmp_path, 20) / "actor", 20, ranks=[1])  # rank 1 done, rank 0 still writing
    assert ck.resolve_resume(tmp_path, world_size=2) == 10
    assert (tmp_path / ck.TRACKER).read_text() == "10"


@pytest.mark.parametrize("tracker", ["", "2", "abc", None], ids=["empty-W4", "torn-W4", "garbage", "missing"])
def test_torn_or_missing_tracker_is_repaired_to_the_newest_complete(tmp_path, tracker):
    save_like_verl(tmp_path, 10)
    save_like_verl(tmp_path, 20)
    if tracker is None:
        (tmp_path / ck.TRACKER).unlink()
    else:
        (tmp_path / ck.TRACKER).write_text(tracker)  # a kill inside verl's open("w") + write
    lines = []
    assert ck.resolve_resume(tmp_path, log=lines.append) == 20
    assert (tmp_path / ck.TRACKER).read_text() == "20"
    assert len(lines) == 1 and "global_step_20" in lines[0] and "tracker rewritten" in lines[0]


def test_w6_tracker_naming_a_missing_folder(tmp_path):
    save_like_verl(tmp_path, 10)
    (tmp_path / ck.TRACKER).write_text("30")  # global_step_30 moved away by hand
    lines = []
    assert ck.resolve_resume(tmp_path, log=lines.append) == 10
    assert "naming step 30, which has no folder" in lines[0]
    # no folder at all: a different working directory or a moved run; never silently start over
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / ck.TRACKER).write_text("30")
    with pytest.raises(CheckpointError, match="names step 30 but there is no global_step_"):
        ck.resolve_resume(tmp_path / "elsewhere")


def test_w2_plain_verl_k1_leftovers_are_a_clear_error_not_a_crash_in_load(tmp_path):
    """verl's own K=1 rotation deleted P/actor before the tracker moved to N; N's data.pt not written."""
    p = save_like_verl(tmp_path, 10)
    import shutil

    shutil.rmtree(p / "actor")
    write_actor(ck.step_dir(tmp_path, 20) / "actor", 20)
    with pytest.raises(CheckpointError, match=r"none is complete .*global_step_10: .*fsdp_config.json.*global_step_20: no data.pt"):
        ck.resolve_resume(tmp_path)
    # had N's data.pt been written (W8), N is whole and is used
    torch.save({"sampler": 20}, ck.step_dir(tmp_path, 20) / ck.DATA_STATE)
    assert ck.resolve_resume(tmp_path) == 20


def test_w8_mark_written_tracker_not_yet(tmp_path):
    save_like_verl(tmp_path, 10, mark=True)
    save_like_verl(tmp_path, 20, mark=True, tracker=False)
    lines = []
    assert ck.resolve_resume(tmp_path, log=lines.append) == 20
    assert "older than the newest complete" in lines[0]


def test_world_size_change_is_a_clear_error(tmp_path):
    save_like_verl(tmp_path, 10, world=4, mark=True)
    with pytest.raises(CheckpointError, match="saved by 4 actor ranks, this run has 2"):
        ck.resolve_resume(tmp_path, world_size=2)
    save_like_verl(tmp_path / "plain", 10, world=4)  # no mark: from the shard names
    with pytest.raises(CheckpointError, match="saved by 4 actor ranks, this run has 8"):
        ck.resolve_resume(tmp_path / "plain", world_size=8)


def test_leftover_temporaries_and_half_deleted_folders(tmp_path):
    save_like_verl(tmp_path, 10, mark=True)
    folder = save_like_verl(tmp_path, 20, tracker=False)
    (folder / f"{ck.MARK}{ck.TMP_TAG}123").write_text('{"step": 20')  # killed while writing the mark
    (tmp_path / f"{ck.TRACKER}{ck.TMP_TAG}123").write_text("2")  # killed while writing the tracker
    trash = tmp_path / f"{ck.TRASH_PREFIX}global_step_5-99"  # killed mid-rotation, after the rename
    write_actor(trash / "actor", 5)
    assert ck.resolve_resume(tmp_path) == 20  # 20 is whole (plain-verl check); the temporaries are not its files
    assert not trash.exists() and not (folder / f"{ck.MARK}{ck.TMP_TAG}123").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_10", "global_step_20", ck.TRACKER]


def test_remove_step_dir_never_leaves_a_folder_that_looks_whole(tmp_path, monkeypatch):
    folder = save_like_verl(tmp_path, 10, mark=True)
    monkeypatch.setattr(ck.shutil, "rmtree", lambda *a, **k: None)  # killed right after the rename
    ck.remove_step_dir(folder)
    assert not folder.exists() and 10 not in ck.step_dirs(tmp_path)


def test_rotation_keeps_the_newest_complete_and_scans_earlier_runs(tmp_path):
    for step in (10, 20, 30):  # an earlier process's checkpoints: verl's in-memory list never sees them
        save_like_verl(tmp_path, step, mark=True)
    write_actor(ck.step_dir(tmp_path, 35) / "actor", 35, ranks=[0])  # a killed save
    save_like_verl(tmp_path, 40, mark=True)
    save_like_verl(tmp_path, 50, tracker=False)  # newer than current (a discarded timeline): untouched
    (tmp_path / ck.TRACKER).write_text("40")
    assert ck.rotate(tmp_path, keep=2, current=40) == [10, 20, 35]
    assert sorted(ck.step_dirs(tmp_path)) == [30, 40, 50]
    assert ck.rotate(tmp_path, keep=None, current=40) == []


def test_rotation_waits_for_the_tracker_and_the_mark(tmp_path):
    save_like_verl(tmp_path, 10, mark=True)
    save_like_verl(tmp_path, 20, tracker=False, mark=True)  # complete but the tracker still names 10
    assert ck.rotate(tmp_path, keep=1, current=20) == []
    write_actor(ck.step_dir(tmp_path, 30) / "actor", 30, ranks=[0])
    (tmp_path / ck.TRACKER).write_text("30")
    assert ck.rotate(tmp_path, keep=1, current=30) == []  # tracked but incomplete
    assert sorted(ck.step_dirs(tmp_path)) == [10, 20, 30]
    (tmp_path / ck.TRACKER).write_text("20")
    assert ck.rotate(tmp_path, keep=1, current=20) == [10]


def test_atomic_write_replaces_whole(tmp_path):
    ck.write_tracker(tmp_path, 7)
    assert ck.read_tracker(tmp_path) == (7, "7")
    assert not [p for p in tmp_path.iterdir() if ck.TMP_TAG in p.name]


# ---------------------------------------------------------------- appended JSON lines

def test_move_aside_numbers_follow_the_runs(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for k in (1, 2, 10):
        (tmp_path / f"metrics.{k}.jsonl").write_text('{"step": 1, "data": {}}\n')
    assert ck.move_aside(path) is None  # nothing to move
    path.write_text('{"step": 1, "data": {}}\n')
    assert ck.move_aside(path) == tmp_path / "metrics.11.jsonl"
    assert [p.name for p in ck.aside_files(path)] == ["metrics.1.jsonl", "metrics.2.jsonl", "metrics.10.jsonl",
                                                       "metrics.11.jsonl"]


def metrics_line(step):
    return json.dumps({"step": step, "data": {"x": step}}) + "\n"


def test_trim_cuts_a_torn_line_and_later_steps(tmp_path):
    path = tmp_path / "groups.jsonl"
    path.write_text("".join(metrics_line(s) for s in range(1, 8)) + '{"step": 8, "da')
    result = ck.trim_jsonl(path, 5)
    assert (result.kept, result.dropped_rows, result.torn_bytes > 0, result.bad_lines) == (5, 2, True, 0)
    assert path.read_text() == "".join(metrics_line(s) for s in range(1, 6))
    assert not ck.trim_jsonl(path, 5).changed  # idempotent: no rewrite
    # a line corrupted mid-file (a torn line a later writer appended to) is dropped and counted
    path.write_text(metrics_line(1) + '{"step": 2, "d' + metrics_line(2) + metrics_line(3))
    assert ck.trim_jsonl(path, 5).bad_lines == 1
    assert path.read_text() == metrics_line(1) + metrics_line(3)
    # nothing left: the file goes (an empty JSON-lines file is not a valid one for the report)
    assert ck.trim_jsonl(path, 0).kept == 0 and not path.exists()
    assert ck.trim_jsonl(path, 0) is None


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40), st.integers(0, 6)), min_size=1, max_size=5))
def test_trim_property_each_step_once_per_writer_no_torn_line(tmp_path_factory, runs):
    """A chain of runs: each resumes from a checkpoint at or before the last step it has all records of,
    trims, appends a whole block per step and is killed mid-line. After the last trim: every line parses,
    no step is past the resumed one, each writer's step is one whole block, and no step <= N is missing."""
    path = tmp_path_factory.mktemp("rec") / "groups.jsonl"
    done = 0  # steps 1..done have whole blocks on disk (the records are flushed before each checkpoint)
    for run, (steps, cut, back) in enumerate(runs):
        resume = max(0, done - back)
        ck.trim_jsonl(path, resume)
        with open(path, "ab") as fh:
            for step in range(resume + 1, resume + 1 + steps):
                fh.write(b"".join(json.dumps({"step": step, "group": g, "run": run}).encode() + b"\n" for g in range(3)))
            fh.write(json.dumps({"step": resume + steps + 1, "group": 0, "run": run}).encode()[:cut])  # the kill
        done = resume + steps
    final = max(0, done - runs[-1][2])
    ck.trim_jsonl(path, final)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert not path.exists() or path.read_text().endswith("\n")
    assert all(r["step"] <= final for r in rows)
    blocks = {}
    for r in rows:
        blocks.setdefault((r["run"], r["step"]), []).append(r["group"])
    assert all(groups == [0, 1, 2] for groups in blocks.values()), blocks
    assert {step for _, step in blocks} == set(range(1, final + 1))


def test_fsync_dir_survives_unopenable(tmp_path):
    ck._fsync_dir(tmp_path / "nope")  # no error
    assert os.path.isdir(tmp_path)
