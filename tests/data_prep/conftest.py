"""Fixtures for data_prep: the drawn look-alike inputs and one full build over them (2 workers)."""

from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (REPO_ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import mix_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def mix_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix_inputs")
    return mix_fixtures.build_all(str(root))


@pytest.fixture(scope="session")
def built_mix(mix_inputs, tmp_path_factory):
    """The full build through the process pool (2 workers), as a user would run it."""
    from data_prep.build_mix import main

    out = str(tmp_path_factory.mktemp("mix_out"))
    rc = main(mix_fixtures.build_args(mix_inputs["paths"], out, "--workers", "2", "--batch-size", "4"))
    assert rc == 0
    with open(os.path.join(out, "report.json")) as fh:
        report = json.load(fh)
    return {"out": out, "report": report, "inputs": mix_inputs}
