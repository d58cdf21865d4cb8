"""Polynomial least squares by gradient descent with the optimizer layer."""
from __future__ import annotations

import itertools
from math import comb

import numpy as np
from numpy.polynomial import Polynomial

from ._common import (Estimator, Progress, centred_scaled, check_feature_names, check_flag,
                      check_int, check_matrix, check_real, check_target, column_mean,
                      column_spread, convergence_warning, feature_names, n_features_error,
                      not_fitted, real_data, record_feature_names, root_mean_square)
from ..distance import deterministic_matmul as matmul
from .._validate import check_option
from ..optim import SGD, Adam

__all__ = ["PolynomialRegression"]


# Products by fastinterp's GEMM and sums by NumPy's fixed-order reductions (not BLAS),
# so that a fit has the same bits for any thread count and calling thread.
def _matvec(m, v):
    return matmul(m, v[:, None])[:, 0]


def _largest_eigenvalue(gram):
    """The largest eigenvalue of a symmetric positive semi-definite matrix, by power
    iteration with fastinterp's GEMM from a fixed start (LAPACK's eigen-solver gives
    bits that depend on the BLAS thread count). The Rayleigh quotient never exceeds
    it and stops when it changes by less than 1e-12 of itself (at most 1000 steps)."""
    v = np.random.default_rng(0).standard_normal(gram.shape[0])
    v /= _norm(v)
    value = 0.0
    for _ in range(1000):
        w = _matvec(gram, v)
        previous, value = value, float(v @ w)
        size = _norm(w)
        if size == 0 or not np.isfinite(size):
            break
        v = w / size
        if abs(value - previous) <= 1e-12 * abs(value):
            break
    return value


def _norm(v):
    """The Euclidean norm of a gradient, finite and nonzero at any scale of y (its squares
    would overflow above ~1e154 and vanish below ~1e-160)."""
    return root_mean_square(v) * float(np.sqrt(v.size))


def _unit_of(y):
    """1, or for a y whose largest magnitude lies beyond 2^+-400 (its squares and sums would
    leave float64) the power of two nearest above it."""
    big = float(np.max(np.abs(y), initial=0.0))
    if big == 0 or 2.0 ** -400 <= big <= 2.0 ** 400:
        return 1.0
    return float(np.ldexp(1.0, np.frexp(big)[1]))


def _powers(d, degree):
    """Exponents (T, d) of every monomial of total degree <= ``degree`` in d variables,
    by degree, then in lexicographic order of the variables (1, x0, x1, x0^2, x0 x1, ...)."""
    rows = []
    for k in range(degree + 1):
        for combo in itertools.combinations_with_replacement(range(d), k):
            rows.append(np.bincount(np.asarray(combo, dtype=np.intp), minlength=d))
    return np.array(rows, dtype=np.int64).reshape(-1, d)


def _design(T, powers):
    """The monomials of the rows of T (n, d): an (n, len(powers)) matrix."""
    V = np.ones((T.shape[0], len(powers)))
    for j, p in enumerate(powers):
        for var in np.flatnonzero(p):
            V[:, j] *= T[:, var] ** p[var]
    return V


def _expand(c, powers, mu, s):
    """Coefficients of the same polynomial in x, given those ``c`` in ``t = (x - mu) / s``.

    Each ``prod_j t_j^p_j`` is expanded binomially:
    ``prod_j s_j^-p_j sum_{q_j <= p_j} C(p_j, q_j) x_j^q_j (-mu_j)^(p_j - q_j)``.
    """
    index = {tuple(p): j for j, p in enumerate(powers)}
    out = np.zeros(len(powers))
    with np.errstate(over="ignore", under="ignore", divide="ignore"):  # beyond float64: inf
        for cj, p in zip(c, powers):
            for q in itertools.product(*(range(pi + 1) for pi in p)):
                w = cj
                for pi, qi, m, si in zip(p, q, mu, s):   # (-m)^(p-q) / s^p, without s^p,
                    if w == 0:                            # which overflows; a zero term
                        break                             # stays 0 (never 0 * inf)
                    w *= comb(int(pi), qi) * (-m / si) ** (pi - qi) / si ** qi
                out[index[q]] += w
    return out


class PolynomialRegression(Estimator):
    """Fit ``y ~ sum_p c_p x^p`` (monomials up to total degree ``degree``) by gradient
    descent on the mean squared error.

    The classic manual-gradient example: the residual ``r = V c - y`` of the
    Vandermonde (design) matrix ``V`` gives the gradient ``(2/n) V^T r``, and an
    optimizer from :mod:`fastinterp.optim` steps ``c``. To keep gradient
    descent well conditioned, each variable is standardised first
    (``t = (x - mu)/s``), the fit runs on monomials of ``t``, and the
    coefficients are converted back to monomials of ``x`` at the end (exactly,
    by binomial expansion). :meth:`closed_form` gives the least-squares
    solution for comparison.

    Two input forms: ``x`` of shape (n,) is one variable (``coef_`` holds the
    coefficients of ``1, x, ..., x^degree`` and :meth:`predict` evaluates any
    shape elementwise), and ``X`` of shape (n, D) is D features, as in
    scikit-learn (all monomials of total degree <= ``degree``, listed in
    ``powers_``; :meth:`predict` takes (M, D) and returns (M,)).

    A scikit-learn regressor: ``get_params``/``set_params``, ``clone``,
    ``score`` (R^2), ``Pipeline`` and ``GridSearchCV`` work, and it passes
    ``check_estimator`` (except that a 1-D input is a valid single variable).

    :meth:`fit` gives the same bits for any ``set_num_threads``, BLAS thread
    count and calling thread (its products use fastinterp's deterministic GEMM,
    not the process's BLAS); :meth:`closed_form` calls LAPACK and need not.

    Parameters
    ----------
    degree : int
        Polynomial degree, in [0, 2**31 - 1] (default 2).
    optimizer : {'sgd', 'adam'}
        SGD with heavy-ball momentum (default) or Adam.
    lr : float, optional
        Step size. Default: ``1/L`` for SGD, with ``L`` the largest curvature
        of the loss (an eigenvalue of ``(2/n) V^T V``); 0.05 for Adam.
    momentum : float
        SGD momentum (default 0.9).
    max_iter : int
        Maximum number of steps, in [1, 2**31 - 1].
    tol : float
        Stop when the gradient's norm falls to ``tol`` times its norm at c = 0,
        ``|(2/n) V^T y|`` (relative: the fit does not depend on the units of y).
    verbose : bool
        Print the loss every ``max_iter // 10`` steps.
    progress : bool
        Show a progress bar over the steps (tqdm when installed, else a plain
        line on stderr).

    Attributes
    ----------
    coef_ : array (T,)
        Coefficients of the monomials ``powers_`` of the raw inputs (for 1-D
        x: of ``1, x, ..., x^degree``).
    powers_ : int array (T, D)
        The exponents of each monomial.
    n_features_in_ : int
        D (1 for a 1-D x).
    n_iter_ : int
        Steps taken.
    loss_curve_ : list of float
        The mean squared error at every step.

    Examples
    --------
    >>> import numpy as np
    >>> from fastinterp.models import PolynomialRegression
    >>> x = np.linspace(0, 1, 10)
    >>> y = 3 * x + np.sin(6 * x) + 1
    >>> model = PolynomialRegression(3).fit(x, y)
    >>> bool(np.allclose(model.coef_, model.closed_form(), atol=1e-6))
    True
    """

    _kind = "regressor"

    def __init__(self, degree=2, optimizer="sgd", lr=None, momentum=0.9, max_iter=20000,
                 tol=1e-12, verbose=False, progress=False):
        self.degree = degree
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.progress = progress

    def _data(self, op, x, y):
        """(X as (n, D) float64, y (n,), whether x was 1-D)."""
        check_int(op, "degree", self.degree, 0)
        check_option(op, "optimizer", self.optimizer, ("sgd", "adam"))
        check_int(op, "max_iter", self.max_iter, 1)
        for name in ("verbose", "progress"):
            check_flag(op, name, getattr(self, name))
        check_real(op, "tol", self.tol)
        if check_real(op, "momentum", self.momentum) >= 1:
            raise ValueError(f"{op}: momentum must be in [0, 1); got {self.momentum!r}.")
        if self.lr is not None:
            check_real(op, "lr", self.lr, positive=True)
        if not hasattr(x, "toarray"):          # sparse input: refused by check_matrix
            x = np.asarray(x)
        univariate = getattr(x, "ndim", None) == 1
        X = check_matrix(op, "x", x[:, None] if univariate else x)
        X = X.astype(np.float64, copy=False)
        y = check_target(op, y, X.shape[0], numeric=True)
        terms = comb(X.shape[1] + int(self.degree), int(self.degree))
        if X.shape[0] < min(terms, int(self.degree) + 1):
            n = X.shape[0]
            raise ValueError(f"{op}: x must have at least degree + 1 = {self.degree + 1} "
                             f"points; got {n} (n_samples = {n}).")
        return X, y, univariate

    def fit(self, x, y):
        """Fit to points ``(x, y)``: x of shape (n,) or (n, D), y of shape (n,); returns self."""
        names = feature_names("PolynomialRegression.fit", x)
        X, y, univariate = self._data("PolynomialRegression.fit", x, y)
        powers = _powers(X.shape[1], int(self.degree))
        mu = column_mean(X)
        s = column_spread(X, mu)
        s[s == 0] = 1.0
        V = _design(centred_scaled(X, mu, s), powers)
        c, it, curve, converged = self._descend(V, y)
        if not np.isfinite(c).all():
            advice = ("lower lr (got {!r}) or leave it None (chosen from the data)".format(self.lr)
                      if self.lr is not None else "the coefficients of this data exceed float64")
            raise ValueError(f"PolynomialRegression.fit: training diverged (the loss or the "
                             f"coefficients became non-finite at step {it}); {advice}.")
        if not converged and self.max_iter:
            convergence_warning(f"PolynomialRegression.fit: stopped at max_iter = "
                                f"{self.max_iter} steps before the gradient fell to tol = "
                                f"{self.tol!r} of its start (mse {curve[-1]:.3e}); raise "
                                f"max_iter, or use closed_form for a high degree.")
        self.n_iter_, self.loss_curve_ = it, curve
        self._x, self._y = X, y
        self._univariate, self._mu, self._s, self._c = univariate, mu, s, c
        self.powers_ = powers
        self.coef_ = _expand(c, powers, mu, s)
        self.n_features_in_ = X.shape[1]
        record_feature_names(self, names)
        return self

    def _descend(self, V, y):
        """Gradient descent on ``mean((V c - y)^2)`` from c = 0; returns c. A y near
        float64's limits is fitted in units of a power of two near its largest entry
        (exact), so that the gradients and the stopping threshold stay finite."""
        unit = _unit_of(y)
        if unit != 1.0:
            c, it, curve, converged = self._descend(V, y / unit)
            return c * unit, it, [v * unit * unit for v in curve], converged
        n = V.shape[0]
        c = np.zeros(V.shape[1])
        if self.optimizer == "sgd":
            lr = self.lr
            if lr is None:       # the largest eigenvalue of V^T V is that of V V^T
                gram = matmul(V.T, V) if V.shape[1] <= n else matmul(V, V.T)
                lr = 1.0 / _largest_eigenvalue((2.0 / n) * gram)
            opt = SGD([c], lr=lr, momentum=self.momentum)
        else:
            opt = Adam([c], lr=0.05 if self.lr is None else self.lr)
        # relative to the gradient at c = 0, so that the fit does not depend on y's units
        threshold = self.tol * _norm((2.0 / n) * _matvec(V.T, y))
        curve = []
        report = max(1, self.max_iter // 10)
        it, converged = 0, False
        with Progress(self.progress, self.max_iter, "PolynomialRegression") as bar:
            for it in range(1, self.max_iter + 1):
                r = _matvec(V, c) - y                       # residual
                grad = (2.0 / n) * _matvec(V.T, r)          # d mean(r^2) / dc
                with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: inf
                    curve.append(float(np.sum(r * r)) / n)
                bar.update(1, mse=curve[-1])
                if not (np.isfinite(curve[-1]) and np.isfinite(c).all()):
                    c[...] = np.nan             # diverged: fit reports it at this step
                    break
                if _norm(grad) <= threshold:
                    converged = True
                    break
                opt.step([grad])
                if self.verbose and it % report == 0:
                    bar.write(f"PolynomialRegression step {it}: mse {curve[-1]:.3e}")
        return c, it, curve, converged

    def predict(self, x):
        """Evaluate the fitted polynomial: at every entry of x (any shape) when fitted
        on a 1-D x, else on the rows of X (M, D), giving (M,)."""
        op = "PolynomialRegression.predict"
        if not hasattr(self, "coef_"):
            raise not_fitted(op)
        check_feature_names(op, self, x)
        if self._univariate:
            x = np.asarray(real_data(op, "x", x), dtype=np.float64)
            if not np.isfinite(x).all():        # (check_matrix's rule for X)
                raise ValueError(f"{op}: x must be finite; got NaN or infinity.")
            return Polynomial(self._c)(centred_scaled(x, self._mu[0], self._s[0]))
        X = check_matrix(op, "X", x, min_rows=0)
        if X.shape[1] != self.n_features_in_:
            raise n_features_error(op, "PolynomialRegression", X.shape[1], self.n_features_in_)
        return matmul(_design(centred_scaled(X, self._mu, self._s), self.powers_), self._c[:, None])[:, 0]

    def score(self, x, y):
        """The coefficient of determination R^2 of :meth:`predict` on ``(x, y)``
        (scikit-learn's convention: 1 for a perfect fit; for a constant y, 1 if
        predicted exactly else 0)."""
        pred = np.asarray(self.predict(x), dtype=np.float64).reshape(-1)
        y = check_target("PolynomialRegression.score", y, pred.shape[0], numeric=True)
        unit = _unit_of(y)          # squares of y beyond 2**+-400 would leave float64
        y, pred = y / unit, pred / unit
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        if ss_tot == 0:
            return 1.0 if ss_res == 0 else 0.0
        return 1.0 - ss_res / ss_tot

    def closed_form(self, x=None, y=None):
        """The least-squares coefficients of the monomials ``powers_`` of the raw inputs
        (increasing powers of x for one variable) by ``numpy.linalg.lstsq``.

        Uses the data given to :meth:`fit` unless ``x`` and ``y`` are passed.
        """
        if x is None and y is None:
            if not hasattr(self, "_x"):
                raise ValueError("PolynomialRegression.closed_form: pass x and y, or call fit first.")
            X, y = self._x, self._y
        else:
            X, y, _ = self._data("PolynomialRegression.closed_form", x, y)
        V = _design(X, _powers(X.shape[1], int(self.degree)))
        return np.linalg.lstsq(V, y, rcond=None)[0]
