"""care.records: the per-group / per-repair records built from the real advantage step's tensors."""

import json
import math

import numpy as np
import pytest
import torch

from recipe.care.care_config import CareConfig, GroupRecordsConfig
from recipe.care.core_algos import compute_care_sequence_advantages
from recipe.care.group_records import GROUPS_FILE, REPAIRS_FILE, RecordsWriter, build_group_records, build_repair_records
from report.signature import fit_from_groups

K = 4


def binary_batch(k_primes, n=6, all_wrong=0, all_right=0, seed=0):
    """Groups with one positive and K' failures (the rest correct, so outside S), shuffled rows."""
    acc, index = [], []
    for g, kp in enumerate(k_primes):
        acc += [1] + [0] * kp + [1] * (n - 1 - kp)
        index += [f"g{g}"] * n
    for g in range(all_wrong):
        acc += [0] * n
        index += [f"w{g}"] * n
    for g in range(all_right):
        acc += [1] * n
        index += [f"c{g}"] * n
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(acc))
    acc, index = torch.tensor(acc)[perm], np.array(index, dtype=object)[perm]
    b = len(acc)
    gen = torch.Generator().manual_seed(seed)
    return dict(rewards=acc.float(), acc=acc, index=index, think_len=torch.randint(5, 20, (b,), generator=gen),
                answer_len=torch.full((b,), 2), think_emb=torch.randn(b, 8, generator=gen),
                logp_sum=-torch.rand(b, generator=gen) * 10, response_len=torch.full((b,), 30))


def step_records(b, config=None, reflected=None):
    config = config or CareConfig(k=K, m=6)
    refl = torch.zeros(len(b["acc"]), dtype=torch.bool) if reflected is None else reflected
    seq_adv, info = compute_care_sequence_advantages(**b, reflected=refl, config=config)
    return seq_adv, info, build_group_records(7, b["index"], seq_adv, b["acc"], refl, info, config)


def test_one_record_per_group_with_each_members_role_and_raw_advantage():
    b = binary_batch([1, 2, 3, 4], all_wrong=1, all_right=1)
    seq_adv, info, records = step_records(b)
    assert len(records) == 6 and {r["group"] for r in records} == {"g0", "g1", "g2", "g3", "w0", "c0"}
    by_group = {r["group"]: r for r in records}
    for g, kp in enumerate([1, 2, 3, 4]):
        rec = by_group[f"g{g}"]
        assert rec["step"] == 7 and rec["kind"] == "mixed" and rec["k_prime"] == kp and not rec["rescue"]
        assert rec["equalize"] == pytest.approx(math.sqrt(K / kp))
        assert rec["roles"][rec["anchor"]] == "anchor" and rec["acc"][rec["anchor"]] == 1
        assert rec["roles"].count("negative") == kp and len(rec["roles"]) == 6
        assert rec["raw_adv"][rec["anchor"]] == pytest.approx(math.sqrt(kp), rel=1e-4)
        # members are the group's rows in batch order: their advantages are the step's
        rows = [i for i, u in enumerate(b["index"]) if u == f"g{g}"]
        assert rec["adv"] == pytest.approx(seq_adv[rows].tolist())
        assert rec["acc"] == b["acc"][rows].tolist()
    wrong = by_group["w0"]
    assert wrong["kind"] == "all_wrong" and wrong["rescue"] and wrong["roles"][wrong["anchor"]] == "rescue_anchor"
    right = by_group["c0"]
    assert right["kind"] == "all_correct" and right["anchor"] is None and right["k_prime"] == 0
    assert right["equalize"] == 1.0 and set(right["roles"]) == {"none"}


def test_signature_fit_over_groups_recovers_r_1_on_ideal_groups():
    """Binary rewards, one positive: the real advantage step gives A_raw(y+) = √K' exactly."""
    b = binary_batch([1, 2, 3, 4] * 5, seed=3)
    _, _, records = step_records(b)
    fit = fit_from_groups(records)
    assert fit.source == "groups" and fit.n == 20
    assert fit.anchor.r == pytest.approx(1.0, abs=1e-6) and fit.anchor.r2 == pytest.approx(1.0, abs=1e-5)
    assert fit.negative.r == pytest.approx(1.0, abs=1e-6) and fit.negative.r2 == pytest.approx(1.0, abs=1e-5)
    assert set(fit.anchor.mean_by_kp) == {1, 2, 3, 4}


def test_signature_fit_drops_below_1_when_the_relation_breaks():
    b = binary_batch([1, 2, 3, 4] * 3, seed=4)
    _, _, records = step_records(b)
    for rec in records[::2]:  # corrupt half the anchors
        rec["raw_adv"][rec["anchor"]] = 0.5
    assert fit_from_groups(records).anchor.r < 0.9


def test_repair_record_per_triggered_group_with_scale_and_lengths():
    b = binary_batch([2, 3], seed=5)
    rows0 = [i for i, u in enumerate(b["index"]) if u == "g0"]
    rows1 = [i for i, u in enumerate(b["index"]) if u == "g1"]
    reflected = torch.zeros(len(b["acc"]), dtype=torch.bool)
    failed0 = next(r for r in rows0 if b["acc"][r] == 0)
    passed1 = next(r for r in rows1 if b["acc"][r] == 0)
    b["acc"][passed1] = 1  # RGR repaired this one
    b["rewards"][passed1] = 1.0
    reflected[[failed0, passed1]] = True
    cfg = CareConfig(k=K, m=6)
    seq_adv, info, _ = step_records(b, cfg, reflected)
    rgr = [None] * len(b["acc"])
    for rows, success, src in ((rows0, 0, 1), (rows1, 1, 2)):
        for r in rows:
            rgr[r] = {"group": b["index"][r], "eligible": 1, "triggered": 1, "replaced": 1, "success": success,
                      "reason": "", "extra_tokens": 9, "rollout_tokens": 99, "source": src}
    records = build_repair_records(3, b["index"], rgr, seq_adv, b["acc"], reflected, b["think_len"], b["answer_len"],
                                   info["group_id"], cfg, {"mode": "rederive", "cue": "CUE"})
    by_group = {r["group"]: r for r in records}
    assert set(by_group) == {"g0", "g1"}
    failed, passed = by_group["g0"], by_group["g1"]
    assert failed["passed"] == 0 and failed["scale"] == cfg.reflected_neg_scale and failed["adv"] < 0
    assert passed["passed"] == 1 and passed["scale"] == 1.0 and passed["adv"] > 0
    assert failed["row"] == rows0.index(failed0) and failed["source"] == 1
    assert failed["think_len"] == int(b["think_len"][failed0]) and failed["answer_len"] == 2
    assert failed["cue"] == "CUE" and failed["mode"] == "rederive" and failed["step"] == 3


def test_untried_repair_is_recorded_without_lengths_and_rgr_off_gives_none():
    b = binary_batch([2], seed=6)
    _, info, _ = step_records(b)
    seq_adv = torch.zeros(len(b["acc"]))
    rgr = [{"group": "g0", "triggered": 1, "replaced": 0, "success": 0, "reason": "no_budget", "source": 2}] * len(b["acc"])
    none = torch.zeros(len(b["acc"]), dtype=torch.bool)
    args = (seq_adv, b["acc"], none, b["think_len"], b["answer_len"], info["group_id"], CareConfig(k=K, m=6))
    (rec,) = build_repair_records(1, b["index"], rgr, *args)
    assert rec["reason"] == "no_budget" and rec["passed"] == 0 and rec["row"] is None and rec["think_len"] is None
    assert build_repair_records(1, b["index"], [None] * len(b["acc"]), *args) == []


def test_writer_appends_json_lines_and_config_defaults(tmp_path):
    from recipe.care.config_loader import build_config

    cfg = build_config(None, GroupRecordsConfig, "care.records")
    assert cfg == GroupRecordsConfig() and not cfg.enable and cfg.directory(tmp_path) == tmp_path / "care_records"
    block = {"enable": True, "dir": str(tmp_path / "x")}
    assert build_config(block, GroupRecordsConfig, "care.records").directory("ignored") == tmp_path / "x"
    with pytest.raises(ValueError, match="unknown key care.records.enabled; known: enable, dir"):
        build_config({"enabled": True}, GroupRecordsConfig, "care.records")
    writer = RecordsWriter(tmp_path / "r")
    _, _, records = step_records(binary_batch([1, 2]))
    writer.write(GROUPS_FILE, records)
    writer.write(GROUPS_FILE, records)  # a second step appends
    writer.write(REPAIRS_FILE, [])  # nothing: no file
    lines = (tmp_path / "r" / GROUPS_FILE).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["group"] == "g0"
    assert {json.loads(line)["run"] for line in lines} == {writer.run_id}  # tells a re-written step apart
    assert not (tmp_path / "r" / REPAIRS_FILE).exists()


def test_submit_builds_and_writes_off_the_callers_thread_and_close_waits(tmp_path):
    import threading

    writer = RecordsWriter(tmp_path)
    threads = []

    def build(step):
        threads.append(threading.current_thread())
        return {GROUPS_FILE: [{"step": step, "group": "g"}], REPAIRS_FILE: []}

    writer.submit(build, step=1)
    writer.submit(build, step=2)
    writer.submit(lambda: 1 / 0)  # a failing build is logged, never raised into training
    writer.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / GROUPS_FILE).read_text().splitlines()]
    assert steps == [1, 2] and threads[0] is not threading.current_thread()
