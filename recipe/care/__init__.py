"""CARE (Contrastive Anchored REflection) as a verl recipe.

``recipe/`` is a namespace package, so this folder can be copied into a verl fork's ``recipe/``.
Importing it checks the installed verl version (metadata only; verl itself is imported lazily by
the adapters that need it). The mathematics lives in :mod:`recipe.care.core_algos`.
"""

from recipe.care.verl_compat import VERL_VERSION, check_verl_version

check_verl_version()

__version__ = "0.1.0"
__all__ = ["VERL_VERSION", "__version__"]
