"""The launcher's options (recipe/care/launch_args.py): shards, names, benchmark validation, torchrun."""

import re
from pathlib import Path

import pytest

from recipe.care.launch_args import (
    GREEDY_VAL_OVERRIDES,
    OPTIONS,
    LaunchError,
    find_shards,
    parse_launch_args,
    rl_overrides,
    run_name,
    sft_overrides,
    torchrun_command,
    usage,
    val_files,
)
from recipe.care.presets import DEFAULT_PRESET, PRESETS
from verifiers.benchmarks import BENCHMARK_NAMES

REPO = Path(__file__).resolve().parents[3]
ALGOS = ("care", "grpo", "dapo", "gspo")


def parse(*argv):
    return parse_launch_args(list(argv), ALGOS)


def values(overrides):
    return dict(o.split("=", 1) for o in overrides)


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_defaults_are_the_documented_ones():
    options, overrides = parse()
    assert overrides == []
    assert (options.algo, options.model, options.stage) == ("care", DEFAULT_PRESET, "rl")
    assert (options.data_dir, options.sft_data_dir, options.bench_dir) == ("data/care_mix", "data/care_sft", None)
    assert (options.n_gpus_per_node, options.nnodes, options.total_epochs) == (8, 1, 1)
    assert (options.project_name, options.logger) == ("care-verl", '["console","file"]')
    assert options.model_path is options.train_batch_size is options.rollout_n is None
    assert not (options.dry_run or options.preflight_only or options.skip_preflight or options.debug)


def test_options_anywhere_overrides_keep_their_order():
    options, overrides = parse("b=1", "--model=qwen3-vl-8b", "+c.d=2", "--dry-run", "~e", "--nnodes", "2", "a=3")
    assert overrides == ["b=1", "+c.d=2", "~e", "a=3"]
    assert (options.model, options.dry_run, options.nnodes) == ("qwen3-vl-8b", True, 2)
    assert parse("--algo", "grpo", "--algo=dapo")[0].algo == "dapo"  # the last one wins (environment, then command line)
    assert parse("--model", "none")[0].model is None


@pytest.mark.parametrize("argv, needles", [
    (["--nope"], ["unknown option --nope", "--algo", "key=value"]),
    (["--mod", "x"], ["unknown option --mod"]),  # no abbreviations: --mod is not --model
    (["--model"], ["--model", "expected one argument", DEFAULT_PRESET]),
    (["--model", "llama"], ["--model", "'llama'", DEFAULT_PRESET]),
    (["--model="], ["--model", DEFAULT_PRESET]),
    (["--n-gpus-per-node", "x"], ["--n-gpus-per-node", "'x'", "N_GPUS_PER_NODE"]),
    (["--stage", "eval"], ["--stage", "'eval'", "--stage eval CHECKPOINT"]),
])
def test_bad_options_are_one_line(argv, needles):
    with pytest.raises(ValueError) as err:
        parse(*argv)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_shards_sorted_and_placeholder(tmp_path):
    touch(tmp_path, "train-00010.parquet", "train-00002.parquet", "train-00000.parquet", "val.parquet", "x.parquet")
    assert find_shards(str(tmp_path)) == [str(tmp_path / f"train-{i:05d}.parquet") for i in (0, 2, 10)]
    options, _ = parse("--data-dir", str(tmp_path))
    assert values(rl_overrides(options))["data.train_files"] == \
        f"[{tmp_path}/train-00000.parquet,{tmp_path}/train-00002.parquet,{tmp_path}/train-00010.parquet]"
    # none: the first shard's name, which the preflight reports with the command that builds it
    empty = tmp_path / "empty[1]"  # glob characters in the folder name are not a pattern
    empty.mkdir()
    assert find_shards(str(empty)) == []
    options, _ = parse("--data-dir", str(empty))
    v = values(rl_overrides(options))
    assert v["data.train_files"] == f"[{empty}/train-00000.parquet]" and v["data.val_files"] == f"{empty}/val.parquet"


def test_run_names():
    assert run_name("care", "qwen2.5-vl-7b") == "care_qwen2_5_vl_7b"
    assert run_name("sft", "qwen3-vl-8b") == "sft_qwen3_vl_8b"
    assert run_name("grpo", None) == "grpo"
    options, _ = parse("--algo", "gspo", "--model", "qwen2.5-vl-3b")
    assert values(rl_overrides(options))["trainer.experiment_name"] == "gspo_qwen2_5_vl_3b"
    options, _ = parse("--experiment-name", "mine", "--sft-experiment-name", "cold", "--dry-run")
    assert values(rl_overrides(options))["trainer.experiment_name"] == "mine"
    assert values(sft_overrides(options))["trainer.experiment_name"] == "cold"
    assert values(sft_overrides(parse("--dry-run")[0]))["trainer.experiment_name"] == "sft_qwen2_5_vl_7b"


def test_launch_values_reach_their_keys_and_unset_ones_leave_the_preset():
    options, _ = parse("--n-gpus-per-node=4", "--nnodes=2", "--project-name=p", "--total-epochs=3", "--logger=[console]")
    v = values(rl_overrides(options))
    assert (v["trainer.n_gpus_per_node"], v["trainer.nnodes"], v["trainer.project_name"]) == ("4", "2", "p")
    assert (v["trainer.total_epochs"], v["trainer.logger"]) == ("3", "[console]")
    preset_keys = {"actor_rollout_ref.model.path", "data.train_batch_size", "actor_rollout_ref.rollout.n"}
    assert not preset_keys & set(v)
    options, _ = parse("--model-path=/m", "--train-batch-size=64", "--rollout-n=6")
    v = values(rl_overrides(options))
    assert [v[k] for k in sorted(preset_keys)] == ["/m", "6", "64"]


def test_bench_dir_adds_six_benchmarks_greedy(tmp_path):
    bench = tmp_path / "bench"
    touch(bench, *(f"{name}.parquet" for name in BENCHMARK_NAMES))
    val, extra = val_files("mix", str(bench), require_bench=True)
    assert val == "[" + ",".join(["mix/val.parquet", *(f"{bench}/{name}.parquet" for name in BENCHMARK_NAMES)]) + "]"
    assert values(extra) == {"actor_rollout_ref.rollout.val_kwargs.n": "1",
                             "actor_rollout_ref.rollout.val_kwargs.do_sample": "False",
                             "actor_rollout_ref.rollout.val_kwargs.temperature": "0"}
    assert val_files("mix", None, require_bench=True) == ("mix/val.parquet", [])
    options, _ = parse("--bench-dir", str(bench), "--data-dir", "mix")
    overrides = rl_overrides(options)
    assert overrides[-3:] == list(GREEDY_VAL_OVERRIDES) and values(overrides)["data.val_files"] == val


def test_bench_dir_without_a_parquet_is_an_error_except_in_a_dry_run(tmp_path):
    touch(tmp_path, *(f"{name}.parquet" for name in BENCHMARK_NAMES if name != "mmmu"))
    with pytest.raises(LaunchError, match=r"has no mmmu.parquet; build it: python data_prep/build_bench.py --out"):
        rl_overrides(parse("--bench-dir", str(tmp_path))[0])
    assert "mmmu.parquet" in values(rl_overrides(parse("--bench-dir", str(tmp_path), "--dry-run")[0]))["data.val_files"]


def test_sft_overrides(tmp_path):
    touch(tmp_path, "train-00001.parquet", "train-00000.parquet")
    options, _ = parse("--stage", "sft", "--sft-data-dir", str(tmp_path), "--model", "qwen3-vl-8b", "--logger=[console]")
    v = values(sft_overrides(options))
    assert v["model.path"] == PRESETS["qwen3-vl-8b"].model_path
    assert v["data.train_files"] == f"[{tmp_path}/train-00000.parquet,{tmp_path}/train-00001.parquet]"
    assert (v["trainer.n_gpus_per_node"], v["trainer.nnodes"], v["trainer.logger"]) == ("8", "1", "[console]")
    assert values(sft_overrides(parse("--sft-data-dir", str(tmp_path), "--model-path", "/m")[0]))["model.path"] == "/m"
    assert "model.path" not in values(sft_overrides(parse("--sft-data-dir", str(tmp_path), "--model", "none")[0]))


def test_sft_without_shards_is_an_error_except_in_a_dry_run(tmp_path):
    with pytest.raises(LaunchError, match=rf"no cold-start shards in {tmp_path} .*python data_prep/build_sft.py --out {tmp_path}"):
        sft_overrides(parse("--sft-data-dir", str(tmp_path))[0])
    v = values(sft_overrides(parse("--sft-data-dir", str(tmp_path), "--dry-run")[0]))
    assert v["data.train_files"] == f"[{tmp_path}/train-00000.parquet]"


def test_torchrun_one_node_and_several():
    one = torchrun_command("py", parse("--n-gpus-per-node", "4")[0], ["a=1"])
    assert one == ["py", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=4",
                   "-m", "recipe.care.main_sft", "a=1"]
    options, _ = parse("--nnodes", "3", "--node-rank", "2", "--master-addr", "10.0.0.1")
    several = torchrun_command("py", options, ["a=1"])
    assert several == ["py", "-m", "torch.distributed.run", "--nnodes=3", "--node_rank=2", "--master_addr=10.0.0.1",
                       "--master_port=29500", "--nproc_per_node=8", "-m", "recipe.care.main_sft", "a=1"]
    assert "--master_port=6000" in torchrun_command("py", parse("--nnodes=2", "--node-rank=0", "--master-addr=h",
                                                                "--master-port=6000")[0], [])
    with pytest.raises(LaunchError, match=r"needs --node-rank \(NODE_RANK\) and --master-addr \(MASTER_ADDR\)"):
        torchrun_command("py", parse("--nnodes", "2")[0], [])
    with pytest.raises(LaunchError, match=r"needs --master-addr \(MASTER_ADDR\) on each node"):
        torchrun_command("py", parse("--nnodes", "2", "--node-rank", "0")[0], [])


def test_usage_names_every_option_and_its_variable():
    text = " ".join(usage(ALGOS).split())  # as one line: the descriptions wrap
    for opt in OPTIONS:
        assert opt.flag in text and (opt.env is None or f"run_care.sh: {opt.env}" in text), opt.flag
    assert "care|grpo|dapo|gspo" in text


def test_run_care_sh_maps_each_variable_onto_its_option():
    """run_care.sh's table of VARIABLE:--option pairs is OPTIONS', and its --help names each variable."""
    script = (REPO / "run_care.sh").read_text()
    loop = script[script.index("for pair in"):script.index("; do", script.index("for pair in"))]
    pairs = set(re.findall(r"([A-Z_]+):(--[a-z-]+)", loop))
    assert pairs == {(opt.env, opt.flag) for opt in OPTIONS if opt.env}
    header = script.split("set -euo pipefail")[0]
    for env, flag in pairs:
        assert env in header and flag in header, env
