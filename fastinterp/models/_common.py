"""Checks shared by the models: hyper-parameters and the not-fitted error."""
from __future__ import annotations

import inspect
import math
import sys
import time
import warnings

import numpy as np

from .. import _validate
from .._validate import is_int, is_real_scalar


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


class InvalidTypeError(TypeError, ValueError):
    """A hyper-parameter or data of the wrong type (a float or a bool for an int, a
    string for a number, complex data). A ``TypeError`` that is also a
    ``ValueError``, as scikit-learn raises for these (its ``InvalidParameterError``;
    "Complex data not supported"), so code written for either keeps working."""


#: Largest value of an integer hyper-parameter (a count of steps, a batch size, a
#: polynomial degree): a C int, far beyond any run that finishes.
INT_PARAM_MAX = 2**31 - 1


def check_int(op: str, name: str, value, lo: int, none_ok: bool = False) -> int | None:
    """``value`` must be an int (Python or NumPy; not a bool, not a float) in
    ``[lo, 2**31 - 1]``, or None when ``none_ok``: :class:`InvalidTypeError` for
    another type, ``ValueError`` for a value out of range."""
    if value is None and none_ok:
        return None
    expected = f"an int >= {lo}{' or None' if none_ok else ''}"
    if not is_int(value):
        raise InvalidTypeError(f"{op}: {name} must be {expected}; got {value!r}.")
    if value < lo:
        raise ValueError(f"{op}: {name} must be {expected}; got {value!r}.")
    if value > INT_PARAM_MAX:
        raise ValueError(f"{op}: {name} must be an int <= 2**31 - 1; got {value!r}.")
    return int(value)


def check_flag(op: str, name: str, value) -> bool:
    """:func:`fastinterp._validate.check_flag` (a bool or an int, ``verbose=1`` as
    scikit-learn's estimators take it), its error an :class:`InvalidTypeError`."""
    try:
        return _validate.check_flag(op, name, value)
    except TypeError as exc:
        raise InvalidTypeError(str(exc)) from None


def check_real(op: str, name: str, value, positive: bool = False) -> float:
    """``value`` must be a finite real number >= 0 (> 0 when ``positive``):
    :class:`InvalidTypeError` for another type, ``ValueError`` for another value."""
    expected = f"a finite number {'>' if positive else '>='} 0"
    if not is_real_scalar(value):
        raise InvalidTypeError(f"{op}: {name} must be {expected}; got {value!r}.")
    try:
        value = float(value)
    except OverflowError:               # an int beyond float64
        raise ValueError(f"{op}: {name} must be {expected}; got "
                         f"{_validate.int_digits(value)}.") from None
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{op}: {name} must be {expected}; got {value!r}.")
    return float(value)


def check_float_dtype(op: str, name: str, value) -> np.dtype:
    """``value`` must name float32 or float64 (a type, a dtype or a string such as
    ``"float32"``): :class:`InvalidTypeError` for anything else, naming what was given
    (``np.dtype``'s own error names neither the argument nor the choices)."""
    try:
        dtype = None if value is None else np.dtype(value)    # np.dtype(None) is float64
    except (TypeError, ValueError):
        dtype = None
    if dtype not in (np.float32, np.float64):
        shown = repr(value) if dtype is None else str(dtype)
        raise InvalidTypeError(f"{op}: {name} must be float32 or float64; got {shown}.")
    return dtype


# --- scikit-learn's estimator protocol, without importing scikit-learn --------------------

class Estimator:
    """scikit-learn's estimator protocol, implemented here so that importing
    :mod:`fastinterp.models` does not import scikit-learn (an optional dependency).

    ``get_params``/``set_params`` read the constructor's signature (every
    argument is stored unchanged as an attribute of the same name), so
    :func:`sklearn.base.clone`, ``Pipeline`` and ``GridSearchCV`` work;
    ``__sklearn_tags__`` imports scikit-learn only when scikit-learn itself asks.
    """

    _kind = None                      # "transformer" or "regressor"

    @classmethod
    def _get_param_names(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in params if p.name != "self"
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep=True):
        """The constructor's arguments as a dict (with ``step__param`` entries
        of nested estimators when ``deep``)."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor arguments (``name=value`` or ``nested__name=value``); returns self.

        Values are checked at ``fit``, as scikit-learn's convention asks.
        """
        valid = self._get_param_names()
        nested = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"{type(self).__name__}.set_params: invalid parameter "
                                 f"{name!r}; valid parameters are {valid}.")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        shown = []
        for name in self._get_param_names():
            value, default = getattr(self, name), defaults[name].default
            same = value is default
            if not same:
                try:
                    same = bool(value == default)
                except Exception:       # arrays and the like: shown
                    same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        from sklearn.utils import RegressorTags, Tags, TargetTags, TransformerTags
        tags = Tags(estimator_type=None, target_tags=TargetTags(required=True))
        if self._kind == "transformer":
            tags.transformer_tags = TransformerTags()
        elif self._kind == "regressor":
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags


def seed_from(op: str, random_state, seed):
    """The seed to use: ``random_state``, or the deprecated ``seed`` with a FutureWarning.

    ``random_state`` may be None (fresh entropy), an int or a
    ``numpy.random.Generator``/``RandomState`` (an int is drawn from it).
    """
    if not (isinstance(seed, str) and seed == "deprecated"):
        warnings.warn(f"{op}: seed is deprecated and will be removed; use random_state.",
                      FutureWarning, stacklevel=4)
        random_state = seed
    if random_state is None or isinstance(random_state, (np.random.Generator,)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise InvalidTypeError(f"{op}: random_state must be None, an int >= 0 or a NumPy "
                               f"random generator; got {random_state!r}.")
    if random_state < 0:
        raise ValueError(f"{op}: random_state must be None, an int >= 0 or a NumPy random "
                         f"generator; got {random_state!r}.")
    return np.random.default_rng(int(random_state))


# Mean squares in this range lost nothing to overflow or underflow of the squares.
_SAFE_MEAN_SQUARE = (1e-290, 1e290)


def root_mean_square(values) -> float:
    """``sqrt(mean(values**2))`` of a 1-D float array, scaled by its largest magnitude so
    that squares neither overflow nor underflow (finite values at any scale); 0 for an
    empty or all-zero array."""
    v = np.asarray(values, np.float64).ravel()
    big = float(np.max(np.abs(v), initial=0.0))
    if big == 0 or not math.isfinite(big):
        return big
    return big * float(np.sqrt(np.mean((v / big) ** 2)))


def column_mean(X, chunk: int = 4096) -> np.ndarray:
    """The mean of each column of ``X`` (n, D) in float64, summed over fixed row blocks
    (no temporary as large as X; the same bits for any thread count). A column of
    finite values whose sum overflows (values near float64's limit) is summed again
    scaled by its largest magnitude, so its mean comes out finite. The mean is kept
    within the column's range, which rounding can leave: a constant column's mean is
    its value (0.1 summed 30 times and divided gives 0.10000000000000005), so its
    spread is exactly 0 and the models see it as constant."""
    n, d = X.shape
    if n == 0:
        return np.zeros(d)
    total, low, high = np.zeros(d), np.full(d, np.inf), np.full(d, -np.inf)
    with np.errstate(over="ignore", invalid="ignore"):   # such columns are redone below
        for r in range(0, n, chunk):
            block = X[r:r + chunk]
            total += np.sum(block, axis=0, dtype=np.float64)
            low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
    mean = total / n
    redo = np.flatnonzero(~np.isfinite(mean))
    if redo.size == 0:
        return np.minimum(np.maximum(mean, low), high)
    big = np.zeros(redo.size)
    for r in range(0, n, chunk):
        big = np.maximum(big, np.max(np.abs(X[r:r + chunk, redo]), axis=0, initial=0.0))
    unit = np.where((big > 0) & np.isfinite(big), big, 1.0)
    scaled = np.zeros(redo.size)
    for r in range(0, n, chunk):
        scaled += np.sum(X[r:r + chunk, redo] / unit, axis=0, dtype=np.float64)
    mean[redo] = unit * (scaled / n)
    return np.minimum(np.maximum(mean, low), high)


def column_spread(X, mean, chunk: int = 4096) -> np.ndarray:
    """The standard deviation of each column of ``X`` (n, D) about ``mean`` (D,), in
    float64, summed over fixed row blocks (no temporary as large as X; the same bits
    for any thread count).

    A column whose squared deviations overflow or underflow float64 (spreads above
    about 1e145 or below about 1e-145) is summed again scaled by its largest
    deviation, so its spread comes out right rather than inf or 0: models
    standardise with it, and finite data at any scale must train alike.
    """
    n, d = X.shape
    mean = np.asarray(mean, np.float64)
    sq = np.zeros(d)
    with np.errstate(over="ignore", under="ignore"):   # such columns are redone below
        for r in range(0, n, chunk):
            dev = X[r:r + chunk] - mean
            sq += np.sum(dev * dev, axis=0)
    mean_square = sq / max(n, 1)
    spread = np.sqrt(mean_square)
    lo, hi = _SAFE_MEAN_SQUARE
    redo = np.flatnonzero(~((mean_square > lo) & (mean_square < hi)))
    if redo.size == 0:
        return spread
    big = np.zeros(redo.size)
    magnitude = np.abs(mean[redo])
    with np.errstate(over="ignore"):        # deviations beyond float64: see below
        for r in range(0, n, chunk):
            block = X[r:r + chunk, redo]
            big = np.maximum(big, np.max(np.abs(block - mean[redo]), axis=0, initial=0.0))
            magnitude = np.maximum(magnitude, np.max(np.abs(block), axis=0, initial=0.0))
    # finite data whose deviations exceed float64 (|X| near 1e308 of both signs) is scaled
    # by its magnitude instead (centred_scaled then takes X / unit - mean / unit)
    unit = np.where(np.isinf(big), magnitude, np.where(big > 0, big, 1.0))
    scaled = np.zeros(redo.size)
    for r in range(0, n, chunk):
        scaled += np.sum(centred_scaled(X[r:r + chunk, redo], mean[redo], unit) ** 2, axis=0)
    spread[redo] = np.where(big > 0, unit * np.sqrt(scaled / max(n, 1)), 0.0)
    return spread


def centred_scaled(X, mean, scale):
    """``(X - mean) / scale`` in float64 (``mean`` and ``scale`` per column); where a
    finite ``X - mean`` overflows (data spanning more than float64's range), taken as
    ``X / scale - mean / scale`` instead."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = (X - mean) / scale
        bad = ~np.isfinite(out) & np.isfinite(X)
        if bad.any():
            out = np.where(bad, X / scale - mean / scale, out)
    return out


def real_data(op: str, name: str, data) -> np.ndarray:
    """``data`` as a NumPy array of real numbers: bool, integer and float arrays as they
    are, an object array of real numbers as float64 (as scikit-learn reads it).

    Complex data and strings (an array of them, or an object array holding one) raise
    :class:`InvalidTypeError` (a ``TypeError``, also the ``ValueError`` scikit-learn's
    checks expect); other objects that are not numbers NumPy's ``TypeError``, its
    words kept.
    """
    a = np.asarray(data)
    kind = a.dtype.kind
    if kind == "c" or (kind == "O" and any(isinstance(v, (complex, np.complexfloating))
                                           for v in a.flat)):
        raise InvalidTypeError(f"{op}: {name} must be real; got {a.dtype}"
                               f"{' holding complex numbers' if kind == 'O' else ''}. "
                               f"Complex data not supported.")
    if kind in "USV" or (kind == "O" and any(isinstance(v, (str, bytes)) for v in a.flat)):
        raise InvalidTypeError(f"{op}: {name} must hold numbers; got dtype {a.dtype} with "
                               f"strings or records (convert them to numbers first).")
    if kind not in "fiub":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:     # the same class as NumPy's, its words kept
            if any(type(v).__name__ == "NAType" for v in a.flat):     # pandas' pd.NA
                raise ValueError(f"{op}: {name} must be finite; got a missing value (pd.NA; "
                                 f"Input {name} contains NaN).") from None
            raise type(e)(f"{op}: {name} must hold numbers; got dtype {a.dtype} with a value "
                          f"that is not one ({e}).") from None
        except OverflowError:                    # an int beyond float64 in an object array
            raise ValueError(f"{op}: {name} must be finite; got an int beyond float64 "
                             f"(dtype {a.dtype}).") from None
    return a


def check_matrix(op: str, name: str, X, min_rows: int = 1) -> np.ndarray:
    """A 2-D finite real array (N, D) with N >= ``min_rows`` and D >= 1, as float64
    unless already float32/float64; errors in the forms scikit-learn's checks expect."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{op}: {name} must be a dense array; got a sparse matrix "
                        f"({type(X).__name__}); call .toarray() first.")
    X = real_data(op, name, X)
    if X.ndim != 2:
        raise ValueError(f"{op}: {name} must have shape (N, D); got {X.shape}. Reshape your "
                         f"data: X.reshape(-1, 1) for a single feature, X.reshape(1, -1) for "
                         f"a single sample.")
    n, d = X.shape
    if n < min_rows:
        raise ValueError(f"{op}: {name} must have at least {min_rows} samples; got {n} "
                         f"sample{'s' if n != 1 else ''} (n_samples = {n}).")
    if d < 1:
        raise ValueError(f"{op}: {name} must have at least 1 feature; got 0 feature(s) "
                         f"(shape=({n}, 0)) while a minimum of 1 is required.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{op}: {name} must be finite; got NaN or infinity.")
    return X


def check_target(op: str, y, n: int, numeric: bool) -> np.ndarray:
    """The target: shape (n,) (a column (n, 1) is accepted with a DataConversionWarning)."""
    if y is None:
        raise ValueError(f"{op}: requires y to be passed, but the target y is None.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        _warn_column(op)
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"{op}: y must have shape ({n},) like X's rows; got {y.shape}.")
    if numeric:
        y = np.asarray(real_data(op, "y", y), dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{op}: y must be finite; got NaN or infinity (Input y contains "
                             f"NaN or infinity).")
    return y


def _warn_column(op):
    try:
        from sklearn.exceptions import DataConversionWarning as category
    except ImportError:
        category = UserWarning
    warnings.warn(f"A column-vector y was passed when a 1d array was expected ({op}); "
                  f"it is used as y.ravel().", category, stacklevel=4)


def convergence_warning(message: str) -> None:
    """Warn that a fit stopped at its step limit (scikit-learn's ConvergenceWarning when
    scikit-learn is installed, else a UserWarning), pointing at the caller of ``fit``."""
    try:
        from sklearn.exceptions import ConvergenceWarning as category
    except ImportError:
        category = UserWarning
    warnings.warn(message, category, stacklevel=3)


def feature_names(op: str, X) -> np.ndarray | None:
    """The column names of a pandas DataFrame ``X`` as an object array when they are all
    strings, else None (scikit-learn's rule: integer column labels are not feature
    names; a mix of strings and other labels is a ``TypeError``)."""
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(list(columns), dtype=object)
    strings = [isinstance(n, str) for n in names]
    if names.size == 0 or not any(strings):
        return None
    if all(strings) and len(set(names)) < len(names):
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        raise ValueError(f"{op}: X's column names must be unique (they name the features); "
                         f"got {repeated} more than once.")
    if not all(strings):
        kinds = sorted({type(n).__name__ for n in names})
        raise TypeError(f"{op}: feature names are only supported if all input features "
                        f"have string names; got feature names with types {kinds}. Convert "
                        f"them all to strings, e.g. X.columns = X.columns.astype(str).")
    return names


def record_feature_names(estimator, names: np.ndarray | None) -> None:
    """``fit``: keep X's feature names (:func:`feature_names`) as ``feature_names_in_``
    (forgetting a previous fit's when X had none), as scikit-learn's estimators do."""
    if names is None:
        estimator.__dict__.pop("feature_names_in_", None)
    else:
        estimator.feature_names_in_ = names


def _listed_names(names) -> str:
    shown = [f"- {n}\n" for n in names[:5]]
    return "".join(shown) + ("- ...\n" if len(names) > 5 else "")


def check_feature_names(op: str, estimator, X) -> None:
    """``predict``/``transform``: X's feature names must be those ``fit`` saw, in the same
    order (a ``ValueError`` in scikit-learn's words); names on one side only give
    scikit-learn's ``UserWarning``."""
    names, fitted = feature_names(op, X), getattr(estimator, "feature_names_in_", None)
    cls = type(estimator).__name__
    if names is None and fitted is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {cls} was fitted without feature names",
                      UserWarning, stacklevel=3)
    elif names is None:
        warnings.warn(f"X does not have valid feature names, but {cls} was fitted with "
                      f"feature names", UserWarning, stacklevel=3)
    elif len(names) != len(fitted) or np.any(names != fitted):
        unseen = sorted(set(names) - set(fitted))
        missing = sorted(set(fitted) - set(names))
        message = f"{op}: The feature names should match those that were passed during fit.\n"
        if unseen:
            message += "Feature names unseen at fit time:\n" + _listed_names(unseen)
        if missing:
            message += "Feature names seen at fit time, yet now missing:\n" + _listed_names(missing)
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)


def n_features_error(op: str, cls: str, got: int, want: int) -> ValueError:
    """A feature-count mismatch at predict/transform time."""
    return ValueError(f"{op}: X has {got} features, but {cls} is expecting {want} features "
                      f"as input; X must have shape (M, {want}).")


class Progress:
    """Progress of a long fit: a tqdm bar when ``enabled`` and tqdm is installed, else
    one plain line on stderr rewritten in place; nothing when not ``enabled``.

    Use as a context manager; ``update(n, **info)`` advances by ``n`` steps and
    shows ``info`` (the loss, say) next to the count.
    """

    def __init__(self, enabled: bool, total: int, desc: str):
        self.enabled, self.total, self.desc = bool(enabled), int(total), desc
        self.done, self._bar, self._last = 0, None, -1.0
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, desc=desc, leave=True)

    def update(self, n: int = 1, **info):
        if not self.enabled:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix(info, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.done < self.total:
            return                          # a plain line: at most ten writes a second
        self._last = now
        extra = "".join(f" {k} {v:.4g}" if isinstance(v, float) else f" {k} {v}"
                        for k, v in info.items())
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total}{extra}")
        sys.stderr.flush()

    def write(self, line: str):
        """Print a log line (``verbose``) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            if self.enabled and self.done:
                sys.stderr.write("\n")       # end the plain progress line first
            print(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
        return False
