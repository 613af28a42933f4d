"""The output folder: a build appears complete or not at all; every CLI error is one line, exit 2;
the hold-out never takes the whole set; an empty training set is an error, an empty source a warning."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mix_fixtures import REPO, build_args

from data_prep import writer
from data_prep.build_mix import main
from data_prep.writer import MAX_VAL_FRACTION

GEO = ("--sources", "geometry3k")  # the smallest source: 6 rows, all kept


def run(paths, out, *extra):
    return main(build_args(paths, str(out), "--workers", "1", *extra))


def report_of(out):
    return json.loads((out / "report.json").read_text())


def listing(folder):
    """Every file under ``folder`` with its bytes: what a failed build must leave unchanged."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = open(path, "rb").read()
    return files


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("build_mix: error: "), err
    return lines[0]


# ---- the hold-out and empty inputs ------------------------------------------------------------
def test_val_size_larger_than_the_input_is_capped_and_said(mix_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, *GEO, "--val-size", "500") == 0
    outputs, kept = report_of(out)["outputs"], report_of(out)["totals"]["kept"]
    assert kept > 0 and outputs["train_rows"] > 0
    assert outputs["val_rows"] == int(kept * MAX_VAL_FRACTION)
    assert outputs["train_rows"] + outputs["val_rows"] == kept
    err = capsys.readouterr().err
    assert "warning: --val-size 500" in err and f"holding out {outputs['val_rows']}" in err
    assert any("--val-size 500" in w for w in report_of(out)["warnings"])


def test_limit_with_the_default_val_size_still_trains(mix_inputs, tmp_path):
    out = tmp_path / "out"
    args = [a for a in build_args(mix_inputs["paths"], str(out), "--workers", "1", "--limit", "3")]
    val_at = args.index("--val-size")
    del args[val_at:val_at + 2]  # the default 500
    assert main(args) == 0
    outputs = report_of(out)["outputs"]
    assert outputs["train_rows"] > outputs["val_rows"] >= 0


def empty_geometry3k(folder):
    folder.mkdir()
    schema = pa.schema([("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
                        ("problem", pa.string()), ("answer", pa.string())])
    pq.write_table(schema.empty_table(), folder / "train-00000-of-00001.parquet")
    return str(folder)


def test_a_source_with_no_rows_is_a_warning_naming_it(mix_inputs, tmp_path, capsys):
    empty = empty_geometry3k(tmp_path / "geo_empty")
    out = tmp_path / "out"
    assert run({**mix_inputs["paths"], "geometry3k": empty}, out, "--sources", "chartqa,geometry3k") == 0
    err = capsys.readouterr().err
    assert f"build_mix: warning: --geometry3k {empty} yielded 0 rows (0 read)" in err
    assert "--chartqa" not in err
    assert report_of(out)["outputs"]["train_rows"] > 0


def test_no_training_rows_is_an_error_and_writes_nothing(mix_inputs, tmp_path, capsys):
    empty = empty_geometry3k(tmp_path / "geo_empty")
    out = tmp_path / "out"
    assert run({**mix_inputs["paths"], "geometry3k": empty}, out, *GEO) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no training rows" in line and f"--geometry3k {empty}: 0 read" in line and "Check those inputs" in line
    assert not out.exists()


# ---- the output folder -------------------------------------------------------------------------
def test_out_that_is_a_file_is_one_line_before_any_work(mix_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("keep me")
    assert run(mix_inputs["paths"], out, *GEO) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out} is a file" in line and "folder" in line
    assert out.read_text() == "keep me"


def fail_on_write(monkeypatch, call: int, code: int = errno.ENOSPC):
    """The ``call``-th parquet write raises OSError(code), as a full (or read-only) filesystem does."""
    real = writer.pq.ParquetWriter.write_table
    calls = {"n": 0}

    def write_table(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= call:
            raise OSError(code, os.strerror(code), getattr(self, "where", None))
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(writer.pq.ParquetWriter, "write_table", write_table)


@pytest.mark.parametrize("call", [1, 2])  # the first write; val.parquet's (the training shard already on disk)
def test_full_disk_leaves_no_build_and_no_stage(mix_inputs, tmp_path, capsys, monkeypatch, call):
    out = tmp_path / "out"
    fail_on_write(monkeypatch, call)
    assert run(mix_inputs["paths"], out, *GEO) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line and "No space left on device" in line and "free some space" in line
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # the staging folder went too
    monkeypatch.undo()
    assert run(mix_inputs["paths"], out, *GEO) == 0  # a rerun does not find a half build


def test_full_disk_while_overwriting_keeps_the_earlier_build(mix_inputs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, *GEO, "--val-size", "0") == 0
    before = listing(out)
    fail_on_write(monkeypatch, 2)
    assert run(mix_inputs["paths"], out, *GEO, "--overwrite") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert listing(out) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_read_only_location_is_one_line(mix_inputs, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.access(parent, os.W_OK):  # root ignores the mode bits: fail the way a read-only mount does
        def mkdtemp(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(parent))

        monkeypatch.setattr(writer.tempfile, "mkdtemp", mkdtemp)
    try:
        assert run(mix_inputs["paths"], parent / "out", *GEO) == 2
    finally:
        parent.chmod(0o755)
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {parent / 'out'}" in line and "choose a writable --out" in line
    assert os.listdir(parent) == []


def test_debug_shows_the_traceback(mix_inputs, tmp_path, capsys, monkeypatch):
    fail_on_write(monkeypatch, 1)
    assert run(mix_inputs["paths"], tmp_path / "a", *GEO, "--debug") == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("CARE_DEBUG", "1")
    assert run(mix_inputs["paths"], tmp_path / "b", *GEO) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_folder_without_report_is_an_incomplete_build(mix_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000.parquet").write_bytes(b"half a build")
    assert run(mix_inputs["paths"], out, *GEO) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "incomplete build (no report.json)" in line and "--overwrite" in line
    assert run(mix_inputs["paths"], out, *GEO, "--overwrite") == 0
    assert report_of(out)["outputs"]["train_rows"] > 0


def test_overwrite_replaces_every_earlier_file_and_keeps_other_files(mix_inputs, tmp_path):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, *GEO, "--shard-size", "1", "--val-size", "0") == 0
    assert len(report_of(out)["outputs"]["train_files"]) == 6
    (out / "notes.txt").write_text("mine")
    assert run(mix_inputs["paths"], out, *GEO, "--shard-size", "100", "--overwrite") == 0
    shards = sorted(p.name for p in out.glob("train-*.parquet"))
    assert shards == report_of(out)["outputs"]["train_files"] == ["train-00000.parquet"]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_symlinked_out_stays_a_link_to_the_build(mix_inputs, tmp_path):
    real = tmp_path / "disk" / "mix"
    real.mkdir(parents=True)
    link = tmp_path / "mix"
    link.symlink_to(real)
    assert run(mix_inputs["paths"], link, *GEO) == 0
    assert link.is_symlink() and (real / "report.json").is_file()
    assert sorted(os.listdir(tmp_path / "disk")) == ["mix"]


def test_build_folder_gets_the_usual_permissions(mix_inputs, tmp_path):
    out = tmp_path / "out"
    assert run(mix_inputs["paths"], out, *GEO) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


# ---- help and progress output ------------------------------------------------------------------
@pytest.mark.parametrize("script", ["build_mix", "build_sft", "build_bench"])
def test_on_off_flags_show_no_default_in_help(script):
    module = __import__(f"data_prep.{script}", fromlist=["parser"])
    text = " ".join(module.parser().format_help().split())
    assert "--no-progress" in text and "--debug" in text
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "rows per worker task (default:" in text  # value flags keep theirs
    if script == "build_mix":
        assert "--no-auto-exclude" in text


def test_no_progress_turns_off_the_datasets_bars(mix_inputs, tmp_path):
    import datasets

    datasets.enable_progress_bars()
    try:
        assert run(mix_inputs["paths"], tmp_path / "out", *GEO) == 0  # build_args passes --no-progress
        assert not datasets.is_progress_bar_enabled()
    finally:
        datasets.enable_progress_bars()


def test_no_progress_output_has_no_progress_lines(mix_inputs, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "data_prep/build_mix.py", *build_args(mix_inputs["paths"], str(out),
                           "--workers", "1", *GEO)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    console = (done.stdout + done.stderr).replace("\r", "\n")
    assert not [line for line in console.splitlines() if "it/s]" in line or "|" in line and "%" in line]
    assert "Saving the dataset" not in console and "Loading" not in console


def test_benchmark_fixtures_save_quietly(tmp_path, capfd):
    from data_prep.bench_fixtures import save_benchmarks

    save_benchmarks(str(tmp_path / "bench"))
    assert "Saving the dataset" not in capfd.readouterr().err


# ---- the same folder handling in build_sft.py and build_bench.py -------------------------------
def sft_builder(tmp_path):
    import sft_fixtures
    from data_prep.build_sft import main as sft_main

    paths = sft_fixtures.build(str(tmp_path / "sft_in"))
    return lambda out: sft_main(sft_fixtures.build_args(paths, str(out), "--workers", "1"))


def bench_builder(tmp_path):
    from data_prep.bench_fixtures import save_benchmarks
    from data_prep.build_bench import main as bench_main

    paths = save_benchmarks(str(tmp_path / "bench_in"))
    args = [a for name, path in paths.items() for a in (f"--{name.replace('_', '-')}", path)]
    return lambda out: bench_main(args + ["--out", str(out), "--no-progress", "--workers", "1"])


@pytest.mark.parametrize("prog, builder", [("build_sft", sft_builder), ("build_bench", bench_builder)])
def test_other_builders_stage_their_output_too(prog, builder, tmp_path, capsys, monkeypatch):
    run_it = builder(tmp_path)
    out = tmp_path / "out"
    out.write_text("a file")
    assert run_it(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: --out {out} is a file") and "Traceback" not in err
    out.unlink()
    fail_on_write(monkeypatch, 2)
    assert run_it(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out.")]
    monkeypatch.undo()
    assert run_it(out) == 0 and (out / "report.json").is_file()
