"""Neighbourhood Components Analysis trained by hand: analytic gradient, Adam."""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import scipy.linalg

from .. import _registry as registry
from .._config import threads_for
from .._dispatch import begin
from ._common import (Estimator, InvalidTypeError, Progress, centred_scaled,
                      check_feature_names, check_flag, check_float_dtype, check_int,
                      check_matrix, check_real, check_target, column_mean, column_spread,
                      feature_names, n_features_error, not_fitted, record_feature_names,
                      root_mean_square, seed_from)
from .._validate import (check_ndim, check_option, check_shape, float_dtype, is_int, same_dtype,
                         shape_str)
from ..distance import deterministic_matmul as matmul
from ..optim import Adam

__all__ = ["NCA", "nca_loss_grad"]


def _nca_softmax_cpu(w, labels, anchors, loss):
    from .._cpu import models as cpu_models
    cpu_models.nca_softmax_fwd(w, labels, anchors, loss, threads_for(w.size, 1 << 18))


registry.register_builtin("nca_softmax", _nca_softmax_cpu)


def _pairwise_sqdist(x, y):
    import fastinterp
    return fastinterp.pairwise_sqdist(x) if y is None else fastinterp.pairwise_sqdist(x, y)


def _host(op, name, obj):
    """A NumPy view of a small host-side argument (labels, anchors): DLPack or array-like."""
    return begin(op, **{name: obj}).arrays[name] if hasattr(obj, "__dlpack__") else np.asarray(obj)


def _dense_labels(op, labels, n):
    """Labels as int32 class codes (only equality matters to the kernel).

    Integer labels that fit in int32 are used as they are; anything else
    (larger integers, floats, strings, ...) is mapped to dense codes with
    ``np.unique``, so no two classes ever merge by wrapping around.
    """
    y = _host(op, "labels", labels)
    if y.shape != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},) like X's rows; "
                         f"got {shape_str(y.shape)}.")
    if y.dtype.kind in "iub" and (n == 0 or y.dtype.itemsize < 4 or y.dtype == np.int32
                                  or (int(y.min()) >= -2**31 and int(y.max()) < 2**31)):
        return np.ascontiguousarray(y, dtype=np.int32)
    return np.ascontiguousarray(_class_codes(op, "labels", y), dtype=np.int32)


def _class_codes(op, name, y):
    """Dense class codes 0..K-1 of labels ``y``, in ``np.unique``'s order. A NaN label
    (in a float or an object array) is a ``ValueError``: NaN equals no label, itself
    included, and ``np.unique`` merges float NaNs and cannot sort around object ones."""
    nans = int(np.isnan(y).sum()) if y.dtype.kind in "fc" else (
        sum(1 for v in y.ravel() if v != v) if y.dtype.kind == "O" else 0)
    if nans:
        raise ValueError(f"{op}: {name} must not contain NaN labels; got {nans} of them.")
    try:
        return np.unique(y, return_inverse=True)[1].reshape(-1)
    except TypeError:
        raise TypeError(f"{op}: labels must be sortable values (numbers or strings); "
                        f"got dtype {y.dtype}.") from None


def _check_anchors(op, anchors, n):
    """Anchor rows: a 1-D integer array with every entry in [0, n)."""
    a = _host(op, "anchors", anchors)
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):  # [] is fine
        raise TypeError(f"{op}: anchors must be an integer array of row indices; "
                        f"got dtype {a.dtype}.")
    if a.ndim != 1:
        raise ValueError(f"{op}: anchors must have shape (B,); got {shape_str(a.shape)}.")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        bad = int(a.min()) if int(a.min()) < 0 else int(a.max())
        raise ValueError(f"{op}: anchors must be row indices in [0, {n}); got {bad}.")
    return np.ascontiguousarray(a, dtype=np.intp)


def nca_loss_grad(A, X, labels, anchors=None, reg=0.0):
    """NCA's log-probability loss and its gradient with respect to ``A``.

    Parameters
    ----------
    A : array (k, D)
        The linear map; the embedding of a row x is ``A @ x``.
    X : array (N, D), A's dtype
        The (standardised) training points; they are the neighbours.
    labels : array (N,)
        Class labels of X's rows, any values ``np.unique`` can sort
        (integers of any size, floats, strings): only equality matters.
    anchors : integer array (B,), optional
        Rows of X whose loss terms are taken (a minibatch), each in
        ``[0, N)`` (negative indices are refused); default all.
    reg : float
        Weight of the L2 penalty ``reg * ||A||_F^2``, finite and >= 0.

    Returns
    -------
    (loss, grad) : float and array (k, D)
        ``grad`` has A's array type (a torch tensor for torch inputs).
        ``loss = -(1/B) sum_i log p_i + reg ||A||^2`` with
        ``p_i = sum_{j != i, c_j = c_i} p_ij``,
        ``p_ij = exp(-d_ij) / sum_{l != i} exp(-d_il)``,
        ``d_ij = ||A x_i - A x_j||^2``. Anchors with no other point of their
        class contribute 0.

    Notes
    -----
    With ``W_ij = dL_i/dd_ij = q_ij - p_ij`` (``q_ij = p_ij [c_j = c_i] / p_i``)
    and ``z = A x``, ``d d_ij / dA = 2 (z_i - z_j)(x_i - x_j)^T``, so

    ``dL/dA = (2/B) [ -(W Z)^T X_B + (diag(c) Z - W^T Z_B)^T X ] + 2 reg A``

    with ``c = W^T 1`` (the row sums ``W 1`` vanish: both q and p sum to 1),
    four small GEMMs. The distances come
    from :func:`fastinterp.pairwise_sqdist`, the softmax and ``W`` from the
    registered ``nca_softmax`` kernel; every product uses
    :func:`fastinterp.distance.deterministic_matmul`, so the bits do not depend
    on the thread count, the BLAS or the calling thread.

    Special values: any NaN or infinity in ``A`` or ``X`` makes the loss and
    every gradient entry NaN (each point is a neighbour of every anchor).
    Only differences of rows matter, so X is centred first: points far from
    the origin (all at 1e200, say) lose nothing. float32 inputs whose
    squared embedded distances or gradient products would overflow float32
    are computed in float64 and rounded back (the loss is rounded to A's
    dtype, so a loss beyond float32's range is inf); squared distances beyond
    float64's range give NaN.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> loss, grad = nca_loss_grad(np.array([[1.0]]), X, np.array([0, 0, 1, 1]))
    >>> round(loss, 4), grad.shape
    (0.5569, (1, 1))
    """
    op = "nca_loss_grad"
    prepared = begin(op, A=A, X=X)
    A, X = prepared.arrays["A"], prepared.arrays["X"]
    dtype = float_dtype(op, "A", A)
    check_ndim(op, "X", X, 2, "(N, D)")
    n, d = X.shape
    check_shape(op, "A", A, (None, d), f"(k, {d})")
    same_dtype(op, A=A, X=X)
    kernel = registry.lookup("nca_softmax", prepared.backend, dtype)
    labels = _dense_labels(op, labels, n)
    everyone = anchors is None
    anchors = np.arange(n, dtype=np.intp) if everyone else _check_anchors(op, anchors, n)
    reg = check_real(op, "reg", reg)
    loss, grad = _rounded(_loss_grad(A, X, labels, anchors, everyone, reg, kernel, dtype), dtype)
    return loss, prepared.wrap(grad)


def _rounded(loss_grad, dtype):
    """The loss and gradient in A's precision (a loss beyond float32 rounds to inf)."""
    loss, grad = loss_grad
    with np.errstate(over="ignore"):
        return float(dtype.type(loss)), grad.astype(dtype, copy=False)


def _loss_grad(A, X, labels, anchors, everyone, reg, kernel, dtype):
    """The loss and gradient of finite inputs, every product by the deterministic GEMM.

    Everything depends only on differences of rows, so X is centred first
    (points far from the origin, e.g. all at 1e200, lose nothing). Where the
    distances or the gradient's products could overflow ``dtype`` (float32
    data near 1e19 and beyond), the work is done in float64.
    """
    Xc, Z = _centred(A, X, dtype)
    fits = _fits(Xc, Z, A, len(anchors), dtype)
    if not fits and not (np.isfinite(A).all() and np.isfinite(X).all()):
        # NaN/inf anywhere: every distance involving that row is undefined, and
        # with it the softmax of every anchor (the kernel itself skips NaN).
        return float("nan"), np.full(A.shape, np.nan, dtype)
    if not fits and dtype != np.float64:
        kernel64 = registry.lookup("nca_softmax", "cpu", np.float64)
        return _loss_grad(A.astype(np.float64), X.astype(np.float64), labels, anchors,
                          everyone, reg, kernel64, np.dtype(np.float64))
    if everyone:  # one set: exact zeros on the diagonal, symmetric distances
        ZB, XB = Z, Xc
        W = np.ascontiguousarray(_pairwise_sqdist(Z, None), dtype=dtype)
    else:
        ZB, XB = Z[anchors], Xc[anchors]
        W = np.ascontiguousarray(_pairwise_sqdist(ZB, Z), dtype=dtype)
    if not fits and not (np.isfinite(Z).all() and np.isfinite(W).all()):
        # squared distances beyond float64's range: not computable, never a guess
        return float("nan"), np.full(A.shape, np.nan, dtype)
    terms = np.empty(len(anchors), dtype)
    kernel(W, labels, anchors, terms)
    b = max(len(anchors), 1)
    # Row sums of W vanish analytically (sum_j q_ij = sum_j p_ij = 1), so the
    # anchors' role is -W Z; the column sums c ride along as one more GEMM column.
    zb1 = np.empty((ZB.shape[0], ZB.shape[1] + 1), dtype)
    zb1[:, :-1] = ZB
    zb1[:, -1] = 1
    vc = matmul(W.T, zb1)                     # (N, k+1): [W^T Z_B, c]
    g_zb = -matmul(W, Z)                      # (B, k): dL/dz for the anchors' role
    g_z = vc[:, -1:] * Z - vc[:, :-1]         # (N, k): dL/dz for the neighbours' role
    if everyone:
        grad = matmul((g_zb + g_z).T, Xc)
    else:
        grad = matmul(g_zb.T, XB) + matmul(g_z.T, Xc)
    grad *= dtype.type(2.0 / b)
    if reg:
        with np.errstate(over="ignore"):    # a reg beyond float32: inf, reported by fit
            grad += dtype.type(2 * reg) * A
    loss = float(terms.sum(dtype=np.float64) / b)
    if reg:     # (without reg, a huge A adds nothing: 0 * inf would make the loss NaN)
        loss += _penalty(reg, A)
    return loss, grad


def _penalty(reg: float, A) -> float:
    """reg * ||A||^2 in float64; inf only when it really overflows (the squares of
    entries above ~1e154 do overflow, though reg times their sum may not)."""
    with np.errstate(over="ignore"):
        direct = reg * float(np.sum(A.astype(np.float64) ** 2))
    if math.isfinite(direct):
        return direct
    rms = root_mean_square(A)
    return reg * rms * rms * A.size


def _centred(A, X, dtype):
    """``(X - c, (X - c) A^T)`` with c the coordinate-wise median of X's first,
    middle and last rows: cheap, exact zeros for equal rows, and not moved by
    one far-off row."""
    if len(X) == 0:
        return X, matmul(X, A.T)
    a, b, c = X[0], X[len(X) // 2], X[-1]
    centre = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    with np.errstate(over="ignore", invalid="ignore"):   # checked by _fits
        Xc = X - centre
    return Xc, matmul(Xc, A.T)


def _fits(Xc, Z, A, b, dtype):
    """Whether everything is finite and distances (up to ``4 k max|z|^2``) and the
    gradient's GEMM terms (up to ``4 N B max|z| max|x|``, plus ``|A|``) stay well
    inside ``dtype`` (a NaN maximum compares False)."""
    big = float(np.finfo(dtype).max) / 64
    zmax = float(np.max(np.abs(Z), initial=0.0))
    xmax = float(np.max(np.abs(Xc), initial=0.0))
    amax = float(np.max(np.abs(A), initial=0.0))
    k, n = Z.shape[1], Z.shape[0]
    return bool(4.0 * k * zmax * zmax < big and 4.0 * n * max(b, 1) * zmax * xmax < big
                and amax * amax * A.size < big)


_CHUNK = 4096          # rows per block of the passes over X below (bounded temporaries)


def _moments(X):
    """Column means and standard deviations of X in float64, in fixed row blocks:
    no temporary as large as X, and the same bits for any thread count."""
    mean = column_mean(X, _CHUNK)
    return mean, column_spread(X, mean, _CHUNK)


def _standardised(X, mean, scale, dtype):
    """``(X - mean) / scale`` in ``dtype``, formed block by block (no float64 copy of X)."""
    out = np.empty(X.shape, dtype)
    for r in range(0, X.shape[0], _CHUNK):
        out[r:r + _CHUNK] = centred_scaled(X[r:r + _CHUNK], mean, scale)
    return out


def _gram(Xs):
    """``Xs^T Xs`` in float64 by the deterministic GEMM, summed over fixed row blocks."""
    G = np.zeros((Xs.shape[1], Xs.shape[1]))
    for r in range(0, Xs.shape[0], _CHUNK):
        block = Xs[r:r + _CHUNK].astype(np.float64)
        G += matmul(block.T, block)
    return G


def _scales(std, standardize):
    """Per-feature divisors of the standardisation (see :class:`NCA`), from the
    features' standard deviations."""
    if standardize == "global":
        rms = root_mean_square(std)          # finite for spreads at any scale
        return np.full(std.shape, rms if rms > 0 else 1.0)
    if standardize == "feature":
        return np.where(std > 0, std, 1.0)
    live = std[std > 0]
    # 'median': no feature outweighs the typical one by its spread alone (the rings'
    # noise), and weaker ones keep their relative size (digits' border pixels)
    return np.maximum(std, float(np.median(live)) if live.size else 1.0)


#: Fewest Adam steps the automatic epoch count gives a fit (see ``max_iter``).
MIN_STEPS = 300          # a random start
MIN_STEPS_PCA = 150      # the PCA (or identity) start


class NCA(Estimator):
    """Neighbourhood Components Analysis (Goldberger et al.), log-probability loss.

    Learns a linear map ``A`` (n_components x n_features) so that a stochastic
    nearest-neighbour classifier in the embedding ``A x`` is right as often as
    possible: it minimises ``-mean_i log p_i + reg ||A||^2`` (see
    :func:`nca_loss_grad`) by minibatch Adam with the analytic gradient and a
    cosine learning-rate schedule (``lr`` at the first epoch, decaying
    towards 0 at the last).

    A scikit-learn transformer: ``get_params``/``set_params``, ``clone``,
    ``Pipeline`` and ``GridSearchCV`` work, and it passes
    ``sklearn.utils.estimator_checks.check_estimator`` (scikit-learn is not
    imported by ``fastinterp.models``; see :class:`fastinterp.models._common.Estimator`).

    :meth:`fit` and :meth:`transform` give the same bits for any
    ``set_num_threads``, BLAS thread count and calling thread (every product
    uses fastinterp's deterministic GEMM, and no process-wide setting such as
    the BLAS thread count is changed). The one exception is the PCA start: the
    eigenvectors of the (deterministic) Gram matrix come from LAPACK, whose
    blocked code may use BLAS threads for many features (bits seen equal for 1
    and 2 OpenBLAS threads up to 200 features, not at 256); ``init='identity'``
    or ``'random'`` avoid LAPACK altogether.

    Parameters
    ----------
    n_components : int, optional
        Output dimension; default the number of features.
    init : {'pca', 'identity', 'random'}
        Start from the leading principal axes of the standardised data
        (scaled so that the embedded coordinates have unit variance on
        average), the first rows of the identity, or a seeded Gaussian
        matrix scaled by ``1/sqrt(n_features)``.
    max_iter : int in [0, 2**31 - 1], or None
        Number of epochs (passes over the shuffled training set). None
        (default): 12 epochs, or more on small training sets so that the fit
        takes at least 150 Adam steps from the PCA or identity start
        (``MIN_STEPS_PCA``) and 300 from a random start (``MIN_STEPS``).
    lr : float
        Initial step size in the embedding's units (default 0.05): Adam's
        learning rate is ``lr / sqrt(sum of the standardised features'
        variances)`` (about ``lr / ||x||``), since moving every entry of A
        by ``d`` moves ``A x`` by about ``d ||x||``; the same ``lr`` then
        suits 3 features or 784.
    batch_size : int
        Anchors per step (default 256).
    reg : float
        L2 penalty on A (default 0.01); it keeps the softmax from becoming
        a hard 1-NN rule on the training set, which generalises worse.
    random_state : int, numpy Generator or None
        Seeds the minibatch order and the random init (default 0: fits are
        reproducible).
    verbose : bool
        Print one line per epoch (loss, time); off by default.
    dtype : float32 or float64
        Precision of the training and of :meth:`transform`'s output (default float32).
    standardize : {'median', 'feature', 'global'}
        Each feature is centred and divided by: ``'median'`` (default) the
        larger of its standard deviation and the median feature's, so no
        feature outweighs the typical one by its spread alone while weaker
        (near-constant) features keep their relative size instead of being
        blown up into noise; ``'feature'`` its own standard deviation (a
        z-score; constant features get 1); ``'global'`` one common scale
        (the root-mean-square feature deviation), which keeps all relative
        sizes, so a feature of large variance dominates the start.
    neighbors : {'batch', 'all'}
        Whose neighbourhoods each step sees: ``'batch'`` (default) takes the
        minibatch as a small NCA problem of its own (cost per epoch
        ``N * batch_size``); ``'all'`` lets every anchor of the minibatch see
        every training point (cost per epoch ``N**2``).
    progress : bool
        Show a progress bar over the Adam steps (tqdm when installed, else a
        plain line on stderr); independent of ``verbose``.
    seed : int
        Deprecated alias of ``random_state`` (a FutureWarning).

    Attributes
    ----------
    components_ : array (n_components, n_features)
        The learnt A, acting on standardised inputs.
    mean_, scale_ : arrays (n_features,)
        The standardisation ``(x - mean_) / scale_`` applied before A.
    n_features_in_ : int
        Number of features seen by :meth:`fit`.
    loss_curve_ : list of float
        Mean minibatch loss per epoch.
    n_iter_ : int
        Epochs run.

    Notes
    -----
    Why these defaults: the softmax of NCA has a fixed unit temperature, so
    the scale of the embedding is learnt along with its directions, and
    gradient steps on A are not invariant to the units of the features. On
    the rings of the NCA paper (five concentric circles plus a third feature
    of Gaussian noise with standard deviation 10), one common scale keeps the
    noise 4x larger than each ring coordinate, so the PCA start puts a whole
    row of A on the noise axis. The gradient of a row is
    ``sum_ij W_ij (z_i - z_j)(x_i - x_j)`` with ``z`` that row's own embedded
    coordinate (pure noise here, and ``W`` even in it), so it has no component
    towards the missing ring direction: the row only shrinks towards the
    stationary zero row, leaving a one-dimensional shadow of the rings (5-NN
    accuracy about 0.5). ``'median'`` brings the noise feature down to the
    rings' spread, so no row starts on it. The budget is counted in steps, not
    epochs, since each Adam step moves A about as far whatever the data size:
    from the PCA start the rings need about 120 steps (12 epochs of 1,750
    points are 84 steps and suffice; 12 epochs of 700 points leave 0.45), a
    random start about 300 (it can sit on early plateaus). And
    ``lr`` in the embedding's units keeps 784 features from taking 12x larger
    steps in the embedding than 64 (with Adam's fixed per-entry step, a
    60,000 x 784 fit diverged).

    Examples
    --------
    >>> import numpy as np
    >>> from fastinterp.models import NCA
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))]
    >>> y = np.r_[np.zeros(20, int), np.ones(20, int)]
    >>> nca = NCA(2, max_iter=5, random_state=0).fit(X, y)
    >>> nca.transform(X).shape
    (40, 2)
    """

    _kind = "transformer"

    def __init__(self, n_components=None, init="pca", max_iter=None, lr=0.05,
                 batch_size=256, reg=0.01, random_state=0, verbose=False, dtype=np.float32,
                 standardize="median", neighbors="batch", progress=False, seed="deprecated"):
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.lr = lr
        self.batch_size = batch_size
        self.reg = reg
        self.random_state = random_state
        self.verbose = verbose
        self.dtype = dtype
        self.standardize = standardize
        self.neighbors = neighbors
        self.progress = progress
        self.seed = seed

    def _check(self, X, y):
        op = "NCA.fit"
        check_option(op, "init", self.init, ("pca", "identity", "random"))
        check_option(op, "standardize", self.standardize, ("median", "feature", "global"))
        check_option(op, "neighbors", self.neighbors, ("batch", "all"))
        X = check_matrix(op, "X", X, min_rows=2)
        y = check_target(op, y, X.shape[0], numeric=False)
        _class_codes(op, "y", y)                # (its errors before any other work)
        dtype = check_float_dtype(op, "dtype", self.dtype)
        d = X.shape[1]
        k = d if self.n_components is None else self.n_components
        if not is_int(k) or not 1 <= k <= d:
            error = ValueError if is_int(k) else InvalidTypeError
            raise error(f"{op}: n_components must be an int in [1, {d}]; got {k!r}.")
        check_int(op, "max_iter", self.max_iter, 0, none_ok=True)
        check_int(op, "batch_size", self.batch_size, 1)
        if self.neighbors == "batch" and self.batch_size < 3:
            raise ValueError(f"{op}: batch_size must be at least 3 with neighbors='batch' (a "
                             f"point's only neighbour in a batch of 2 is picked for sure: the "
                             f"loss is constant, and the penalty alone shrinks the map to 0); "
                             f"got {self.batch_size}.")
        for name in ("lr", "reg"):
            check_real(op, name, getattr(self, name))
        for name in ("verbose", "progress"):
            check_flag(op, name, getattr(self, name))
        return X, y, dtype, int(k)

    def _init_A(self, Xs, k, rng, dtype):
        d = Xs.shape[1]
        if self.init == "identity":
            return np.eye(k, d, dtype=dtype)
        if self.init == "random":
            return (rng.standard_normal((k, d)) / np.sqrt(d)).astype(dtype)
        # principal axes of the standardised data, scaled so that the embedded
        # coordinates have unit variance on average (a moderate softmax at start)
        # (eigenvectors of the Gram matrix, formed by the deterministic GEMM, with
        # a fixed sign: the largest entry of each axis positive)
        # (only the k leading pairs are computed: a fraction of the full solve for 784 pixels)
        G = _gram(Xs)
        ev, vecs = scipy.linalg.eigh(G, driver="evr", subset_by_index=[d - k, d - 1])
        vt = vecs[:, ::-1].T
        vt[:, np.diag(G) == 0] = 0     # features constant in training: LAPACK leaves ~1e-19
        vt = vt * np.where(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)] < 0, -1.0, 1.0)[:, None]
        var = float(np.sum(np.clip(ev, 0, None))) / Xs.shape[0]
        return np.ascontiguousarray(vt * np.sqrt(k / var) if var > 0 else vt, dtype=dtype)

    def _epochs(self, n):
        if self.max_iter is not None:
            return int(self.max_iter)
        floor = MIN_STEPS if self.init == "random" else MIN_STEPS_PCA
        steps = math.ceil(n / self.batch_size)
        return max(12, math.ceil(floor / steps))

    def fit(self, X, y):
        """Learn the map from data X (N, D) and class labels y (N,); returns self."""
        rng = seed_from("NCA", self.random_state, self.seed)
        names = feature_names("NCA.fit", X)
        X, y, dtype, k = self._check(X, y)
        labels = _class_codes("NCA.fit", "y", y).astype(np.int32)
        mean, std = _moments(X)
        scale = _scales(std, self.standardize)
        Xs = _standardised(X, mean, scale, dtype)
        A = self._init_A(Xs, k, rng, dtype)
        epochs = self._epochs(Xs.shape[0])
        # rms norm of the standardised rows (each feature's variance is (std / scale)^2)
        row = float(np.sqrt(np.sum((std / scale) ** 2)))
        curve = self._train(A, Xs, labels, epochs, rng, dtype, row)
        if not np.isfinite(A).all():
            raise ValueError(f"NCA.fit: training diverged (the map became non-finite after "
                             f"{epochs} epochs); lower lr (got {self.lr}) or reg (got "
                             f"{self.reg}).")
        self.mean_, self.scale_, self.components_ = mean, scale, A
        self.n_features_in_ = X.shape[1]
        record_feature_names(self, names)
        self.loss_curve_, self.n_iter_ = curve, epochs
        return self

    def _train(self, A, Xs, labels, epochs, rng, dtype, row):
        """Minibatch Adam on A in place (``row``: the rms norm of Xs's rows); returns
        the mean loss of every epoch."""
        # lr is a step of the embedded coordinates: moving every entry of A by d moves
        # A x by about d ||x||, so Adam's step is lr / rms ||x|| (the same step in the
        # embedding for 3 features or 784)
        base = self.lr / row if row > 0 else self.lr
        opt = Adam([A], lr=base)
        first = base / (1 - opt.param_groups[0]["betas"][0])     # Adam's first step size
        if first > float(np.finfo(dtype).max):
            raise ValueError(f"NCA.fit: lr is too large for a {np.dtype(dtype).name} model: "
                             f"its first Adam step, lr / (the rms norm of the standardised "
                             f"rows) / (1 - beta1) = {first:.3g}, exceeds "
                             f"{np.dtype(dtype).name}'s range; lower lr (got {self.lr!r}).")
        n = Xs.shape[0]
        # the inputs are checked once here: each step goes straight to the computation
        # of nca_loss_grad (same kernel, same bits)
        kernel = registry.lookup("nca_softmax", "cpu", dtype)
        reg = float(self.reg)
        curve = []
        start = time.perf_counter()
        steps = math.ceil(n / self.batch_size)
        with Progress(self.progress, epochs * steps, "NCA") as bar:
            for epoch in range(epochs):
                # cosine schedule: lr at the first epoch, decaying towards 0
                opt.param_groups[0]["lr"] = base * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
                order = rng.permutation(n)
                total = 0.0
                for b0 in range(0, n, self.batch_size):
                    batch = np.sort(order[b0:b0 + self.batch_size])
                    if self.neighbors == "batch":
                        args = (Xs[batch], labels[batch], np.arange(len(batch)), True)
                    else:
                        args = (Xs, labels, batch, False)
                    loss, grad = _rounded(_loss_grad(A, *args, reg, kernel, dtype), dtype)
                    opt.step([grad])
                    total += loss * len(batch)
                    bar.update(1, epoch=epoch + 1, loss=loss)
                curve.append(total / n)
                if self.verbose:
                    bar.write(f"NCA epoch {epoch + 1}/{epochs}: loss {total / n:.4f} "
                          f"({time.perf_counter() - start:.2f} s)")
        return curve

    def transform(self, X):
        """Embed X (M, D): ``((X - mean_) / scale_) @ components_.T`` -> (M, n_components)."""
        if not hasattr(self, "components_"):
            raise not_fitted("NCA.transform")
        given = X
        check_feature_names("NCA.transform", self, X)
        X = check_matrix("NCA.transform", "X", X, min_rows=0)
        d = self.components_.shape[1]
        if X.shape[1] != d:
            raise n_features_error("NCA.transform", "NCA", X.shape[1], d)
        Xs = _standardised(X, self.mean_, self.scale_, self.components_.dtype)
        Z = matmul(Xs, self.components_.T)
        if Z.dtype == np.float32 and not np.isfinite(Z).all():
            Z = self._widened_rows(X, Z)
        if self._output() == "pandas":
            import pandas as pd
            return pd.DataFrame(Z, columns=list(self.get_feature_names_out()),
                                index=getattr(given, "index", None))
        return Z

    def _output(self) -> str:
        """The container :meth:`transform` returns: this model's :meth:`set_output`
        setting, else scikit-learn's global ``transform_output`` (when scikit-learn is
        imported; ``sklearn.set_config`` or ``config_context``)."""
        own = getattr(self, "_sklearn_output_config", {}).get("transform")
        if own is not None:
            return own
        sklearn = sys.modules.get("sklearn")
        config = sklearn.get_config().get("transform_output", "default") if sklearn else "default"
        if config not in ("default", "pandas"):
            raise ValueError(f"NCA.transform: scikit-learn's transform_output must be "
                             f"'default' or 'pandas' for NCA; got {config!r}.")
        return config

    def set_output(self, *, transform=None):
        """scikit-learn's output configuration (``Pipeline.set_output`` calls it):
        ``transform="pandas"`` makes :meth:`transform` return a DataFrame with the
        columns of :meth:`get_feature_names_out` (and X's index when X is a DataFrame),
        ``"default"`` NumPy arrays; None leaves the setting as it is. Returns self.

        >>> NCA(2).set_output(transform="default")
        NCA(n_components=2)
        """
        if transform is None:
            return self
        check_option("NCA.set_output", "transform", transform, ("default", "pandas"))
        if transform == "pandas":
            try:
                import pandas  # noqa: F401
            except ImportError:
                raise ImportError("NCA.set_output: transform='pandas' needs pandas "
                                  "(pip install pandas).") from None
        self._sklearn_output_config = {"transform": transform}
        return self

    def _widened_rows(self, X, Z):
        """A float32 model's embedding of the rows of a finite X whose standardised values
        or embedding exceed float32 (inf - inf gave NaN): embedded in float64, rounded."""
        rows = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        wide = matmul(centred_scaled(X[rows].astype(np.float64), self.mean_, self.scale_),
                      self.components_.T.astype(np.float64))
        with np.errstate(over="ignore"):       # beyond float32: inf, as the dtype holds it
            Z[rows] = wide
        return Z

    def fit_transform(self, X, y):
        """``fit(X, y).transform(X)``."""
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None):
        """Names of the embedding's columns, ``nca0``, ``nca1``, ... (scikit-learn's
        convention for transformers that make new features, so that
        ``Pipeline.get_feature_names_out`` works).

        ``input_features``, when given, must hold ``n_features_in_`` names (they do
        not enter the output names). Returns an object array of ``n_components``.

        >>> import numpy as np
        >>> X, y = np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
        >>> NCA(2, max_iter=1).fit(X, y).get_feature_names_out().tolist()
        ['nca0', 'nca1']
        """
        op = "NCA.get_feature_names_out"
        if not hasattr(self, "components_"):
            raise not_fitted(op)
        if input_features is not None and len(input_features) != self.n_features_in_:
            raise ValueError(f"{op}: input_features must hold n_features_in_ = "
                             f"{self.n_features_in_} names; got {len(input_features)}.")
        fitted = getattr(self, "feature_names_in_", None)
        if input_features is not None and fitted is not None and \
                list(map(str, input_features)) != list(fitted):
            raise ValueError(f"{op}: input_features is not equal to feature_names_in_; "
                             f"got {list(input_features)}, fitted on {list(fitted)}.")
        k = self.components_.shape[0]
        return np.asarray([f"nca{i}" for i in range(k)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.transformer_tags.preserves_dtype = [
                check_float_dtype("NCA", "dtype", self.dtype).name]
        except InvalidTypeError:        # an invalid dtype: reported by fit
            tags.transformer_tags.preserves_dtype = []
        return tags
