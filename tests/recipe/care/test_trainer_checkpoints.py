"""The trainer's checkpoint overrides around verl 0.9.1's real _save_checkpoint / _load_checkpoint, on a
stub trainer (no Ray): a fake actor worker group writes the shard files verl's FSDP manager writes,
and a kill at each fault point is an exception that stops the save where the process would die.
The next "process" is a fresh stub that loads from the same folder."""

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import recipe.care.trainer as care_trainer
from recipe.care import checkpoints as ck
from recipe.care import fault_points
from recipe.care.trainer import BaselinePPOTrainer, CarePPOTrainer
from tests.recipe.care.test_checkpoints import write_actor

WORLD = 2


class Killed(BaseException):
    """The SIGKILL: nothing after the point runs (a BaseException, so no `except Exception` swallows it)."""


class FakeActorGroup:
    """The bits of verl's RayWorkerGroup the trainer uses; methods bound on the instance, as verl does."""

    def __init__(self, world=WORLD, die_after_ranks=None):
        self.world_size = world
        self.save_checkpoint = self._save
        self.load_checkpoint = self._load
        self.max_ckpt_seen, self.loaded = [], []
        self.die_after_ranks = die_after_ranks

    def _save(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        self.max_ckpt_seen.append(max_ckpt_to_keep)
        if self.die_after_ranks is not None:  # killed while the shards are written
            write_actor(Path(local_path), global_step, self.world_size, ranks=self.die_after_ranks)
            raise Killed("mid-shards")
        write_actor(Path(local_path), global_step, self.world_size)

    def _load(self, local_path, del_local_after_load=False):
        for rank in range(self.world_size):  # as FSDPCheckpointManager.load_checkpoint: every rank its file
            torch.load(Path(local_path) / f"model_world_size_{self.world_size}_rank_{rank}.pt", weights_only=False)
        self.loaded.append(local_path)


class FakeLoader:
    def __init__(self):
        self.state = None

    def state_dict(self):
        return {"position": 1}

    def load_state_dict(self, state):
        self.state = state


class FakeCallback:
    def on_save(self, **kwargs):
        pass


def make(root, step=0, keep=None, cls=BaselinePPOTrainer, wg=None, logger=("console",), resume_mode="auto"):
    trainer = object.__new__(cls)
    trainer.config = OmegaConf.create({
        "trainer": {"default_local_dir": str(root), "default_hdfs_dir": None, "max_actor_ckpt_to_keep": keep,
                    "max_critic_ckpt_to_keep": None, "resume_mode": resume_mode, "resume_from_path": None,
                    "del_local_ckpt_after_load": False, "logger": list(logger)},
        "actor_rollout_ref": {"actor": {"checkpoint": {"async_save": False}}},
    })
    trainer.global_steps = step
    trainer.actor_rollout_wg = wg or FakeActorGroup()
    trainer.use_critic = False
    trainer.train_dataloader = FakeLoader()
    trainer.checkpoint_callback = FakeCallback()
    return trainer


@pytest.fixture
def kill_at(monkeypatch):
    """kill_at(point, step): reaching that point raises Killed; every point reached is recorded."""
    seen, target = [], {}

    def reached(point, step=None, *, block=True):
        seen.append((point, step, block))
        if target.get("point") == (point, step):
            raise Killed(point)

    monkeypatch.setattr(fault_points, "reached", reached)

    def arm(point=None, step=None):
        target["point"] = (point, step) if point else None
        return seen

    return arm


def save_steps(root, steps, keep=None):
    for step in steps:
        make(root, step, keep)._save_checkpoint()


def resume(root):
    trainer = make(root)
    trainer._load_checkpoint()
    return trainer.global_steps


def test_save_marks_publishes_and_hands_verl_no_rotation(tmp_path, kill_at):
    seen = kill_at()
    trainer = make(tmp_path, 3, keep=1)
    trainer._save_checkpoint()
    folder = ck.step_dir(tmp_path, 3)
    assert ck.read_mark(folder)["world_size"] == WORLD and ck.read_tracker(tmp_path)[0] == 3
    assert trainer.actor_rollout_wg.max_ckpt_seen == [None], "verl's rotation must not run"
    assert trainer.config.trainer.max_actor_ckpt_to_keep == 1, "the user's setting is restored"
    assert trainer.actor_rollout_wg.save_checkpoint == trainer.actor_rollout_wg._save, "the wrapper is removed"
    assert [p for p, _, _ in seen] == ["ckpt/start", "ckpt/after_actor", "ckpt/after_data", "ckpt/after_mark",
                                       "ckpt/after_tracker", "ckpt/after_rotation"]
    # every checkpoint phase but the one between verl's shards, which the actor worker fires
    assert [p for p in fault_points.POINTS if p.startswith("ckpt/") and p != "ckpt/actor_shard"] == [p for p, _, _ in seen]


# (point, the step a restart resumes from) after checkpoints 1..3 and a kill at step 4's save.
# after_data: verl has written data.pt and its tracker; the folder is whole (plain-verl check), so 4.
KILLS = [("ckpt/start", 3), ("ckpt/after_actor", 3), ("ckpt/after_data", 4), ("ckpt/after_mark", 4),
         ("ckpt/after_tracker", 4), ("ckpt/after_rotation", 4)]


@pytest.mark.parametrize("keep", [1, 2, None])
@pytest.mark.parametrize("point, expected", KILLS)
def test_a_kill_at_each_point_resumes_from_the_last_complete_checkpoint(tmp_path, kill_at, point, expected, keep):
    kill_at()
    save_steps(tmp_path, [1, 2, 3], keep)
    kill_at(point, 4)
    with pytest.raises(Killed):
        save_steps(tmp_path, [4], keep)
    kill_at()
    assert resume(tmp_path) == expected
    complete = [s for s, f in ck.step_dirs(tmp_path).items() if ck.is_complete(f)]
    assert expected in complete
    if keep:  # rotation never ran ahead of the new checkpoint: at most keep + 1 complete ones at any kill
        assert len(complete) <= keep + 1
    # the run goes on and saves again: the same command, nothing done by hand
    save_steps(tmp_path, [expected + 1], keep)
    assert resume(tmp_path) == expected + 1


def test_a_kill_inside_verls_tracker_write(tmp_path, kill_at):
    kill_at()
    save_steps(tmp_path, [1, 2])
    kill_at("ckpt/after_data", 3)
    with pytest.raises(Killed):
        save_steps(tmp_path, [3])
    (tmp_path / ck.TRACKER).write_text("")  # open("w") truncated it, write() never came
    kill_at()
    assert resume(tmp_path) == 3


def test_a_kill_mid_shards_resumes_from_previous_and_the_next_save_starts_clean(tmp_path, kill_at):
    kill_at()
    save_steps(tmp_path, [1], keep=1)
    trainer = make(tmp_path, 2, keep=1, wg=FakeActorGroup(die_after_ranks=[1]))
    with pytest.raises(Killed):
        trainer._save_checkpoint()
    assert resume(tmp_path) == 1 and ck.is_complete(ck.step_dir(tmp_path, 1))
    # leftovers of the killed save (even a stale data.pt) are not mixed into step 2's new checkpoint
    torch.save({"stale": True}, ck.step_dir(tmp_path, 2) / ck.DATA_STATE)
    save_steps(tmp_path, [2], keep=1)
    assert torch.load(ck.step_dir(tmp_path, 2) / ck.DATA_STATE) == {"position": 1}
    assert sorted(ck.step_dirs(tmp_path)) == [2]


def test_k1_never_removes_the_last_complete_checkpoint_before_the_new_one(tmp_path, kill_at):
    kill_at()
    save_steps(tmp_path, [1], keep=1)
    for point in ("ckpt/start", "ckpt/after_actor", "ckpt/after_data", "ckpt/after_mark"):
        kill_at(point, 2)
        with pytest.raises(Killed):
            save_steps(tmp_path, [2], keep=1)
        assert ck.is_complete(ck.step_dir(tmp_path, 1)), point
        kill_at()
        ck.remove_step_dir(ck.step_dir(tmp_path, 2))
        (tmp_path / ck.TRACKER).write_text("1")
    save_steps(tmp_path, [2], keep=1)
    assert sorted(ck.step_dirs(tmp_path)) == [2]


def test_load_refuses_incomplete_only_folders_and_a_world_size_change(tmp_path, kill_at):
    kill_at()
    write_actor(ck.step_dir(tmp_path, 5) / "actor", 5, ranks=[0])
    with pytest.raises(ck.CheckpointError, match="none is complete"):
        resume(tmp_path)
    save_steps(tmp_path, [6])
    trainer = make(tmp_path, wg=FakeActorGroup(world=4))
    with pytest.raises(ck.CheckpointError, match="saved by 2 actor ranks, this run has 4"):
        trainer._load_checkpoint()


def test_resume_path_must_be_complete(tmp_path, kill_at):
    kill_at()
    save_steps(tmp_path, [4])
    (ck.step_dir(tmp_path, 4) / ck.DATA_STATE).unlink()
    trainer = make(tmp_path, resume_mode="resume_path")
    trainer.config.trainer.resume_from_path = str(ck.step_dir(tmp_path, 4))
    with pytest.raises(ck.CheckpointError, match="not a complete checkpoint"):
        trainer._load_checkpoint()


def test_records_are_flushed_before_the_checkpoint(tmp_path, kill_at):
    kill_at()
    order = []

    class Records:
        def flush(self):
            order.append("flush")

    trainer = make(tmp_path, 2, cls=CarePPOTrainer)
    trainer.care_records = Records()
    save = trainer.actor_rollout_wg._save
    trainer.actor_rollout_wg.save_checkpoint = lambda *a, **k: (order.append("actor"), save(*a, **k))
    trainer._save_checkpoint()
    assert order == ["flush", "actor"]


def test_update_actor_fires_a_non_blocking_point(tmp_path, kill_at, monkeypatch):
    seen = kill_at()
    monkeypatch.setattr(care_trainer.PPOTrainerSync, "_update_actor", lambda self, batch, metrics: "updated")
    assert make(tmp_path, 7)._update_actor(None, {}) == "updated"
    assert seen == [("update_actor", 7, False)]


# ---------------------------------------------------------------- appended outputs on a resume

def metrics_lines(steps, torn=False):
    text = "".join(json.dumps({"step": s, "data": {"x": s}}) + "\n" for s in steps)
    return text + ('{"step": 99, "da' if torn else "")


def test_resume_trims_metrics_and_records_to_the_resumed_step(tmp_path, monkeypatch):
    from report.load import load_run

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv(ck.FILE_LOGGER_ENV, str(metrics))
    # run 1 reached step 7 (killed mid-line); run 2 resumed from 4, reached 9 and was killed again;
    # run 3 resumes from 6. The launcher moved run 1's file aside; run 2's is still in place.
    (tmp_path / "metrics.1.jsonl").write_text(metrics_lines(range(0, 8), torn=True))
    metrics.write_text(metrics_lines(range(4, 10), torn=True))
    records = tmp_path / "care_records"
    records.mkdir()
    (records / "groups.jsonl").write_text(
        "".join(json.dumps({"step": s, "group": g, "run": r}) + "\n" for r, steps in (("a", range(1, 8)), ("b", range(5, 10)))
                for s in steps for g in "xy") + '{"step": 10, "gro')
    ran = []
    monkeypatch.setattr(care_trainer.PPOTrainerSync, "fit", lambda self, *a: ran.append(self.global_steps))

    class Writer:
        directory = records

        def close(self):
            pass

    trainer = make(tmp_path, step=6, cls=CarePPOTrainer, logger=("console", "file"))
    trainer.care_records = Writer()
    trainer.fit(None)
    assert ran == [6] and not metrics.exists()
    for aside in ck.aside_files(metrics):
        text = aside.read_text()
        steps = [json.loads(line)["step"] for line in text.splitlines()]
        assert text.endswith("\n") and max(steps) <= 6 and len(steps) == len(set(steps)), aside
    assert [p.name for p in ck.aside_files(metrics)] == ["metrics.1.jsonl", "metrics.2.jsonl"]
    rows = [json.loads(line) for line in (records / "groups.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 6
    assert len(rows) == len({(r["run"], r["step"], r["group"]) for r in rows})
    run = load_run(str(tmp_path))
    assert sorted(run.steps) == list(range(0, 7)) and not run.notes


def test_load_says_where_it_resumes_from(tmp_path, printed):
    import logging

    assert resume(tmp_path) == 0
    assert "care: training from scratch" in printed.text
    save_steps(tmp_path, [1, 2])
    printed.clear()
    assert resume(tmp_path) == 2
    assert re.search(r"care: resuming from \S*global_step_2, global step 2", printed.text)


def test_inside_fit_a_steps_checkpoint_is_written_right_after_its_metrics_line(tmp_path):
    """verl 0.9.1 saves step N before logging it: a kill in between would lose N's metrics for good."""
    from recipe.care import checkpoints as ck

    logged = []

    class Tracking:  # verl's Tracking: log(data, step), finish()
        def log(self, data, step):
            logged.append((step, ck.read_tracker(tmp_path)[0]))

        def finish(self):
            logged.append("finish")

    trainer = make(tmp_path, step=3)
    trainer._care_defer_saves = True
    trainer.logger = Tracking()
    trainer._save_checkpoint()  # where fit saves step 3
    assert ck.step_dirs(tmp_path) == {} and ck.read_tracker(tmp_path)[0] is None
    trainer.logger.log(data={"actor/pg_loss": 0.1}, step=3)
    assert logged == [(3, None)]  # the metrics line went out before the checkpoint
    assert ck.read_tracker(tmp_path)[0] == 3 and ck.is_complete(ck.step_dir(tmp_path, 3))
    trainer.logger.log(data={}, step=3)  # a second log of the step saves nothing more
    assert logged[-1] == (3, 3) and list(ck.step_dirs(tmp_path)) == [3]
    trainer.logger.finish()
    assert logged[-1] == "finish"
    trainer._care_defer_saves = False
    trainer.global_steps = 4
    trainer._save_checkpoint()  # outside fit: at once
    assert ck.read_tracker(tmp_path)[0] == 4


def test_fit_defers_each_save_until_the_step_is_logged(tmp_path, monkeypatch):
    from recipe.care import checkpoints as ck
    from recipe.care.trainer import PPOTrainerSync

    events = []

    class Tracking:
        def log(self, data, step):
            events.append(("log", step, ck.read_tracker(tmp_path)[0]))

    def verl_fit(self, *args, **kwargs):  # verl 0.9.1's order within one step: save, validate, log
        self.logger = Tracking()
        for step in (1, 2):
            self.global_steps = step
            self._save_checkpoint()
            events.append(("saved?", step, ck.read_tracker(tmp_path)[0]))
            self.logger.log(data={}, step=step)

    monkeypatch.setattr(PPOTrainerSync, "fit", verl_fit)
    trainer = make(tmp_path)
    trainer.fit()
    assert events == [("saved?", 1, None), ("log", 1, None), ("saved?", 2, 1), ("log", 2, 1)]
    assert ck.read_tracker(tmp_path)[0] == 2 and not trainer._care_defer_saves


def test_a_restart_with_nothing_left_to_train_leaves_no_empty_metrics_file(tmp_path, monkeypatch):
    from recipe.care.trainer import PPOTrainerSync

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(metrics))
    (tmp_path / "metrics.1.jsonl").write_text('{"step": 4, "data": {"x": 1.0}}\n')  # the killed launch's steps

    def verl_fit_at_the_last_step(self, *args, **kwargs):
        metrics.write_bytes(b"")  # verl's FileLogger opens its file "wb"; the loop has no step left

    monkeypatch.setattr(PPOTrainerSync, "fit", verl_fit_at_the_last_step)
    trainer = make(tmp_path, step=4, logger=("console", "file"))
    trainer.fit()
    assert not metrics.exists() and (tmp_path / "metrics.1.jsonl").read_text().startswith('{"step": 4')

    def verl_fit_one_step(self, *args, **kwargs):
        metrics.write_text('{"step": 5, "data": {}}\n')

    monkeypatch.setattr(PPOTrainerSync, "fit", verl_fit_one_step)
    make(tmp_path, step=4, logger=("console", "file")).fit()
    assert metrics.read_text().startswith('{"step": 5')


def test_a_resume_applies_the_retention_a_kill_before_the_rotation_skipped(tmp_path):
    from recipe.care import checkpoints as ck

    save_steps(tmp_path, [1, 2, 3])  # as if each save had been killed right after its tracker
    trainer = make(tmp_path, keep=1)
    trainer._load_checkpoint()
    assert trainer.global_steps == 3 and list(ck.step_dirs(tmp_path)) == [3]
    trainer = make(tmp_path, keep=None)
    trainer._load_checkpoint()
    assert list(ck.step_dirs(tmp_path)) == [3]
