"""The one place that knows which verl this recipe was written against.

The recipe subclasses and wraps verl internals (trainer, workers, agent loop, reward loop). Those
APIs move between releases, so a mismatched verl must fail at import with a message that says
what to install, not later with an AttributeError deep inside a Ray worker. Every adapter takes
verl through :func:`require_verl_attr`, which checks the version first (once per process); the
pure modules (core_algos, spans, rgr, care_config, ...) import without verl.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from importlib import metadata

VERL_VERSION = "0.9.1"
_OVERRIDE_ENV = "CARE_VERL_ALLOW_ANY_VERL"


class VerlVersionError(ImportError):
    pass


def check_verl_version() -> str:
    """Return the installed verl version; raise :class:`VerlVersionError` unless it is the pinned one.

    Uses package metadata only, so it costs nothing and does not import verl (or torch).
    ``CARE_VERL_ALLOW_ANY_VERL=1`` turns the mismatch into a warning for people porting the recipe.
    """
    try:
        installed = metadata.version("verl")
    except metadata.PackageNotFoundError:
        installed = None
    if installed == VERL_VERSION:
        return installed
    found = "verl is not installed" if installed is None else f"found verl=={installed}"
    message = (
        f"care-verl was written against verl=={VERL_VERSION} and patches its internals; {found}. "
        f'Install it with `pip install "verl[verl-core]=={VERL_VERSION}"` (or `pip install -e ".[gpu]"` '
        f"on a GPU machine), or set {_OVERRIDE_ENV}=1 to try another version at your own risk."
    )
    if installed is not None and os.environ.get(_OVERRIDE_ENV) == "1":
        warnings.warn(message, stacklevel=2)
        return installed
    raise VerlVersionError(message)


@functools.cache
def _checked_verl_version() -> str:
    """:func:`check_verl_version`, once per process (a failure is not cached: it raises every time)."""
    return check_verl_version()


def require_verl_attr(module: str, *attrs: str):
    """Import ``module`` and return the named attributes, failing clearly if the installed verl is
    not the pinned one (:func:`check_verl_version`) or lacks one of them."""
    _checked_verl_version()
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise VerlVersionError(
            f"care-verl needs `{module}` from verl=={VERL_VERSION}, but importing it failed: {exc}"
        ) from exc
    missing = [name for name in attrs if not hasattr(mod, name)]
    if missing:
        raise VerlVersionError(
            f"`{module}` has no {', '.join(missing)}: care-verl was written against verl=={VERL_VERSION}."
        )
    values = tuple(getattr(mod, name) for name in attrs)
    return values[0] if len(values) == 1 else values
