"""Final evaluation on the paper's six benchmarks through lmms-eval (``bash run_care.sh --stage eval CKPT``).

- :mod:`evaluation.tasks`: which lmms-eval task measures which benchmark, and the paper's published rows.
- :mod:`evaluation.results`: lmms-eval's output -> ``results.json`` / ``results.md``, failing on a missing
  or empty task (lmms-eval exits 0 when a task fails).
- :mod:`evaluation.checkpoint`: an FSDP actor checkpoint -> a Hugging Face folder (verl's model merger).
- :mod:`evaluation.run_eval`: the stage itself (merge, virtualenv, task overrides, lmms-eval, table).
- ``lmms_eval_venv.sh``: lmms-eval's own pinned virtualenv, created on first use.

No verl import at module level (the merger runs in a subprocess).
"""
