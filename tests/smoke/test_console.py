"""What reaches the smoke's console (smoke/console.py): known-harmless warnings and verl's step lines stay
in the log, errors and unknown warnings are shown."""

from smoke.console import console_line, quiet_known_harmless


def test_known_harmless_warnings_and_verl_step_lines_stay_off_the_console():
    harmless = [
        "\x1b[36m(pid=12860)\x1b[0m /x/verl/workers/engine/__init__.py:69: UserWarning: megatron engine is not "
        "available: ModuleNotFoundError(\"No module named 'megatron'\")",
        "(pid=1)   warnings.warn(f\"megatron engine is not available: {e!r}\", stacklevel=1)",
        "Warning: Failed to set NUMA affinity: libnuma.so: cannot open shared object file",
        "2026-12-01 17:06:29,700 - WARNING - transfer_queue.utils.common - target_num_threads 8 should not exceed "
        "total physical CPU cores 2. Setting to 2.",
        "(CareTaskRunner pid=1) step:1 - global_seqlen/min:2990.0 - actor/pg_loss:0.1",
        # verl 0.9.1's SFT dataset calls the Qwen-VL processor in transformers 5.9's deprecated way
        "WARNING:2026-12-01 18:32:50,293:Kwargs passed to `processor.__call__` have to be in `processor_kwargs` "
        "dict, not in `**kwargs`",
        "WARNING:2026-12-01 18:32:53,771:`torch_dtype` is deprecated! Use `dtype` instead!",
    ]
    for line in harmless:
        assert not console_line(line, verbose=False) and not console_line(line, verbose=True), line
    assert console_line("Traceback (most recent call last):", verbose=False)
    assert console_line("(WorkerDict pid=3) RuntimeError: gloo timed out", verbose=False)
    assert console_line("UserWarning: something new", verbose=False)  # an unknown warning is shown
    assert not console_line("(CareTaskRunner pid=1) dataset len: 17", verbose=False)
    assert console_line("(CareTaskRunner pid=1) dataset len: 17", verbose=True)


def test_the_smoke_process_silences_its_own_known_harmless_warnings(capsys):
    import logging
    import warnings

    platform = logging.getLogger("verl.plugin.platform.platform_manager")
    saved = list(platform.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_harmless()
        warnings.warn("megatron engine is not available: ModuleNotFoundError(\"No module named 'megatron'\")",
                      UserWarning)
        warnings.warn("something else", UserWarning)
        kept = platform.filter(logging.LogRecord(platform.name, logging.WARNING, "", 0, "Platform 'nvidia' "
                                                 "(PlatformCUDA) is registered but not available.", None, None))
    platform.filters[:] = saved
    assert [str(w.message) for w in caught] == ["something else"]
    assert not kept
