"""runtime_env.yaml for `ray job submit` and the workers' start-up check (recipe/care/registrations.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recipe.care.main_care import compose_config
from recipe.care.registrations import (
    PASSED,
    WORKER_MODULES,
    RecipeNotRegistered,
    missing_registrations,
    require_recipe_registrations,
)

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 150


def _config_modules():
    return str(compose_config([]).ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES).split(",")


def test_runtime_env_yaml_carries_the_configs_modules():
    env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    assert env["env_vars"]["VERL_USE_EXTERNAL_MODULES"].split(",") == _config_modules() == list(WORKER_MODULES)
    # verl's ray.init runtime_env repeats that key: Ray refuses the merge without this
    assert env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert env["working_dir"] == "." and "data/" in env["excludes"]


def test_missing_registrations_lists_unlisted_and_unloaded_modules():
    listed = {"VERL_USE_EXTERNAL_MODULES": ",".join(WORKER_MODULES)}
    assert missing_registrations(listed, WORKER_MODULES) == []
    assert missing_registrations({}, WORKER_MODULES) == list(WORKER_MODULES)
    assert missing_registrations(listed, WORKER_MODULES[1:]) == [WORKER_MODULES[0]]


def test_check_outside_ray_is_silent_and_forced_check_names_the_fix(monkeypatch, capsys):
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    require_recipe_registrations("a plain test process")  # no Ray actor: no check
    with pytest.raises(RecipeNotRegistered) as err:
        require_recipe_registrations("probe worker", force=True)
    msg = str(err.value)
    assert "probe worker" in msg and "runtime_env.yaml" in msg and "VERL_USE_EXTERNAL_MODULES" in msg
    assert all(m in msg for m in WORKER_MODULES)
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", ",".join(WORKER_MODULES))
    for module in WORKER_MODULES:
        __import__(module)
    capsys.readouterr()
    require_recipe_registrations("probe worker", force=True)
    assert capsys.readouterr().out.startswith(f"{PASSED} probe worker (node none, pid ")  # what a log check greps


def _probe(mode: str) -> None:
    """Child process: a driver started like `ray job submit --runtime-env runtime_env.yaml` (mode=job)
    or with a runtime_env that lacks the recipe (mode=bare), then verl's own ray.init and one actor."""
    import ray
    from omegaconf import OmegaConf

    from recipe.care.main_care import compose_config
    from recipe.care.registrations import require_recipe_registrations

    config = compose_config([])
    if mode == "job":
        job_env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
        job_env.pop("working_dir"), job_env.pop("excludes")  # no upload in a local test
        os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps({"runtime_env": job_env})
        os.environ.update(job_env["env_vars"])  # the job's env_vars reach the entrypoint process
        driver_env = OmegaConf.to_container(config.ray_kwargs.ray_init.runtime_env)  # as verl's run_ppo passes it
    else:
        driver_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    ray.init(num_cpus=8, object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=False,
             runtime_env=driver_env)

    @ray.remote(num_cpus=0)
    class Worker:
        def start(self):
            require_recipe_registrations("probe worker")
            return os.environ.get("VERL_USE_EXTERNAL_MODULES", "")

    try:
        print("RESULT " + json.dumps({"ok": ray.get(Worker.remote().start.remote(), timeout=90)}), flush=True)
    except Exception as exc:  # noqa: BLE001 - the message is what the test checks
        print("RESULT " + json.dumps({"error": str(exc)}), flush=True)
    finally:
        ray.shutdown()


def _run_probe(mode):
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    proc = subprocess.run([sys.executable, __file__, mode], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.ray
@pytest.mark.timeout(2 * TIMEOUT_S + 30)
def test_ray_worker_start_up_check():
    job = _run_probe("job")
    assert job.get("ok", "").split(",") == list(WORKER_MODULES), job
    bare = _run_probe("bare")
    assert "error" in bare and "RecipeNotRegistered" in bare["error"] or "without the recipe's registrations" in bare["error"]
    assert "runtime_env.yaml" in bare["error"]


if __name__ == "__main__":
    _probe(sys.argv[1])
