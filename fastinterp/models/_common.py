"""Checks shared by the models: hyper-parameters and the not-fitted error."""
from __future__ import annotations

import math

import numpy as np


class _NotFittedError(ValueError, AttributeError):
    """Used when scikit-learn is absent: the same bases as sklearn's NotFittedError."""


def not_fitted(op: str) -> Exception:
    """The error for a model used before ``fit``.

    scikit-learn's ``NotFittedError`` when scikit-learn can be imported (so
    ``except NotFittedError`` works in pipelines), else a class with the same
    bases (``ValueError`` and ``AttributeError``).
    """
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        NotFittedError = _NotFittedError
    return NotFittedError(f"{op}: the model is not fitted; call fit first.")


def check_int(op: str, name: str, value, lo: int) -> int:
    """``value`` must be an int (not bool) >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{op}: {name} must be an int >= {lo}; got {value!r}.")
    return int(value)


def check_real(op: str, name: str, value, positive: bool = False) -> float:
    """``value`` must be a finite real number >= 0 (> 0 when ``positive``)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{op}: {name} must be a finite number {'>' if positive else '>='} 0; "
                         f"got {value!r}.")
    return float(value)
