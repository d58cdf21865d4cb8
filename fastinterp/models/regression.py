"""Polynomial least squares by gradient descent with the optimizer layer."""
from __future__ import annotations

import numpy as np
from numpy.polynomial import Polynomial

from ._common import not_fitted
from ..distance import deterministic_matmul as matmul
from .._validate import check_option
from ..optim import SGD, Adam

__all__ = ["PolynomialRegression"]


# Products by fastinterp's GEMM and sums by NumPy's fixed-order reductions (not BLAS),
# so that a fit has the same bits for any thread count and calling thread.
def _matvec(m, v):
    return matmul(m, v[:, None])[:, 0]


def _norm(v):
    return float(np.sqrt(np.sum(v * v)))


class PolynomialRegression:
    """Fit ``y ~ c0 + c1 x + ... + c_d x^d`` by gradient descent on the mean squared error.

    The classic manual-gradient example: the residual ``r = V c - y`` of the
    Vandermonde matrix ``V`` gives the gradient ``(2/n) V^T r``, and an
    optimizer from :mod:`fastinterp.optim` steps ``c``. To keep gradient
    descent well conditioned, ``x`` is standardised first (``t = (x - mu)/s``),
    the fit runs on powers of ``t``, and the coefficients are converted back
    to powers of ``x`` at the end (exactly, by polynomial composition).
    :meth:`closed_form` gives the least-squares solution for comparison.

    :meth:`fit` gives the same bits for any ``set_num_threads``, BLAS thread
    count and calling thread (its products use fastinterp's deterministic GEMM,
    not the process's BLAS); :meth:`closed_form` calls LAPACK and need not.

    Parameters
    ----------
    degree : int
        Polynomial degree, >= 0.
    optimizer : {'sgd', 'adam'}
        SGD with heavy-ball momentum (default) or Adam.
    lr : float, optional
        Step size. Default: ``1/L`` for SGD, with ``L`` the largest curvature
        of the loss (an eigenvalue of ``(2/n) V^T V``); 0.05 for Adam.
    momentum : float
        SGD momentum (default 0.9).
    max_iter : int
        Maximum number of steps.
    tol : float
        Stop when the gradient's norm falls below ``tol`` times ``1 + |(2/n) V^T y|``.
    verbose : bool
        Print the loss every ``max_iter // 10`` steps.

    Attributes
    ----------
    coef_ : array (degree + 1,)
        Coefficients of ``1, x, ..., x^degree``.
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

    def __init__(self, degree, optimizer="sgd", lr=None, momentum=0.9, max_iter=20000,
                 tol=1e-12, verbose=False):
        self.degree = degree
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose

    def _data(self, op, x, y):
        if isinstance(self.degree, bool) or not isinstance(self.degree, (int, np.integer)) \
                or self.degree < 0:
            raise ValueError(f"{op}: degree must be an int >= 0; got {self.degree!r}.")
        check_option(op, "optimizer", self.optimizer, ("sgd", "adam"))
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"{op}: x must have shape (n,); got {x.shape}.")
        if y.shape != x.shape:
            raise ValueError(f"{op}: y must have the shape of x {x.shape}; got {y.shape}.")
        if x.size < self.degree + 1:
            raise ValueError(f"{op}: x must have at least degree + 1 = {self.degree + 1} "
                             f"points; got {x.size}.")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(f"{op}: x and y must be finite; got NaN or infinity.")
        return x, y

    def fit(self, x, y):
        """Fit to points ``(x, y)``, both of shape (n,); returns self."""
        x, y = self._data("PolynomialRegression.fit", x, y)
        self._x, self._y = x, y
        mu = x.mean()
        s = x.std() or 1.0
        V = np.vander((x - mu) / s, self.degree + 1, increasing=True)
        n = x.size
        c = np.zeros(self.degree + 1)
        if self.optimizer == "sgd":
            lr = self.lr
            if lr is None:
                lr = 1.0 / np.linalg.eigvalsh((2.0 / n) * matmul(V.T, V))[-1]
            opt = SGD([c], lr=lr, momentum=self.momentum)
        else:
            opt = Adam([c], lr=0.05 if self.lr is None else self.lr)
        threshold = self.tol * (1 + _norm((2.0 / n) * _matvec(V.T, y)))
        self.loss_curve_ = []
        report = max(1, self.max_iter // 10)
        it = 0
        for it in range(1, self.max_iter + 1):
            r = _matvec(V, c) - y                       # residual
            grad = (2.0 / n) * _matvec(V.T, r)          # d mean(r^2) / dc
            self.loss_curve_.append(float(np.sum(r * r)) / n)
            if _norm(grad) <= threshold:
                break
            opt.step([grad])
            if self.verbose and it % report == 0:
                print(f"PolynomialRegression step {it}: mse {self.loss_curve_[-1]:.3e}")
        self.n_iter_ = it
        # c are coefficients in t = (x - mu)/s; compose to get them in x.
        poly = Polynomial(c)(Polynomial([-mu / s, 1.0 / s]))
        self.coef_ = np.zeros(self.degree + 1)
        self.coef_[:poly.coef.size] = poly.coef
        return self

    def predict(self, x):
        """Evaluate the fitted polynomial at ``x`` (any shape)."""
        if not hasattr(self, "coef_"):
            raise not_fitted("PolynomialRegression.predict")
        return Polynomial(self.coef_)(np.asarray(x, dtype=np.float64))

    def closed_form(self, x=None, y=None):
        """The least-squares coefficients (increasing powers of x) by ``numpy.linalg.lstsq``.

        Uses the data given to :meth:`fit` unless ``x`` and ``y`` are passed.
        """
        if x is None and y is None:
            if not hasattr(self, "_x"):
                raise ValueError("PolynomialRegression.closed_form: pass x and y, or call fit first.")
            x, y = self._x, self._y
        x, y = self._data("PolynomialRegression.closed_form", x, y)
        V = np.vander(x, self.degree + 1, increasing=True)
        return np.linalg.lstsq(V, y, rcond=None)[0]
