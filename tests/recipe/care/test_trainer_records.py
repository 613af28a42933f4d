"""care.records through the trainer's real _compute_advantage (TQ patched at its seam, as in
test_trainer_advantage.py): one group line per real group per step, padding rows left out, a repair
line per RGR attempt read from the rows' extra_fields["rgr"]."""

import json

from omegaconf import OmegaConf

import recipe.care.trainer as care_trainer
from recipe.care.group_records import RecordsWriter
from tests.recipe.care.test_trainer_advantage import FakeTQ, batch, make_trainer  # noqa: F401  (batch: fixture)


def records_trainer(tokenizer, tmp_path, step):
    trainer = make_trainer(tokenizer)
    trainer.care_records = RecordsWriter(tmp_path / "care_records")
    trainer.care_rgr_settings = {"mode": "rederive", "cue": "CUE"}
    trainer.global_steps = step
    trainer.config = OmegaConf.create({"trainer": {"logger": ["console"]}})
    return trainer


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_written_per_group_and_per_repair(monkeypatch, tokenizer, batch, tmp_path):  # noqa: F811
    rows, meta = batch
    # RGR tried on the mixed group: it repaired m_3 (still wrong); every row of the group carries the outcome
    outcome = {"group": "mixed", "eligible": 1, "triggered": 1, "replaced": 1, "success": 0, "reason": "",
               "extra_tokens": 5, "rollout_tokens": 50, "source": 3}
    for key in rows:
        if key.startswith("m_"):
            rows[key]["extra_fields"] = {**rows[key]["extra_fields"], "rgr": outcome, "reflected": key == "m_3_0"}
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    trainer = records_trainer(tokenizer, tmp_path, step=5)
    trainer._compute_advantage(meta, {})
    trainer.care_records.close()  # built on the writer's thread

    groups = read(tmp_path / "care_records" / "groups.jsonl")
    assert sorted(g["group"] for g in groups) == ["mixed", "right", "wrong"], "padding rows make no group"
    assert all(g["step"] == 5 and len(g["roles"]) == 8 for g in groups)
    mixed = next(g for g in groups if g["group"] == "mixed")
    assert mixed["roles"][3] == "reflected" and mixed["reflected"][3] and mixed["roles"][mixed["anchor"]] == "anchor"
    (repair,) = read(tmp_path / "care_records" / "repairs.jsonl")
    assert repair["group"] == "mixed" and repair["row"] == 3 and repair["passed"] == 0 and repair["scale"] == 0.25
    assert repair["think_len"] > 0 and repair["answer_len"] > 0 and repair["cue"] == "CUE"


def test_records_off_writes_nothing(monkeypatch, tokenizer, batch, tmp_path):  # noqa: F811
    rows, meta = batch
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    trainer = make_trainer(tokenizer)  # no care_records attribute: records off, as a trainer built without it
    trainer._compute_advantage(meta, {})
    assert not any(tmp_path.iterdir())


def test_fit_waits_for_the_last_steps_records(monkeypatch, tokenizer, batch, tmp_path):  # noqa: F811
    """verl's fit returns right after the last step: the writer's thread must have written it by then."""
    import threading

    rows, meta = batch
    monkeypatch.setattr(care_trainer, "tq", FakeTQ(rows))
    trainer = records_trainer(tokenizer, tmp_path, step=9)
    release = threading.Event()
    original = care_trainer.build_group_records

    def slow_build(*args, **kwargs):  # still running when the base fit returns
        release.wait(5)
        return original(*args, **kwargs)

    monkeypatch.setattr(care_trainer, "build_group_records", slow_build)

    def base_fit(self, agent_loop_manager):
        self._compute_advantage(meta, {})
        threading.Timer(0.2, release.set).start()

    monkeypatch.setattr(care_trainer.PPOTrainerSync, "fit", base_fit)
    trainer.fit(None)
    assert [g["step"] for g in read(tmp_path / "care_records" / "groups.jsonl")] == [9, 9, 9]
