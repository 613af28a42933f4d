"""What a smoke workdir remembers of its run, so running the same command again continues it.

A preempted or killed smoke (``bash run_care.sh --smoke --workdir W``) is restarted with the same
command. ``<W>/checkpoints/<run>/smoke_run.json`` holds the run's plan (the options that shape its
training) and the stages it finished. The next invocation with the same workdir and the same plan skips
the finished stages and starts the unfinished training run again with the same overrides, so verl
resumes from the newest complete checkpoint (``trainer.resume_mode=auto``). A finished run, or one with
a different plan, starts over, and says so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from recipe.care.checkpoints import atomic_write_text

STATE_FILE = "smoke_run.json"


@dataclass
class RunState:
    """The smoke run in ``folder`` (``<workdir>/checkpoints/<run>``): its plan and finished stages."""

    folder: Path
    plan: dict
    finished: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    def done(self, stage: str) -> bool:
        return stage in self.finished

    def finish(self, stage: str) -> None:
        """Record ``stage`` as finished (atomically: a kill leaves the old state or the new one)."""
        if stage not in self.finished:
            self.finished.append(stage)
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"plan": self.plan, "finished": self.finished}, indent=1, sort_keys=True))


def open_run(folder: Path, plan: dict, stages: list[str], metrics: list[Path], fresh: bool = False) -> tuple[RunState, str]:
    """The run to do in ``folder``: the unfinished one with the same ``plan`` (continued), else a new one.

    ``stages``: every stage of this plan, in order; a state with all of them finished is a finished run.
    ``metrics``: the run's metrics files, deleted with its checkpoints when it starts over.
    Returns the state and one line saying which it is and why.
    """
    previous = _read(folder / STATE_FILE)
    if previous is not None and not fresh and previous.get("plan") == plan:
        finished = [s for s in previous.get("finished", []) if s in stages]
        if len(finished) < len(stages):
            todo = [s for s in stages if s not in finished]
            return RunState(folder, plan, finished), (
                f"continuing the unfinished run in {folder} (finished: {', '.join(finished) or 'nothing yet'}; "
                f"next: {todo[0]}); verl resumes from its newest complete checkpoint")
        why = "the run there is finished"
    elif previous is not None and not fresh:
        changed = sorted(k for k in {*plan, *previous.get("plan", {})} if plan.get(k) != previous.get("plan", {}).get(k))
        why = f"the run there had other options ({', '.join(changed)})"
    elif fresh:
        why = "--fresh"
    elif folder.exists():
        why = "its folder has no smoke state"
    else:
        why = None
    shutil.rmtree(folder, ignore_errors=True)
    for path in metrics:
        path.unlink(missing_ok=True)
    state = RunState(folder, plan)
    state.save()
    return state, f"a new run in {folder}" + (f" ({why}: starting over)" if why else "")


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
