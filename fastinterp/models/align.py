"""Affine image alignment trained by hand through grid_sample's analytic gradients."""
from __future__ import annotations

import numpy as np

from ._common import (Estimator, Progress, check_flag, check_int, check_real, column_mean,
                      column_spread,
                      not_fitted, real_data, seed_from)
from .._validate import int_sizes
from ..sample import affine_grid, affine_grid_backward, grid_sample, grid_sample_backward

__all__ = ["AffineAlign"]

_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class AffineAlign(Estimator):
    """Recover the 2x3 affine matrix that warps a moving image onto a fixed image.

    Minimises the mean squared difference ``mean((warp(moving, theta) - fixed)**2)``
    where ``warp(m, theta) = grid_sample(m, affine_grid(theta, fixed.shape))``,
    by gradient descent with momentum. The gradient with respect to ``theta``
    comes from :func:`fastinterp.grid_sample_backward` (grid gradient only)
    chained through :func:`fastinterp.affine_grid_backward`: no autograd. The
    update is a small built-in loop (heavy-ball momentum, step halved
    whenever the loss goes up), not a general optimizer.

    Parameters
    ----------
    lr : float
        Step size. The images are scaled to unit variance inside ``fit``, so
        the default suits most inputs.
    momentum : float
        Heavy-ball momentum in [0, 1).
    max_iter : int
        Maximum number of steps, in [0, 2**31 - 1] (0 keeps ``theta0``).
    tol : float
        Stop when the step (max |delta theta|) falls below ``tol``.
    max_step : float
        Largest change of any entry of theta in one step (a trust region: a
        step that raises the loss is undone and lr halved).
    mode, padding_mode, align_corners
        Passed to grid_sample / affine_grid (bilinear, border, False by default).
    sample_fraction : float in (0, 1]
        Fraction of the fixed image's rows used per step (a fresh random
        subset each step, drawn from ``random_state``); 1 uses every pixel.
    random_state : int, numpy Generator or None
        Seed of the row sampling (default 0: fits are reproducible).
    verbose : bool
        Print the loss every ``log_every`` steps (default False, as the other models).
    log_every : int
        Logging period in steps.
    progress : bool
        Show a progress bar over the steps (tqdm when installed, else a plain
        line on stderr); independent of ``verbose``.
    seed : int
        Deprecated alias of ``random_state`` (a FutureWarning).

    Notes
    -----
    It follows scikit-learn's estimator protocol where it applies:
    ``get_params``/``set_params`` and :func:`sklearn.base.clone` work, and
    :meth:`transform` before :meth:`fit` raises ``NotFittedError``. It is not
    a scikit-learn transformer of sample matrices (``fit`` takes two images),
    so ``check_estimator`` does not apply; unlike scikit-learn's convention
    the hyper-parameters are also checked at construction.

    Attributes
    ----------
    theta_ : ndarray (2, 3)
        The fitted matrix: ``fixed ~ grid_sample(moving, affine_grid(theta_[None], ...))``.
    loss_history_ : list of float
        The loss at every step (on the rows used by that step).
    n_iter_ : int
        Steps taken.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> from fastinterp.models.align import AffineAlign
    >>> yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    >>> moving = np.exp(-((xx - 0.2)**2 + (yy + 0.1)**2) / 0.1)[None]
    >>> true = np.array([[[1.0, 0.0, 0.1], [0.0, 1.0, -0.05]]])
    >>> fixed = fi.grid_sample(moving[None], fi.affine_grid(true, (1, 1, 48, 48)),
    ...                        padding_mode="border")[0]
    >>> fit = AffineAlign(verbose=False).fit(moving, fixed)
    >>> bool(np.abs(fit.theta_ - true[0]).max() < 1e-2)
    True
    """

    def __init__(self, lr=0.5, momentum=0.9, max_iter=500, tol=1e-7, max_step=0.02,
                 mode="bilinear",
                 padding_mode="border", align_corners=False, sample_fraction=1.0,
                 random_state=0, verbose=False, log_every=50, progress=False, seed="deprecated"):
        self.lr, self.momentum, self.max_iter, self.tol = lr, momentum, max_iter, tol
        self.max_step = max_step
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners
        self.sample_fraction, self.random_state, self.seed = sample_fraction, random_state, seed
        self.verbose, self.log_every, self.progress = verbose, log_every, progress
        self._check_params()

    def _check_params(self):
        """Validate the hyper-parameters (at construction and again at fit)."""
        op = "AffineAlign"
        if not 0 < check_real(op, "sample_fraction", self.sample_fraction, positive=True) <= 1:
            raise ValueError(f"{op}: sample_fraction must be in (0, 1]; got "
                             f"{self.sample_fraction!r}.")
        if check_real(op, "momentum", self.momentum) >= 1:
            raise ValueError(f"{op}: momentum must be in [0, 1); got {self.momentum!r}.")
        check_real(op, "lr", self.lr, positive=True)
        check_real(op, "tol", self.tol)
        check_real(op, "max_step", self.max_step, positive=True)
        check_int(op, "max_iter", self.max_iter, 0)
        check_int(op, "log_every", self.log_every, 1)
        for name in ("verbose", "progress"):
            check_flag(op, name, getattr(self, name))

    @staticmethod
    def _as_image(name, img, op="AffineAlign"):
        """``img`` (H, W) or (C, H, W) as a (1, C, H, W) float32/float64 array (other
        real dtypes as float64); an empty image is refused."""
        a = real_data(op, name, img)
        if a.ndim not in (2, 3):
            raise ValueError(f"{op}: {name} must have shape (H, W) or (C, H, W); "
                             f"got {a.shape}.")
        if a.size == 0:
            raise ValueError(f"{op}: {name} must have at least one channel and one pixel; "
                             f"got shape {a.shape}.")
        if a.ndim == 2:
            a = a[None]
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        return np.ascontiguousarray(a[None])

    @staticmethod
    def _check_finite(name, img):
        """fit's images must be finite: a NaN or inf pixel would give a NaN theta_."""
        if not np.isfinite(img).all():
            raise ValueError(f"AffineAlign: {name} must be finite; got "
                             f"{int(np.sum(~np.isfinite(img)))} NaN or inf pixel(s).")

    def _loss_grad(self, theta, moving, fixed, rows):
        size = fixed.shape
        grid = affine_grid(theta[None], size, align_corners=self.align_corners)
        sub = grid[:, rows] if rows is not None else grid
        target = fixed[:, :, rows] if rows is not None else fixed
        warped = grid_sample(moving, sub, self.mode, self.padding_mode, self.align_corners)
        diff = warped - target
        with np.errstate(over="ignore"):          # an overflow: _check_overflow says so
            loss = float(np.mean(diff.astype(np.float64) ** 2))
        go = (2.0 / diff.size) * diff
        _, g_sub = grid_sample_backward(go, moving, sub, self.mode, self.padding_mode,
                                        self.align_corners, needs_input_grad=False)
        if rows is not None:
            g_grid = np.zeros_like(grid)
            g_grid[:, rows] = g_sub
        else:
            g_grid = g_sub
        g_theta = affine_grid_backward(g_grid, size, align_corners=self.align_corners)[0]
        return loss, g_theta.astype(np.float64)

    def fit(self, moving, fixed, theta0=None):
        """Fit ``theta_`` so that the warped ``moving`` matches ``fixed``.

        Parameters
        ----------
        moving, fixed : arrays (H, W) or (C, H, W)
            Images with the same channel count (sizes may differ).
        theta0 : array (2, 3), optional
            Starting matrix (default: the identity).

        Returns
        -------
        self
        """
        self._check_params()
        m = self._as_image("moving", moving)
        f = self._as_image("fixed", fixed)
        self._check_finite("moving", m)
        self._check_finite("fixed", f)
        if m.shape[1] != f.shape[1]:
            raise ValueError(f"AffineAlign: moving and fixed must have the same channel count; "
                             f"got {m.shape[1]} and {f.shape[1]}.")
        theta = _check_theta0(theta0)
        # unit variance (shared scale) so lr does not depend on the image's contrast; each
        # image is scaled from its own dtype, then both are taken to their common one
        flat = f.reshape(-1, 1)
        scale = float(column_spread(flat, column_mean(flat))[0]) or 1.0   # at any scale
        dtype = np.result_type(m.dtype, f.dtype)
        m, f = _scaled(m, scale, dtype), _scaled(f, scale, dtype)
        rng = seed_from("AffineAlign", self.random_state, self.seed)
        n_rows = max(1, int(round(self.sample_fraction * f.shape[2])))
        with Progress(self.progress, self.max_iter, "AffineAlign") as bar:
            it = self._descend(theta, m, f, rng, n_rows, bar)
        self.n_iter_ = it
        self.theta_ = theta
        return self

    def _descend(self, theta, m, f, rng, n_rows, bar):
        """Heavy-ball descent on theta in place; returns the number of steps taken."""
        H = f.shape[2]
        velocity = np.zeros_like(theta)
        lr, prev, prev_theta = self.lr, np.inf, theta.copy()
        self.loss_history_ = []
        it = 0
        for it in range(1, self.max_iter + 1):
            rows = None if n_rows == H else np.sort(rng.choice(H, n_rows, replace=False))
            loss, grad = self._loss_grad(theta.astype(m.dtype), m, f, rows)
            _check_overflow(loss, grad, m, it)
            self.loss_history_.append(loss)
            bar.update(1, loss=loss)
            # overshoot (sampled rows: beyond their noise): undo the step, halve lr
            if loss > prev * (1.0 if rows is None else 1.5):
                theta[:] = prev_theta
                lr *= 0.5
                velocity[:] = 0
                continue
            prev, prev_theta = loss, theta.copy()
            velocity = self.momentum * velocity - lr * grad
            step = np.abs(velocity).max()
            if step > self.max_step:                 # trust region on theta's entries
                velocity *= self.max_step / step
            theta += velocity
            if self.verbose and (it % self.log_every == 0 or it == 1):
                bar.write(f"AffineAlign step {it:4d}: loss {loss:.3e}")
            if np.abs(velocity).max() < self.tol:
                break
        return it

    def transform(self, moving, size=None):
        """Warp ``moving`` with the fitted matrix to ``size`` (H, W) (default: moving's).

        Returns an image of moving's form: (H, W) for an (H, W) image, (C, H, W) for
        a (C, H, W) one.
        """
        if not hasattr(self, "theta_"):
            raise not_fitted("AffineAlign.transform")
        m = self._as_image("moving", moving, "AffineAlign.transform")
        h, w = m.shape[2:] if size is None else int_sizes("AffineAlign.transform", "size", size,
                                                           "(H, W)", (2,), lo=1)
        grid = affine_grid(self.theta_[None].astype(m.dtype), (1, m.shape[1], h, w),
                           align_corners=self.align_corners)
        out = grid_sample(m, grid, self.mode, self.padding_mode, self.align_corners)[0]
        return out[0] if np.ndim(moving) == 2 else out


def _check_theta0(theta0) -> np.ndarray:
    """fit's starting matrix as a new float64 (2, 3) array: real (else
    InvalidTypeError), of that shape and finite (else ValueError); None: the identity."""
    if theta0 is None:
        return _IDENTITY.copy()
    theta = real_data("AffineAlign", "theta0", theta0)
    if theta.shape != (2, 3):
        raise ValueError(f"AffineAlign: theta0 must have shape (2, 3); got {theta.shape}.")
    theta = theta.astype(np.float64)              # a copy: fit updates it in place
    bad = int(np.sum(~np.isfinite(theta)))
    if bad:
        raise ValueError(f"AffineAlign: theta0 must be finite; got {bad} NaN or inf "
                         f"entr{'y' if bad == 1 else 'ies'}.")
    return theta


def _scaled(img: np.ndarray, scale: float, dtype: np.dtype) -> np.ndarray:
    """``img / scale`` as ``dtype``. Divided in ``img``'s own dtype when ``scale`` is a
    normal number there, else in float64, so neither the scale nor the image overflows
    a narrower dtype before it is brought to unit variance."""
    info = np.finfo(img.dtype)
    with np.errstate(over="ignore"):     # moving far above fixed: _check_overflow says so
        if img.dtype == dtype and info.tiny <= scale <= info.max:
            return img / img.dtype.type(scale)
        return (img.astype(np.float64) / scale).astype(dtype)


def _check_overflow(loss: float, grad: np.ndarray, m: np.ndarray, step: int) -> None:
    """The images and theta are finite, so a non-finite loss or gradient means that the
    moving image, at the fixed image's unit variance, is too large to square."""
    if not (np.isfinite(loss) and np.isfinite(grad).all()):
        with np.errstate(over="ignore", invalid="ignore"):
            top = float(np.max(np.abs(m)))
        raise ValueError(f"AffineAlign: moving and fixed must have comparable scales; with "
                         f"fixed scaled to unit variance, moving reaches {top:.3g} and the "
                         f"squared difference overflows {m.dtype} (step {step}).")
