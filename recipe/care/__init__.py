"""CARE (Contrastive Anchored REflection) as a verl recipe.

``recipe/`` is a namespace package, so this folder can be copied into a verl fork's ``recipe/``.
The mathematics lives in :mod:`recipe.care.core_algos` and imports without verl; the adapters
check the installed verl version where they first use verl (:mod:`recipe.care.verl_compat`).
"""

from recipe.care.verl_compat import VERL_VERSION

__version__ = "0.1.0"
__all__ = ["VERL_VERSION", "__version__"]
