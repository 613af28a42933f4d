"""The CPU smoke run: the whole pipeline (data, cold-start SFT, RL with resume, evaluation, report) on a
tiny random-weight model, offline. Not part of the recipe: it exists to prove the recipe on a machine
without a GPU (``bash run_care.sh --smoke`` or ``python -m smoke``)."""
