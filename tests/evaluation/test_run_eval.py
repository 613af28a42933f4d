"""The eval stage's task overrides (on a stand-in of lmms-eval's task tree) and its failures."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.prompts import CARE_INSTRUCTION
from evaluation.run_eval import find_stock_yaml, main, stock_messages_function, write_tasks
from evaluation.tasks import BENCHMARKS, LMMS_TASKS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

STOCK_UTILS = '''
SYSTEM_PROMPT = "stock system prompt"
def {fn}(doc, lmms_eval_specific_kwargs=None):
    return [{{"role": "system", "content": [{{"type": "text", "text": SYSTEM_PROMPT}}]}},
            {{"role": "user", "content": [{{"type": "image", "url": None}},
                                          {{"type": "text", "text": "Q: " + doc["question"]}}]}}]
'''


def fake_lmms_tasks(root: Path) -> str:
    """Stock reasoning tasks laid out as lmms-eval 0.7.3 has them: a direct doc_to_messages for most,
    MMMU-Pro's through ``include: _default_template_yaml``."""
    for bench in BENCHMARKS:
        folder = root / bench.split("_")[0] / "reasoning" if "mmmu_pro" not in bench else root / "mmmu_pro" / "reasoning"
        folder.mkdir(parents=True, exist_ok=True)
        fn = f"{bench}_doc_to_messages"
        if "mmmu_pro" in bench:
            (folder / "_default_template_yaml").write_text(
                "output_type: generate_until\ndoc_to_messages: !function utils.mmmu_pro_reward_doc_to_messages\n")
            with open(folder / "utils.py", "a") as fh:
                fh.write(STOCK_UTILS.format(fn="mmmu_pro_reward_doc_to_messages"))
            (folder / f"{bench}.yaml").write_text(f'task: "{LMMS_TASKS[bench]}"\ninclude: _default_template_yaml\n')
        else:
            (folder / "utils.py").write_text(STOCK_UTILS.format(fn=fn))
            (folder / f"{bench}.yaml").write_text(
                f'dataset_path: x/y\ntask: "{LMMS_TASKS[bench]}"\ndoc_to_messages: !function utils.{fn}\n')
    # lmms-eval 0.7.3 also defines mmmu_val_reasoning in mmmu/ itself, with an LLM judge
    (root / "mmmu" / "mmmu_val_reasoning.yaml").write_text(
        f'task: "{LMMS_TASKS["mmmu"]}"\nmetric_list:\n  - metric: llm_as_judge_eval\n')
    return str(root)


def test_the_judge_free_reasoning_definition_wins(tmp_path):
    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    assert find_stock_yaml(tasks_root, LMMS_TASKS["mmmu"]).endswith(os.path.join("mmmu", "reasoning", "mmmu.yaml"))


def test_overrides_include_the_stock_task_greedy_with_the_trained_prompt(tmp_path):
    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    data = tmp_path / "data"
    for bench in BENCHMARKS:
        (data / bench).mkdir(parents=True)
    names = write_tasks(str(tmp_path / "out"), tasks_root, BENCHMARKS, prompt="care", max_new_tokens=64,
                        data_dir=str(data), instruction=CARE_INSTRUCTION)
    assert names == {b: f"care_{b}" for b in BENCHMARKS}
    for bench in BENCHMARKS:
        text = (tmp_path / "out" / f"care_{bench}.yaml").read_text()
        assert f"include: {find_stock_yaml(tasks_root, LMMS_TASKS[bench])}" in text
        assert "temperature: 0" in text and "do_sample: false" in text and "max_new_tokens: 64" in text
        assert f"dataset_path: {data / bench}" in text and "load_from_disk: true" in text
    spec = importlib.util.spec_from_file_location("care_prompt_test", tmp_path / "out" / "care_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for bench in BENCHMARKS:
        messages = getattr(module, bench)({"question": "2+2?"})
        assert [m["role"] for m in messages] == ["user"]  # the stock system prompt is gone
        assert messages[0]["content"][0]["type"] == "image"
        assert messages[0]["content"][-1]["text"] == "Q: 2+2?\n\n" + CARE_INSTRUCTION  # as in training


def test_instruction_ends_the_turn_after_the_last_image(tmp_path):
    """MMMU's stock messages interleave text and images and end in an empty text part."""
    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    utils = Path(tasks_root) / "mmmu" / "reasoning" / "utils.py"
    utils.write_text(utils.read_text() + '''
def mmmu_doc_to_messages(doc, lmms_eval_specific_kwargs=None):
    return [{"role": "system", "content": [{"type": "text", "text": "s"}]},
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image", "url": 1},
                                         {"type": "text", "text": "and"}, {"type": "image", "url": 2},
                                         {"type": "text", "text": ""}]}]
''')
    write_tasks(str(tmp_path / "out"), tasks_root, ["mmmu"], prompt="care", max_new_tokens=8, data_dir=None,
                instruction=CARE_INSTRUCTION)
    spec = importlib.util.spec_from_file_location("care_prompt_mmmu", tmp_path / "out" / "care_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    content = module.mmmu({})[0]["content"]
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert content[2]["text"] == "and" and content[-1]["text"] == CARE_INSTRUCTION


def test_stock_prompt_writes_no_override_and_missing_data_is_an_error(tmp_path):
    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    write_tasks(str(tmp_path / "out"), tasks_root, ["mmmu"], prompt="stock", max_new_tokens=8, data_dir=None,
                instruction=CARE_INSTRUCTION)
    assert "doc_to_messages" not in (tmp_path / "out" / "care_mmmu.yaml").read_text()
    assert not (tmp_path / "out" / "care_prompt.py").exists()
    from evaluation.results import EvalResultError

    with pytest.raises(EvalResultError, match="no mmmu/"):
        write_tasks(str(tmp_path / "o2"), tasks_root, ["mmmu"], prompt="care", max_new_tokens=8,
                    data_dir=str(tmp_path), instruction=CARE_INSTRUCTION)
    with pytest.raises(EvalResultError, match="no task"):
        find_stock_yaml(str(tmp_path / "tasks" / "mathvista"), LMMS_TASKS["mmmu"])


def test_mmmu_pro_function_found_through_include(tmp_path):
    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    path, name = stock_messages_function(find_stock_yaml(tasks_root, LMMS_TASKS["mmmu_pro_vision"]))
    assert name == "mmmu_pro_reward_doc_to_messages" and path.endswith(os.path.join("mmmu_pro", "reasoning", "utils.py"))


def test_stage_eval_fails_loudly_on_a_bad_checkpoint(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "run_care.sh"), "--stage", "eval", str(tmp_path / "missing")],
                          cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3 and "does not exist" in proc.stderr
    assert main([str(tmp_path), "--benchmarks", "nope"]) == 2


def test_mathvision_testmini_uses_the_testmini_task(tmp_path):
    from evaluation.tasks import MATHVISION_TESTMINI_TASK

    tasks_root = fake_lmms_tasks(tmp_path / "tasks")
    folder = Path(tasks_root) / "mathvision" / "reasoning"
    (folder / "mathvision_testmini.yaml").write_text(
        f'task: "{MATHVISION_TESTMINI_TASK}"\ndoc_to_messages: !function utils.mathvision_doc_to_messages\n')
    write_tasks(str(tmp_path / "out"), tasks_root, ["mathvision"], prompt="care", max_new_tokens=8, data_dir=None,
                instruction=CARE_INSTRUCTION, stock_tasks={**LMMS_TASKS, "mathvision": MATHVISION_TESTMINI_TASK})
    assert "mathvision_testmini.yaml" in (tmp_path / "out" / "care_mathvision.yaml").read_text()


def test_hugging_face_backends_are_placed_on_the_requested_device():
    """lmms-eval 0.7.3's qwen2_5_vl/qwen3_vl default to device=cuda, device_map=auto (inputs then go to
    "cuda"): on CPU both must be set, and a user's own placement in --model-args wins."""
    from evaluation.run_eval import model_args

    def parsed(text):
        return dict(a.split("=", 1) for a in text.split(","))

    cpu = parsed(model_args("qwen2_5_vl", "/m", "", 1000, "cpu"))
    assert cpu == {"pretrained": "/m", "max_pixels": "1000", "device": "cpu", "device_map": "cpu"}
    mine = model_args("qwen3_vl", "/m", "device_map=auto,attn_implementation=sdpa", 1000, "cuda")
    assert mine.count("device_map=") == 1 and parsed(mine)["device_map"] == "auto" and parsed(mine)["device"] == "cuda"
    assert model_args("vllm", "/m", "tensor_parallel_size=8", 1000, "cpu") == "model=/m,tensor_parallel_size=8"
    assert model_args("dummy", "/m", "", 1000, "cpu") == ""


def test_a_second_caller_of_the_venv_script_waits_for_the_build_in_progress(tmp_path):
    """CI builds lmms-eval's virtualenv in the background while the smoke's eval stage may ask for it:
    the second caller waits on the lock, then finds the finished build instead of starting another."""
    import fcntl
    import time

    venv = tmp_path / "venv"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process is building"
        proc = subprocess.Popen(["bash", str(REPO / "evaluation" / "lmms_eval_venv.sh")], cwd=REPO,
                                env={**os.environ, "LMMS_EVAL_VENV": str(venv)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert proc.poll() is None, proc.communicate()
        (venv / "bin").mkdir(parents=True)  # the build finishes
        (venv / "bin" / "python").write_text("#!/bin/sh\n")
        (venv / "bin" / "python").chmod(0o755)
        (venv / ".care-verl-lmms-eval-0.7.3").touch()
        fcntl.flock(lock, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == str(venv / "bin" / "python")
    assert "waiting for another process" in err and "creating" not in err


def test_vllm_backend_without_vllm_is_a_clear_error_before_lmms_eval_runs(tmp_path, capsys):
    """On a GPU node lmms-eval would log vLLM's ImportError and exit 0; the stage stops first and says how to fix it."""
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    # an interpreter without vLLM (this one may have vLLM's CPU build): `import vllm` fails in it
    hidden = tmp_path / "no_vllm"
    (hidden / "vllm").mkdir(parents=True)
    (hidden / "vllm" / "__init__.py").write_text("raise ImportError('No module named vllm')\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={hidden} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    assert main([str(model), "--backend", "vllm", "--python", str(python), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert "cannot import vllm" in err and "LMMS_EVAL_VLLM=1 bash evaluation/lmms_eval_venv.sh" in err
    assert not (tmp_path / "out" / "lmms_tasks").exists()  # nothing ran


def test_venv_script_stamps_a_hugging_face_caller_may_use_the_vllm_build_not_the_reverse(tmp_path):
    def call(venv, **env):
        return subprocess.run(["bash", str(REPO / "evaluation" / "lmms_eval_venv.sh")], cwd=REPO, capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "LMMS_EVAL_VENV": str(venv), "PYTHON": "false", **env})

    def fake_venv(name, stamp):
        venv = tmp_path / name
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("#!/bin/sh\n")
        (venv / "bin" / "python").chmod(0o755)
        (venv / stamp).touch()
        return venv

    with_vllm = fake_venv("vllm", ".care-verl-lmms-eval-0.7.3-vllm")
    proc = call(with_vllm)
    assert proc.returncode == 0 and proc.stdout.strip() == str(with_vllm / "bin" / "python")
    plain = fake_venv("plain", ".care-verl-lmms-eval-0.7.3")
    proc = call(plain, LMMS_EVAL_VLLM="1")  # needs vLLM: rebuilds (PYTHON=false makes that fail at once)
    assert proc.returncode != 0 and "creating the lmms-eval virtualenv" in proc.stderr
