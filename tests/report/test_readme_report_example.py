"""The README's report and eval examples name the folders a run launched by run_care.sh writes.

The paths are read from ``run_care.sh --dry-run`` (the resolved config: trainer.default_local_dir and
the file logger's VERL_FILE_LOGGER_PATH), then the README's report command runs on that layout.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from report.__main__ import main as report_main

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end]


def bash_commands(section: str) -> list[list[str]]:
    """The commands of a section's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words:
                commands.append(words)
    return commands


def dry_run_paths(algo: str, data_dir: Path) -> tuple[str, str]:
    """(trainer.default_local_dir, VERL_FILE_LOGGER_PATH) of ``ALGO=algo bash run_care.sh --dry-run``."""
    env = {"ALGO": algo, "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable,
           "DATA_DIR": str(data_dir)}
    proc = subprocess.run(["bash", str(REPO / "run_care.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = re.search(r"^  default_local_dir: (\S+)$", proc.stdout, re.M).group(1)
    metrics = re.search(r"VERL_FILE_LOGGER_PATH: (\S+)$", proc.stdout, re.M).group(1)
    return run_dir, metrics


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("mix")
    for name in ("train-00000.parquet", "val.parquet"):  # the dry run's preflight checks they exist
        (data / name).write_bytes(b"x")
    # ... and that they are a complete build (report.json, data_prep's completion marker)
    (data / "report.json").write_text('{"outputs": {"train_files": ["train-00000.parquet"], "train_rows": 1}}')
    folders = {}
    for algo in ("care", "grpo"):
        run_dir, metrics = dry_run_paths(algo, data)
        assert metrics == os.path.join(str(REPO), run_dir, "metrics.jsonl")  # the file logger writes in the run folder
        folders[algo] = run_dir
    return folders


def test_the_report_example_reads_the_run_folders_run_care_sh_writes(run_folders, tmp_path, monkeypatch, capsys):
    report = next(c for c in bash_commands(readme_section("### Seeing a run:")) if c[:3] == ["python", "-m", "report"])
    runs = dict(arg.split("=", 1) for arg in report[3:] if "=" in arg and not arg.startswith("-"))
    assert runs == run_folders
    # that layout (metrics.jsonl, care_records/ from care.records.enable=true) is what the command reads
    monkeypatch.chdir(tmp_path)
    for algo, folder in run_folders.items():
        Path(folder).mkdir(parents=True)
        shutil.copy(FIXTURES / f"{algo}-run1.jsonl", Path(folder) / "metrics.jsonl")
    shutil.copytree(FIXTURES / "care_records", Path(run_folders["care"]) / "care_records")
    assert report_main(report[3:]) == 0, capsys.readouterr().err
    index = (tmp_path / report[report.index("--out") + 1] / "index.md").read_text()
    assert "| care |" in index and "| grpo |" in index


def test_the_eval_example_evaluates_the_run_folder_the_report_reads(run_folders):
    evals = [c for c in bash_commands(readme_section("## Evaluation on the paper's six benchmarks"))
             if c[:4] == ["bash", "run_care.sh", "--stage", "eval"]]
    assert evals and all(c[4] == run_folders["care"] for c in evals)
