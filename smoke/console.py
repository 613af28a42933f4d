"""What reaches the smoke's console: a ``[smoke]`` line per stage, the training runs' output filtered.

The runs' whole output always goes to their log files; the console gets the lines that may matter
(:func:`console_line`), so a CPU run's known-harmless warnings do not bury an error.
"""

from __future__ import annotations

import re


def log(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


# Warnings every CPU run prints and no user can act on: verl's optional engines that are not
# installed, NUMA/accelerator probing on a CPU-only machine, TransferQueue capping its threads,
# verl's reminder that the critic is off (CARE is critic-free), torchdata's deprecation, transformers'
# deprecation notes triggered inside verl's SFT trainer.
HARMLESS = re.compile("|".join([
    r"engine is not available: ModuleNotFoundError", r"warnings\.warn\(f\"\w+ engine is not available",
    r"Failed to set NUMA affinity", r"should not exceed total physical CPU cores",
    r"Platform '\w+' \(\w+\) is registered but not available", r"No supported accelerator detected",
    r"Disabled critic as algorithm\.adv_estimator != gae", r"self\.use_critic = need_critic|if need_critic\(config\):",
    r"validate_config\(config=config, use_reference_policy", r"'set_vital' is deprecated", r"torch\.set_vital\(",
    # verl 0.9.1's SFT dataset and model loading use transformers 5.9's deprecated spellings
    r"Kwargs passed to `processor\.__call__` have to be in `processor_kwargs`", r"`torch_dtype` is deprecated!",
    # vLLM's CPU build (verl_cpu/vllm_cpu.py): what it says about the CPU and the settings a CPU
    # run needs (sleep mode off, eager mode, weights by shared memory, the per-request sampling verl sends)
    r"sleep mode is not supported on CPU, ignore it", r"Triton is installed, but doesn't include CPU backend",
    r"Enforce eager set, disabling torch\.compile", r"Inductor compilation was disabled by user settings",
    r"CPU backend doesn't allow to use `torch\.set_num_threads`", r"is not found in LD_PRELOAD",
    r"No CUDA runtime is found, using CUDA_HOME", r"Passing raw prompts to InputProcessor is deprecated",
    r"LoRA dynamic loading & unloading is enabled in the API server",
    r"Default vLLM sampling parameters have been overridden by the model's `generation_config\.json`",
    r"IPC is not supported on your devices\. Falling back to shared memory", r"NUMA binding: Using MEMBIND policy",
    # verl asks every processor for Qwen3's `enable_thinking`; transformers 5.9 deprecates `use_fast`
    r"Keyword argument `enable_thinking` is not a valid argument for this processor",
    r"The `use_fast` parameter is deprecated",
]))
# Lines worth a person's attention in quiet mode: errors, and warnings not known to be harmless.
NOTABLE = re.compile(r"Traceback|Error|ERROR|Exception|WARNING|Warning|warnings\.warn|Killed|Segmentation")
VERL_STEP_LINE = re.compile(r"(?:^|\s)step:(\d+) - ")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def console_line(line: str, verbose: bool) -> bool:
    """Whether a line of the training run's output is echoed to the console (it always goes to the log)."""
    plain = ANSI.sub("", line)
    if HARMLESS.search(plain) or VERL_STEP_LINE.search(plain):  # verl's 50-metric step line: log only
        return False
    return verbose or bool(NOTABLE.search(plain))


def quiet_known_harmless() -> None:
    """Keep this process's own known-harmless warnings (see HARMLESS) off the console: importing verl
    on a CPU machine warns about every optional engine that is not installed and logs that no
    accelerator was found. The training runs' copies go to their log files (run_job)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".* engine is not available: ModuleNotFoundError", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"Disabled critic as algorithm\.adv_estimator != gae", category=UserWarning)
    logging.getLogger("verl.plugin.platform.platform_manager").addFilter(
        lambda record: not HARMLESS.search(record.getMessage()))
