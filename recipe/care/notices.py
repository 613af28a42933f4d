"""Lines a person must see, from whichever process of a run they happen in.

The recipe's ``logging`` warnings from inside verl's Ray workers did not reach a Ray job's log (a
``logger.warning`` in the task runner was missing while ``print`` output and verl's own handler's lines
arrived), so what a user acts on (where a run resumed, rows skipped, rewards that failed, checkpoint
repairs) is printed to stdout and flushed, which Ray forwards to the driver with the worker's name.
"""

from __future__ import annotations


def notice(message: str, *args) -> None:
    """Print ``message % args`` (the ``logging`` call convention) to stdout, flushed."""
    print(message % args if args else message, flush=True)
