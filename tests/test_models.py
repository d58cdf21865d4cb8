"""fastinterp.models: NCA (kernel, analytic gradient, digits) and PolynomialRegression."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastinterp as fi
from fastinterp import _registry as registry
from fastinterp.models import NCA, PolynomialRegression
from fastinterp.models._common import InvalidTypeError
from fastinterp.models.nca import nca_loss_grad
from conftest import assert_close


# --- the nca_softmax kernel --------------------------------------------------------------

def _softmax_reference(D, labels, anchors):
    """-log p_i and dL_i/dd_ij in float64, straight from the definitions."""
    D = D.astype(np.float64)
    W = np.zeros_like(D)
    loss = np.zeros(len(anchors))
    for i, a in enumerate(anchors):
        others = np.arange(D.shape[1]) != a
        same = others & (labels == labels[a])
        if not same.any():
            continue
        logits = np.where(others, -D[i], -np.inf)
        top = logits.max()
        p = np.exp(logits - top)
        p /= p.sum()
        same_logits = np.where(same, -D[i], -np.inf)
        top_same = same_logits.max()
        q = np.exp(same_logits - top_same)
        q /= q.sum()
        loss[i] = -((top_same + np.log(np.exp(same_logits - top_same).sum()))
                    - (top + np.log(np.exp(logits - top).sum())))
        W[i] = q - p
    return loss, W


def _run_kernel(D, labels, anchors):
    W = np.ascontiguousarray(D)
    loss = np.empty(len(anchors), D.dtype)
    registry.lookup("nca_softmax", "cpu", D.dtype)(W, labels.astype(np.int32),
                                                    anchors.astype(np.intp), loss)
    return loss, W


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spread", [3.0, 300.0, 3000.0])   # 300/3000: the far-class path
def test_nca_softmax_kernel_matches_reference(rng, dtype, spread):
    n, b = 53, 11
    labels = rng.integers(0, 4, n)
    labels[7] = 9                                       # a class of one: no term
    anchors = np.array([0, 3, 7, 8, 20, 21, 30, 40, 41, 50, 52])
    D = (rng.random((b, n)) * spread).astype(dtype)
    D[np.arange(b), anchors] = 0
    ref_loss, ref_W = _softmax_reference(D, labels, anchors)
    loss, W = _run_kernel(D.copy(), labels, anchors)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(W, ref_W, rtol=rtol, atol=rtol)
    assert loss[2] == 0 and not W[2].any()
    assert fi.last_kernel().key == ("nca_softmax", "cpu", np.dtype(dtype).name)


def test_nca_softmax_hand_computed():
    # one anchor, neighbours at d = 0 (same class), 1 (same), 2 (other)
    D = np.array([[0.0, 0.0, 1.0, 2.0]])
    loss, W = _run_kernel(D.copy(), np.array([0, 0, 0, 1]), np.array([0]))
    e = np.exp([-0.0, -1.0, -2.0])
    p = e / e.sum()
    assert loss[0] == pytest.approx(-np.log(p[0] + p[1]), rel=1e-14)
    q = e[:2] / e[:2].sum()
    np.testing.assert_allclose(W[0], [0.0, q[0] - p[0], q[1] - p[1], -p[2]], rtol=1e-14)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), b=st.integers(1, 6), classes=st.integers(1, 5),
       dtype=st.sampled_from([np.float32, np.float64]), spread=st.sampled_from([0.0, 1.0, 80.0]))
def test_nca_softmax_kernel_shapes_and_edges(n, b, classes, dtype, spread):
    rng = np.random.default_rng(n * 7 + b)
    labels = rng.integers(0, classes, n)
    anchors = rng.choice(n, size=min(b, n), replace=False)
    D = (rng.random((len(anchors), n)) * spread).astype(dtype)
    ref_loss, ref_W = _softmax_reference(D, labels, anchors)
    loss, W = _run_kernel(D.copy(), labels, anchors)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(W, ref_W, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(W))


def test_nca_softmax_bit_identical_across_threads(threads, rng):
    n = 1000                      # 600 x 1000 entries: enough work for two threads
    labels = rng.integers(0, 10, n)
    anchors = rng.choice(n, 600, replace=False)
    D = (rng.random((len(anchors), n)) * 40).astype(np.float32)
    results = []
    for t in (1, 2):
        threads.set_num_threads(t)
        results.append(_run_kernel(D.copy(), labels, anchors))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# --- the analytic gradient -------------------------------------------------------------------

@pytest.mark.parametrize("scale, reg", [(0.5, 0.0), (0.5, 0.3), (6.0, 0.0)])
def test_nca_gradient_matches_finite_differences(rng, scale, reg):
    X = rng.standard_normal((40, 6))
    labels = rng.integers(0, 3, 40)
    A = rng.standard_normal((3, 6)) * scale
    anchors = np.array([0, 4, 5, 17, 22, 39])
    loss, grad = nca_loss_grad(A, X, labels, anchors, reg)
    assert grad.shape == A.shape and grad.dtype == np.float64
    h = 1e-6
    numeric = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        up, down = A.copy(), A.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (nca_loss_grad(up, X, labels, anchors, reg)[0]
                        - nca_loss_grad(down, X, labels, anchors, reg)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(numeric).max()))


def test_nca_loss_value_by_hand():
    X = np.array([[0.0], [0.1], [1.0], [1.1]])
    loss, _ = nca_loss_grad(np.array([[1.0]]), X, np.array([0, 0, 1, 1]))
    d = (X - X.T) ** 2
    terms = []
    for i in range(4):
        e = np.exp(-np.delete(d[i], i))
        same = np.delete(np.array([0, 0, 1, 1]) == [0, 0, 1, 1][i], i)
        terms.append(-np.log(e[same].sum() / e.sum()))
    assert loss == pytest.approx(np.mean(terms), rel=1e-12)


def test_nca_float32_gradient_close_to_float64(rng):
    X = rng.standard_normal((60, 5))
    labels = rng.integers(0, 3, 60)
    A = rng.standard_normal((2, 5))
    l64, g64 = nca_loss_grad(A, X, labels)
    l32, g32 = nca_loss_grad(A.astype(np.float32), X.astype(np.float32), labels)
    assert g32.dtype == np.float32
    assert l32 == pytest.approx(l64, rel=1e-4)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


# --- the NCA estimator -----------------------------------------------------------------------

def _blobs(rng, n=30):
    X = np.r_[rng.normal(0, 1, (n, 4)), rng.normal(2.5, 1, (n, 4))]
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    return X, y


@pytest.mark.parametrize("init", ["pca", "identity", "random"])
@pytest.mark.parametrize("standardize", ["global", "feature"])
@pytest.mark.parametrize("neighbors", ["batch", "all"])
def test_nca_fit_transform(rng, init, standardize, neighbors):
    X, y = _blobs(rng)
    nca = NCA(2, init=init, max_iter=5, standardize=standardize, neighbors=neighbors,
              batch_size=16, random_state=1)
    Z = nca.fit_transform(X, y)
    assert Z.shape == (60, 2) and nca.components_.shape == (2, 4)
    np.testing.assert_allclose(Z, nca.transform(X), rtol=1e-6)
    assert len(nca.loss_curve_) == 5 and nca.n_iter_ == 5
    start = NCA(2, init=init, max_iter=0, standardize=standardize, random_state=1).fit(X, y)
    Xs = ((X - nca.mean_) / nca.scale_).astype(np.float32)
    full_loss = lambda A: nca_loss_grad(A, Xs, y, reg=nca.reg)[0]
    assert full_loss(nca.components_) < full_loss(start.components_)
    assert_close(nca.transform(X[:3]),
                 ((X[:3] - nca.mean_) / nca.scale_).astype(np.float32) @ nca.components_.T)


def test_nca_is_seeded(rng):
    X, y = _blobs(rng)
    a = NCA(2, init="random", max_iter=3, random_state=5).fit(X, y).components_
    b = NCA(2, init="random", max_iter=3, random_state=5).fit(X, y).components_
    c = NCA(2, init="random", max_iter=3, random_state=6).fit(X, y).components_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_nca_verbose_log(rng, capsys):
    X, y = _blobs(rng)
    NCA(2, max_iter=3, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("NCA epoch 1/3: loss")
    NCA(2, max_iter=3).fit(X, y)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kw, X, y, exc, match", [
    (dict(init="lda"), None, None, ValueError, "init must be one of"),
    (dict(init=np.eye(4)), None, None, ValueError,
     r"init must be one of 'pca', 'identity', 'random'; got ndarray of shape \(4, 4\)"),
    (dict(standardize=np.ones(4)), None, None, ValueError, "standardize must be one of"),
    (dict(standardize="none"), None, None, ValueError, "standardize must be one of"),
    (dict(neighbors="knn"), None, None, ValueError, "neighbors must be one of"),
    (dict(n_components=5), None, None, ValueError, r"n_components must be an int in \[1, 4\]; got 5"),
    (dict(n_components=0), None, None, ValueError, "n_components"),
    (dict(max_iter=-1), None, None, ValueError, "max_iter must be an int >= 0"),
    (dict(batch_size=0), None, None, ValueError, "batch_size must be an int >= 1"),
    (dict(lr=-1.0), None, None, ValueError, "lr must be a finite number >= 0"),
    (dict(reg=float("nan")), None, None, ValueError, "reg must be"),
    (dict(dtype=np.float16), None, None, TypeError, "dtype must be float32 or float64"),
    (dict(dtype=None), None, None, TypeError, "dtype must be float32 or float64; got None"),
    (dict(dtype="garbage"), None, None, InvalidTypeError,
     r"^NCA.fit: dtype must be float32 or float64; got 'garbage'\.$"),
    (dict(dtype=[1]), None, None, InvalidTypeError, r"dtype must be float32 or float64; got \[1\]"),
    (dict(dtype="float16"), None, None, InvalidTypeError,
     r"dtype must be float32 or float64; got float16\.$"),
    (dict(dtype=np.int32), None, None, InvalidTypeError,
     "dtype must be float32 or float64; got int32"),
    (dict(random_state=1.5), None, None, InvalidTypeError, "random_state must be None, an int"),
    (dict(random_state="abc"), None, None, InvalidTypeError, "random_state must be None"),
    (dict(random_state=True), None, None, InvalidTypeError, "random_state must be None"),
    (dict(random_state=-1), None, None, ValueError, r"random_state must be .*; got -1"),
    (dict(), None, np.r_[np.zeros(59), np.nan], ValueError, "y must not contain NaN labels"),
    (dict(), None, np.array([None] + [1] * 59, dtype=object), TypeError,
     "labels must be sortable values"),
    (dict(), np.zeros(5), None, ValueError, r"X must have shape \(N, D\)"),
    (dict(), None, np.zeros(3), ValueError, r"y must have shape \(60,\)"),
    (dict(), np.full((60, 4), np.nan), None, ValueError, "X must be finite"),
])
def test_nca_errors(rng, kw, X, y, exc, match):
    X0, y0 = _blobs(rng)
    with pytest.raises(exc, match=match):
        NCA(**kw).fit(X0 if X is None else X, y0 if y is None else y)


def test_nca_transform_errors(rng):
    X, y = _blobs(rng)
    with pytest.raises(ValueError, match="not fitted"):
        NCA(2).transform(X)
    nca = NCA(2, max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match=r"X must have shape \(M, 4\)"):
        nca.transform(X[:, :3])


def test_nca_digits_beats_sklearn():
    """5-NN test accuracy on digits (70/30 stratified, seed 0, 16 components)
    at least that of scikit-learn's NeighborhoodComponentsAnalysis."""
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    X, y = datasets.load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

    def accuracy(model):
        return KNeighborsClassifier(5).fit(model.transform(Xtr), ytr).score(model.transform(Xte), yte)

    theirs = accuracy(NeighborhoodComponentsAnalysis(16, random_state=0).fit(Xtr, ytr))
    ours = accuracy(NCA(16, random_state=0).fit(Xtr, ytr))
    assert ours >= theirs, (ours, theirs)


def _rings(seed, noise, radial=0.1):
    from sklearn.model_selection import train_test_split
    from fastinterp.demos.rings import rings
    X, y = rings(seed, noise, radial)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)


@pytest.mark.parametrize("seed, noise, radial", [(0, 10.0, 0.1), (1, 3.0, 0.1),
                                                 (2, 30.0, 0.1), (3, 10.0, 0.15)])
def test_nca_recovers_the_rings_by_default(seed, noise, radial):
    """Section 4 of the NCA paper: in 2-D, NCA's 5-NN accuracy is near 1, PCA's is not
    (the defaults used to give 0.5: one row of A stuck on the noise axis)."""
    pytest.importorskip("sklearn")
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    Xtr, Xte, ytr, yte = _rings(seed, noise, radial)

    def accuracy(model):
        return KNeighborsClassifier(5).fit(model.transform(Xtr), ytr).score(model.transform(Xte), yte)

    nca = NCA(2, random_state=seed).fit(Xtr, ytr)
    assert accuracy(nca) >= 0.98
    assert accuracy(PCA(2).fit(Xtr)) < 0.7
    # the noise feature is (nearly) switched off: its weight in A is far below the rings'
    w = np.abs(nca.components_ / nca.scale_)
    assert w[:, 2].max() < 0.02 * w[:, :2].max()


def test_rings_demo_section(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from fastinterp.demos import rings
    lines = rings.run(tmp_path, quick=True)
    assert (tmp_path / "nca_rings.png").stat().st_size > 1000
    nca = next(line for line in lines if "NCA (defaults)" in line)
    pca = next(line for line in lines if "PCA, 2-D" in line)
    assert float(nca.split("accuracy")[1].split()[0]) >= 0.98
    assert float(pca.split("accuracy")[1].split()[0]) < 0.7


@pytest.mark.parametrize("standardize", ["median", "feature", "global"])
def test_nca_standardisation_scales(standardize):
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(0, 40, 200), rng.normal(0, 2, 200), rng.normal(0, 1, 200),
              rng.normal(0, 1e-3, 200), np.full(200, 7.0)]
    nca = NCA(2, max_iter=0, standardize=standardize).fit(X, np.arange(200) % 2)
    std = X.std(axis=0)
    want = {"median": np.maximum(std, np.median(std[:4])),    # the large one brought down
            "feature": np.r_[std[:4], 1.0],
            "global": np.full(5, np.sqrt(np.mean(std ** 2)))}[standardize]
    np.testing.assert_allclose(nca.scale_, want)
    assert np.all(np.isfinite(nca.transform(X + 1.0)))


def test_nca_step_size_follows_the_dimension():
    """784 pixels: the fit lowers the loss (with Adam's step fixed per entry of A, the
    embedding moved ~sqrt(784/64) times faster than on digits and the loss rose)."""
    pytest.importorskip("sklearn")
    from fastinterp.demos.models import mnist_like
    X, y, _, _ = mnist_like(2000, 1, seed=1)
    start = NCA(16, max_iter=0, init="random").fit(X, y)
    nca = NCA(16, max_iter=3, init="random").fit(X, y)
    Xs = ((X[:800] - nca.mean_) / nca.scale_).astype(np.float32)
    before = nca_loss_grad(start.components_, Xs, y[:800])[0]
    after = nca_loss_grad(nca.components_, Xs, y[:800])[0]
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("n, batch_size, epochs", [(60, 256, 300), (1000, 256, 75),
                                                   (40000, 256, 12), (500, 100, 60)])
def test_nca_default_epochs_give_at_least_300_steps_from_a_random_start(n, batch_size, epochs):
    assert NCA(batch_size=batch_size, init="random")._epochs(n) == epochs
    assert NCA(batch_size=batch_size)._epochs(n) == max(12, -(-150 // -(-n // batch_size)))
    assert NCA(max_iter=3)._epochs(n) == 3


# --- PolynomialRegression ----------------------------------------------------------------------

def _classic():
    x = np.linspace(0, 1, 10)
    return x, 3 * x + np.sin(6 * x) + 1


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4, 5])
def test_regression_recovers_closed_form(degree):
    x, y = _classic()
    model = PolynomialRegression(degree).fit(x, y)
    closed = model.closed_form()
    assert model.coef_.shape == (degree + 1,)
    np.testing.assert_allclose(model.coef_, closed, rtol=0, atol=1e-3)
    np.testing.assert_allclose(model.predict(x), np.polyval(closed[::-1], x), atol=1e-3)


def test_regression_with_adam():
    x, y = _classic()
    model = PolynomialRegression(3, optimizer="adam", max_iter=20000).fit(x, y)
    np.testing.assert_allclose(model.coef_, model.closed_form(), rtol=0, atol=1e-3)
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_regression_hand_computed_line():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    model = PolynomialRegression(1).fit(x, 2 * x - 1)
    np.testing.assert_allclose(model.coef_, [-1.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(model.predict([[4.0]]), [[7.0]], atol=1e-9)


def test_regression_closed_form_on_other_data():
    x, y = _classic()
    model = PolynomialRegression(2)
    np.testing.assert_allclose(model.closed_form(x, y), np.polyfit(x, y, 2)[::-1], rtol=1e-9)


def test_regression_verbose(capsys):
    x, y = _classic()
    PolynomialRegression(3, max_iter=100, tol=0.0, verbose=True).fit(x, y)
    assert capsys.readouterr().out.count("PolynomialRegression step") == 10


@pytest.mark.parametrize("make, exc, match", [
    (lambda x, y: PolynomialRegression(-1).fit(x, y), ValueError, "degree must be an int >= 0"),
    (lambda x, y: PolynomialRegression(2.5).fit(x, y), ValueError, "degree"),
    (lambda x, y: PolynomialRegression(2, optimizer="lbfgs").fit(x, y), ValueError, "optimizer must be one of"),
    (lambda x, y: PolynomialRegression(2, optimizer=np.zeros(2)).fit(x, y), ValueError,
     "optimizer must be one of"),
    (lambda x, y: PolynomialRegression(2).fit(x[:, None, None], y), ValueError, r"x must have shape \(N, D\)"),
    (lambda x, y: PolynomialRegression(2).fit(x, y[:5]), ValueError, r"y must have shape \(10,\)"),
    (lambda x, y: PolynomialRegression(12).fit(x, y), ValueError, "at least degree"),
    (lambda x, y: PolynomialRegression(2).fit(x, y * np.nan), ValueError, "finite"),
    (lambda x, y: PolynomialRegression(2).predict(x), ValueError, "not fitted"),
    (lambda x, y: PolynomialRegression(2).closed_form(), ValueError, "pass x and y"),
])
def test_regression_errors(make, exc, match):
    x, y = _classic()
    with pytest.raises(exc, match=match):
        make(x, y)


# --- nca_loss_grad: hostile inputs (no crash, clear errors, any labels) -------------------

def _nca_problem(rng, n=12, d=3, k=2, dtype=np.float64):
    X = rng.standard_normal((n, d)).astype(dtype)
    A = rng.standard_normal((k, d)).astype(dtype)
    y = rng.integers(0, 3, n)
    return A, X, y


def _in_subprocess(code):
    """Run ``code`` in a fresh interpreter (a crash must not take the test run down)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("anchors", ["[-1]", "[12]", "[0, 2**40]", "[-2**62]"])
def test_nca_out_of_range_anchors_raise_in_a_fresh_process(anchors):
    r = _in_subprocess(
        "import numpy as np\n"
        "from fastinterp.models.nca import nca_loss_grad\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.standard_normal((12, 3)); A = rng.standard_normal((2, 3))\n"
        "y = rng.integers(0, 3, 12)\n"
        "try:\n"
        f"    nca_loss_grad(A, X, y, anchors=np.array({anchors}))\n"
        "except ValueError as e:\n"
        "    print('VE', e)\n")
    assert r.returncode == 0, r.stderr
    assert "VE nca_loss_grad: anchors must be" in r.stdout and "[0, 12)" in r.stdout


@pytest.mark.parametrize("bad", ["anchors", "labels", "loss"])
def test_nca_softmax_kernel_guards_itself(bad):
    # The kernel is exported (C ABI, registry): it must check sizes and indices itself.
    r = _in_subprocess(
        "import numpy as np\n"
        "from fastinterp._cpu import models\n"
        "w = np.ones((3, 5)); lab = np.zeros(5, np.int32); anc = np.arange(3, dtype=np.intp)\n"
        "loss = np.empty(3)\n"
        f"bad = {bad!r}\n"
        "if bad == 'anchors': anc[1] = -1\n"
        "if bad == 'labels': lab = lab[:4]\n"
        "if bad == 'loss': loss = loss[:2]\n"
        "try:\n"
        "    models.nca_softmax_fwd(w, lab, anc, loss, 2)\n"
        "except ValueError as e:\n"
        "    print('VE', e)\n"
        "print('unchanged', bool((w == 1).all()))\n")
    assert r.returncode == 0, r.stderr
    assert "VE nca_softmax_fwd:" in r.stdout and "unchanged True" in r.stdout


@pytest.mark.parametrize("kw, exc, match", [
    (dict(labels=np.zeros(11, int)), ValueError, r"labels must have shape \(12,\).*got \(11,\)"),
    (dict(labels=np.zeros(13, int)), ValueError, r"labels must have shape \(12,\).*got \(13,\)"),
    (dict(labels=np.zeros((12, 1), int)), ValueError, r"labels must have shape \(12,\)"),
    (dict(anchors=np.array([0.0, 1.0])), TypeError, "anchors must be an integer array"),
    (dict(anchors=np.array([True, False])), TypeError, "anchors must be an integer array"),
    (dict(anchors=np.zeros((2, 1), int)), ValueError, r"anchors must have shape \(B,\)"),
    (dict(reg=-1.0), ValueError, "reg must be a finite number >= 0"),
    (dict(reg=float("nan")), ValueError, "reg must be a finite number >= 0"),
    (dict(A=np.zeros((2, 4))), ValueError, r"A must have shape \(k, 3\)"),
    (dict(A=np.zeros(3)), ValueError, r"A must have shape \(k, 3\)"),
    (dict(X=np.zeros(12)), ValueError, r"X must have shape \(N, D\)"),
    (dict(A=np.zeros((2, 3), np.float32)), TypeError, "X must have the same dtype as A"),
    (dict(A=np.zeros((2, 3), np.int64)), TypeError, "A must have dtype float32 or float64"),
])
def test_nca_loss_grad_errors(rng, kw, exc, match):
    A, X, y = _nca_problem(rng)
    args = dict(A=A, X=X, labels=y, anchors=None, reg=0.0)
    args.update(kw)
    with pytest.raises(exc, match=match):
        nca_loss_grad(**args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relabel", [
    lambda y: y.astype(np.int64) + 2**31,                  # would wrap in int32
    lambda y: y.astype(np.int64) * 2**40 - 2**62,
    lambda y: y.astype(np.uint64) + np.uint64(2**63),
    lambda y: y.astype(np.float64) + 0.5,                  # non-integer labels
    lambda y: np.array(["cat", "dog", "emu"])[y],          # strings
    lambda y: (y == 1),                                    # booleans
])
def test_nca_any_labels_equal_dense_codes(rng, relabel, dtype):
    A, X, y = _nca_problem(rng, dtype=dtype)
    dense = np.unique(y, return_inverse=True)[1]
    for anchors in (None, np.array([0, 5, 11]), np.array([], np.int64), [], [3, 4]):
        want = nca_loss_grad(A, X, np.unique(relabel(y), return_inverse=True)[1], anchors)
        got = nca_loss_grad(A, X, relabel(y), anchors)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
    # labels that wrapped to int32 used to merge classes 0 and 2**32 silently
    y2 = np.where(dense == 0, 0, 2**32).astype(np.int64)
    assert nca_loss_grad(A, X, y2)[0] != nca_loss_grad(A, X, np.zeros_like(y2))[0]


def test_nca_loss_grad_goes_through_the_registry(rng):
    A, X, y = _nca_problem(rng)
    builtin = registry.lookup("nca_softmax", "cpu", np.float64)
    calls = []

    def spy(*args):
        calls.append(len(args[2]))
        builtin(*args)

    registry.register("nca_softmax", "cpu", "float64", spy, source="test-spy")
    try:
        want = nca_loss_grad(A, X, y, np.array([3, 4]))
    finally:
        registry.unregister("test-spy")
    assert calls == [2]
    assert want[0] == nca_loss_grad(A, X, y, np.array([3, 4]))[0]


def test_nca_loss_grad_accepts_torch_tensors(torch, rng):
    A, X, y = _nca_problem(rng)
    want = nca_loss_grad(A, X, y, np.array([1, 3]))
    got = nca_loss_grad(torch.tensor(A), torch.tensor(X), torch.tensor(y), torch.tensor([1, 3]))
    assert got[0] == want[0]
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])


def test_nca_softmax_float32_nan_and_huge_distances():
    # NaN distances propagate as NaN (no float->int cast of NaN in the exp helper);
    # huge distances underflow to exp(-87)-scale weights, never inf/NaN.
    lab = np.array([0, 0, 1, 0, 1], np.int32)
    for far in (3000.0, 3e38, np.inf):
        w = np.array([[0.0, 1.0, far, 2.0, far],
                      [far, 0.0, 1.0, far, 2.0]], np.float32)
        loss, W = _run_kernel(w, lab, np.array([0, 1]))
        assert np.isfinite(loss).all() and np.isfinite(W).all(), far
    w = np.array([[0.0, np.nan, 1.0, 2.0, 3.0]], np.float32)
    loss, W = _run_kernel(w, lab, np.array([0]))
    assert np.isnan(W[0, 1])


# --- AffineAlign ---------------------------------------------------------------------

def _align_pair(true_theta=((1.0, 0.0, 0.08), (0.0, 1.0, -0.05)), size=32):
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    moving = np.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.1)
    theta = np.array([true_theta])
    fixed = fi.grid_sample(moving[None, None], fi.affine_grid(theta, (1, 1, size, size)),
                           padding_mode="border")[0, 0]
    return moving, fixed, theta[0]


def test_affine_align_recovers_a_shift():
    from fastinterp.models import AffineAlign
    moving, fixed, theta = _align_pair()
    fit = AffineAlign(verbose=False).fit(moving, fixed)
    assert np.abs(fit.theta_ - theta).max() < 1e-2
    assert fit.transform(moving).shape == (32, 32)             # moving's own form
    assert fit.transform(moving[None]).shape == (1, 32, 32)
    assert fit.transform(moving, size=(8, 16)).shape == (8, 16)


@pytest.mark.parametrize("kw, match", [
    (dict(max_iter=-1), r"AffineAlign: max_iter must be an int >= 0; got -1"),
    (dict(max_iter=2.5), r"max_iter must be an int >= 0; got 2.5"),
    (dict(max_iter="10"), r"max_iter must be an int >= 0; got '10'"),
    (dict(tol=-1.0), r"tol must be a finite number >= 0; got -1.0"),
    (dict(tol=float("nan")), r"tol must be a finite number >= 0"),
    (dict(max_step=0.0), r"max_step must be a finite number > 0; got 0.0"),
    (dict(lr=float("inf")), r"lr must be a finite number > 0; got inf"),
    (dict(log_every=0), r"log_every must be an int >= 1; got 0"),
])
def test_affine_align_parameter_errors(kw, match):
    from fastinterp.models import AffineAlign
    with pytest.raises(ValueError, match=match):
        AffineAlign(**kw)
    model = AffineAlign()               # also when set after construction, at fit
    for k, v in kw.items():
        setattr(model, k, v)
    moving, fixed, _ = _align_pair(size=8)
    with pytest.raises(ValueError, match=match):
        model.fit(moving, fixed)


def test_affine_align_is_quiet_by_default(capsys):
    """verbose defaults to False, as for NCA and PolynomialRegression (it printed)."""
    from fastinterp.models import AffineAlign
    moving, fixed, _ = _align_pair(size=8)
    AffineAlign(max_iter=60).fit(moving, fixed)
    assert capsys.readouterr().out == ""
    AffineAlign(max_iter=60, verbose=True, log_every=20).fit(moving, fixed)
    assert capsys.readouterr().out.count("\n") >= 2


def test_affine_align_zero_iterations_keeps_theta0():
    from fastinterp.models import AffineAlign
    moving, fixed, _ = _align_pair(size=8)
    fit = AffineAlign(max_iter=0, verbose=False).fit(moving, fixed)
    assert fit.n_iter_ == 0 and fit.loss_history_ == []
    np.testing.assert_array_equal(fit.theta_, [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("make, call", [
    ("AffineAlign()", "transform(np.zeros((4, 4)))"),
    ("NCA(2)", "transform(np.zeros((3, 4)))"),
    ("PolynomialRegression(2)", "predict(np.zeros(3))"),
])
def test_unfitted_models_raise_not_fitted(make, call):
    from fastinterp.models import AffineAlign  # noqa: F401 (used by eval)
    model = eval(make)
    with pytest.raises(ValueError, match=r"is not fitted; call fit first") as info:
        eval(f"model.{call}")
    assert isinstance(info.value, AttributeError)   # sklearn's NotFittedError contract
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return
    assert isinstance(info.value, NotFittedError)


# --- NCA: the same bits everywhere --------------------------------------------------------

def _nca_det_inputs(dtype):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((600, 32)).astype(dtype)
    A = (rng.standard_normal((8, 32)) / 6).astype(dtype)
    return A, X, rng.integers(0, 4, 600), np.sort(rng.choice(600, 200, replace=False))


def _nca_det_runs(dtype):
    """Every computation whose bits must not depend on threads: loss and gradient (all
    anchors and a minibatch) and a short fit (PCA init, both neighbour modes)."""
    A, X, y, anchors = _nca_det_inputs(dtype)
    out = [*nca_loss_grad(A, X, y), *nca_loss_grad(A, X, y, anchors, 0.01)]
    for neighbors in ("batch", "all"):
        m = NCA(8, max_iter=2, batch_size=200, neighbors=neighbors, dtype=dtype).fit(X, y)
        out += [m.components_, np.asarray(m.loss_curve_), m.transform(X[:50])]
    return out


def _assert_same_bits(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nca_bit_identical_for_one_and_two_threads(threads, dtype):
    threads.set_num_threads(1)
    one = _nca_det_runs(dtype)
    threads.set_num_threads(2)
    _assert_same_bits(_nca_det_runs(dtype), one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nca_bit_identical_for_one_and_two_blas_threads(threads, dtype):
    from threadpoolctl import threadpool_limits
    threads.set_num_threads(2)
    with threadpool_limits(1, user_api="blas"):
        one = _nca_det_runs(dtype)
    with threadpool_limits(2, user_api="blas"):
        _assert_same_bits(_nca_det_runs(dtype), one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nca_bit_identical_in_worker_threads(dtype):
    from concurrent.futures import ThreadPoolExecutor
    main = _nca_det_runs(dtype)
    with ThreadPoolExecutor(1) as pool:                 # one worker thread alone
        _assert_same_bits(pool.submit(_nca_det_runs, dtype).result(), main)
    with ThreadPoolExecutor(4) as pool:                 # four callers at once
        for got in [f.result() for f in [pool.submit(_nca_det_runs, dtype) for _ in range(4)]]:
            _assert_same_bits(got, main)


@pytest.mark.parametrize("blas", [2, 3])
def test_nca_fit_never_changes_the_blas_thread_count(blas):
    # Another thread watching the process (threadpoolctl, as any library could) must see
    # the BLAS settings unchanged during a fit: nothing process-wide is switched.
    import threading
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                      if i["user_api"] == "blas")

    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(blas_threads())

    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((800, 16)), rng.integers(0, 5, 800)
    with threadpool_limits(blas, user_api="blas"):
        before = blas_threads()
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:    # fits until the watcher has looked a few times (a busy machine may give it
            fits = 0    # one look during two fits: the test then failed for want of looks)
            while fits < 2 or (len(seen) < 3 and fits < 40):
                NCA(8, max_iter=6, batch_size=128, neighbors=("batch", "all")[fits % 2]).fit(X, y)
                fits += 1
        finally:
            done.set()
            watcher.join()
    assert len(seen) >= 2
    assert all(s == before for s in seen), [s for s in seen if s != before][:1]


# --- NCA: special values against a float64 reference --------------------------------------

def _nca_ref64(A, X, labels, reg):
    """NCA by its definition in float64: pairwise differences, softmax, and the gradient
    ``(2/N) sum_ij W_ij (z_i - z_j)(x_i - x_j)^T + 2 reg A`` (W = q - p)."""
    A, X, labels = np.asarray(A, np.float64), np.asarray(X, np.float64), np.asarray(labels)
    with np.errstate(all="ignore"):
        Z = X @ A.T
        d = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        p = np.exp(-d - (-d).max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        same = labels[:, None] == labels[None, :]
        np.fill_diagonal(same, False)
        has = same.any(1)
        pi = np.where(has, (p * same).sum(1), 1.0)
        loss = np.where(has, -np.log(pi), 0.0).mean() + reg * (A * A).sum()
        W = np.where(has[:, None], p * same / pi[:, None] - p, 0.0)
        grad = (2 / len(X)) * np.einsum("ij,ijk,ijd->kd", W, Z[:, None] - Z[None],
                                        X[:, None] - X[None]) + 2 * reg * A
    return float(loss), grad


def _nca_small(dtype, n=10, d=3, k=2):
    rng = np.random.default_rng(11)
    return ((rng.standard_normal((k, d))).astype(dtype), rng.standard_normal((n, d)).astype(dtype),
            np.arange(n) % 3)


def _put(v, value, where):
    v = v.copy()
    if where == "all":
        v[...] = value
    elif where == "row":
        v[0] = value
    else:
        v.reshape(-1)[v.size // 2] = value
    return v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arg", ["A", "X"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["one", "row", "all"])
def test_nca_non_finite_inputs_give_nan_everywhere(dtype, arg, value, where):
    A, X, y = _nca_small(dtype)
    args = {"A": A, "X": X}
    args[arg] = _put(args[arg], value, where)
    loss, grad = nca_loss_grad(args["A"], args["X"], y, reg=0.01)
    ref_loss, ref_grad = _nca_ref64(args["A"], args["X"], y, 0.01)
    assert np.isnan(ref_loss) and np.isnan(ref_grad).all()      # the definition's answer
    assert np.isnan(loss) and grad.dtype == dtype and np.isnan(grad).all()
    # a minibatch that leaves the bad row out still sees it as a neighbour
    loss, grad = nca_loss_grad(args["A"], args["X"], y, np.array([3, 4]), 0.01)
    assert np.isnan(loss) and np.isnan(grad).all()


@pytest.mark.parametrize("where", ["one", "row", "all"])
def test_nca_float32_huge_inputs_finite_like_float64(where):
    # 1e30 squared overflows float32: the distances are then taken in float64.
    A, X, y = _nca_small(np.float32)
    X = _put(X, 1e30, where)
    loss, grad = nca_loss_grad(A, X, y, reg=0.01)
    ref_loss, ref_grad = _nca_ref64(A, X, y, 0.01)
    assert np.isfinite(ref_loss) and np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    if where == "all":                       # all points equal: only the penalty's gradient
        np.testing.assert_array_equal(grad, np.float32(0.02) * A)


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e30), (np.float64, 1e200)])
@pytest.mark.parametrize("anchors", [None, np.array([1, 2, 7])])
def test_nca_equal_far_points_give_the_exact_value(dtype, big, anchors):
    # All points equal (at any magnitude): every neighbour is equally likely.
    A, X, y = _nca_small(dtype)
    X = np.full_like(X, big)
    loss, grad = nca_loss_grad(A, X, y, anchors, reg=0.01)
    rows = np.arange(len(X)) if anchors is None else anchors
    same = np.array([(y == y[i]).sum() - 1 for i in rows])
    want = np.mean(-np.log(same / (len(X) - 1))) + 0.01 * float((A.astype(np.float64) ** 2).sum())
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(grad, dtype(0.02) * A)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nca_scale_invariance_far_from_one(dtype):
    # X scaled up by 1e30 and A down by 1e30: the same embedding, the same loss, and
    # a gradient scaled by 1e-30 (the float32 products stay in range).
    A, X, y = _nca_small(dtype, n=30, d=4)
    l0, g0 = nca_loss_grad(A, X, y)
    s = dtype(2.0 ** 100)
    l1, g1 = nca_loss_grad(A / s, X * s, y)
    assert l1 == pytest.approx(l0, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(g1 / s, g0, rtol=1e-3 if dtype == np.float32 else 1e-9,
                               atol=1e-4 * np.abs(g0).max())


def test_nca_distances_beyond_float64_give_nan():
    # |A x| near 1e200: the squared distances overflow float64, so the softmax cannot be
    # formed: NaN, never a finite guess.
    A, X, y = _nca_small(np.float64)
    loss, grad = nca_loss_grad(A * 1e200, X, y)
    assert np.isnan(loss) and np.isnan(grad).all()


def test_nca_torch_negative_bit_is_resolved(torch):
    # The loss is even and the gradient odd in A: a sign read wrongly from A's negative
    # bit would flip the gradient. Both are even in X, so for X only the values are
    # checked against the resolved array.
    A, X, y = _nca_small(np.float64, n=12)
    want = nca_loss_grad(-A, X, y, np.array([0, 5]), 0.1)
    got = nca_loss_grad(torch.tensor(A)._neg_view(),                # resolves to -A
                        torch.tensor(X), torch.tensor(y), np.array([0, 5]), 0.1)
    assert got[0] == want[0]
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])
    Xn = torch.tensor(-X)._neg_view()                    # resolves to X
    got = nca_loss_grad(torch.tensor(A), Xn, torch.tensor(y), None, 0.1)
    want = nca_loss_grad(A, X, y, None, 0.1)
    assert got[0] == want[0]
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])
    assert not np.array_equal(want[1], nca_loss_grad(-A, X, y, None, 0.1)[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_polynomial_regression_fit_same_bits_everywhere(threads, optimizer):
    from concurrent.futures import ThreadPoolExecutor
    from threadpoolctl import threadpool_limits
    x = np.linspace(-3, 5, 200_001)
    y = np.sin(x) + 0.1 * x ** 2

    def fit():
        m = PolynomialRegression(5, optimizer=optimizer, max_iter=40).fit(x, y)
        return [m.coef_, np.asarray(m.loss_curve_)]

    threads.set_num_threads(2)
    with threadpool_limits(1, user_api="blas"):
        one = fit()
    with threadpool_limits(2, user_api="blas"):
        _assert_same_bits(fit(), one)
        with ThreadPoolExecutor(2) as pool:
            for got in [f.result() for f in [pool.submit(fit) for _ in range(2)]]:
                _assert_same_bits(got, one)
    threads.set_num_threads(1)
    _assert_same_bits(fit(), one)


# --- features and images at extreme scales -------------------------------------------

@pytest.mark.parametrize("scale", [1e160, 1e-170, 1e300, 1e-300])
def test_models_fit_data_whose_squares_overflow_or_underflow(rng, scale):
    """Finite data whose squared deviations overflow (or underflow) float64: the
    standardisation must still see its true spread (it read inf or 0)."""
    from fastinterp.models import AffineAlign
    X, y = _blobs(rng)
    X = X.astype(np.float64)
    ref = NCA(2, max_iter=5, random_state=1).fit(X, y)
    big = NCA(2, max_iter=5, random_state=1).fit(X * scale, y)
    np.testing.assert_allclose(big.scale_ / scale, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(big.transform(X * scale), ref.transform(X), rtol=1e-6, atol=1e-6)
    ref = NCA(2, max_iter=5, random_state=1, standardize="global").fit(X, y)
    big = NCA(2, max_iter=5, random_state=1, standardize="global").fit(X * scale, y)
    np.testing.assert_allclose(big.scale_ / scale, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(big.transform(X * scale), ref.transform(X), rtol=1e-6, atol=1e-6)
    x = np.linspace(0.0, 1.0, 20)
    line = PolynomialRegression(1).fit(x * scale, 3 * x + 1)
    assert line.score(x * scale, 3 * x + 1) > 1 - 1e-9
    np.testing.assert_allclose(line.coef_ * [1, scale], [1.0, 3.0], rtol=1e-8)
    # raw-monomial coefficients 1, 3 / scale, then ~0 / scale^2 and ~0 / scale^3: never
    # NaN (they were inf / inf), inf only where beyond float64
    cubic = PolynomialRegression(3).fit(x * scale, 3 * x + 1)
    assert not np.isnan(cubic.coef_).any()
    np.testing.assert_allclose(cubic.coef_[:2] * [1, scale], [1.0, 3.0], rtol=1e-6)
    moving, fixed, theta = _align_pair()
    fit = AffineAlign(verbose=False).fit(moving * scale, fixed * scale)
    assert np.abs(fit.theta_ - theta).max() < 1e-2


@pytest.mark.parametrize("kw, match", [
    (dict(max_iter=0), r"max_iter must be an int >= 1; got 0"),
    (dict(max_iter=-1), r"max_iter must be an int >= 1; got -1"),
    (dict(max_iter=1.5), r"max_iter must be an int >= 1; got 1.5"),
    (dict(momentum=2.0), r"momentum must be in \[0, 1\); got 2.0"),
    (dict(momentum=-0.1), r"momentum must be a finite number >= 0"),
    (dict(tol=-1.0), r"tol must be a finite number >= 0; got -1.0"),
    (dict(tol=float("nan")), r"tol must be a finite number >= 0"),
    (dict(lr=0.0), r"lr must be a finite number > 0; got 0.0"),
    (dict(lr=float("inf")), r"lr must be a finite number > 0; got inf"),
])
def test_regression_parameter_errors(kw, match):
    x = np.linspace(0.0, 1.0, 10)
    with pytest.raises(ValueError, match=r"PolynomialRegression.fit: " + match):
        PolynomialRegression(1, **kw).fit(x, 2 * x)


@pytest.mark.parametrize("offset", [1e307, -1e307])
def test_models_fit_finite_data_whose_sums_overflow(rng, offset):
    """Finite features near float64's limit: their column sums overflow, the means must
    not (the embedding was all NaN, or scipy refused the PCA start)."""
    X, y = _blobs(rng)
    X = X.astype(np.float64)
    for init in ("identity", "random", "pca"):
        ref = NCA(2, max_iter=3, init=init, random_state=1).fit(X, y)
        far = NCA(2, max_iter=3, init=init, random_state=1).fit(X + offset, y)
        np.testing.assert_allclose(far.mean_ - offset, ref.mean_, atol=1e-6 * abs(offset) * 1e-300)
        assert np.isfinite(far.transform(X + offset)).all()
    x = np.linspace(0.0, 1.0, 20)
    line = PolynomialRegression(1).fit(x * 1e306 + offset, 3 * x + 1)
    np.testing.assert_allclose(line.predict(np.array([offset])), [1.0], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-14, 1e-30, 1.0, 1e12, 1e160, 1e-200, 1e300])
def test_regression_converges_whatever_the_scale_of_y(scale):
    x = np.linspace(0.0, 1.0, 10)
    model = PolynomialRegression(1).fit(x, (3 * x + 1) * scale)
    np.testing.assert_allclose(model.coef_ / scale, [1.0, 3.0], rtol=1e-8)
    zero = PolynomialRegression(1).fit(x, np.zeros(10))
    assert zero.n_iter_ == 1 and not zero.coef_.any()


@pytest.mark.parametrize("which", ["moving", "fixed"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_affine_align_refuses_non_finite_images(which, bad):
    from fastinterp.models import AffineAlign
    moving, fixed, _ = _align_pair()
    images = {"moving": moving.copy(), "fixed": fixed.copy()}
    images[which][3, 5] = bad
    with pytest.raises(ValueError, match=rf"AffineAlign: {which} must be finite; got 1 NaN"):
        AffineAlign(verbose=False).fit(images["moving"], images["fixed"])


def test_regression_predict_names_non_numeric_input():
    x = np.linspace(0.0, 1.0, 10)
    model = PolynomialRegression(1).fit(x, 2 * x)
    with pytest.raises(ValueError, match=r"PolynomialRegression.predict: x must hold numbers"):
        model.predict(["a"])


# --- hostile hyper-parameters and data, the same rules in every model ---------------------

from fastinterp.models import AffineAlign  # noqa: E402


def _fit_nca(rng, data=None, y=None, **kw):
    X, y0 = _blobs(rng)
    return NCA(**{"max_iter": 1, **kw}).fit(X if data is None else data, y0 if y is None else y)


def _fit_poly(rng, data=None, y=None, **kw):
    x, y0 = _classic()
    return PolynomialRegression(**{"degree": 1, "max_iter": 5, **kw}).fit(
        x if data is None else data, y0 if y is None else y)


def _fit_align(rng, data=None, y=None, **kw):
    moving, fixed, _ = _align_pair(size=8)
    return AffineAlign(**{"max_iter": 1, "verbose": False, **kw}).fit(
        moving if data is None else data, fixed)


FITS = {"NCA.fit": (_fit_nca, ("max_iter", "batch_size")),
        "PolynomialRegression.fit": (_fit_poly, ("max_iter", "degree")),
        "AffineAlign": (_fit_align, ("max_iter", "log_every"))}


@pytest.mark.parametrize("op", list(FITS))
@pytest.mark.parametrize("bad", [2.0, 2.5, True, np.bool_(False), "10", None, 1 + 0j,
                                 np.float64(3), [2]])
def test_integer_hyper_parameters_refuse_other_types(rng, op, bad):
    fit, names = FITS[op]
    for name in names:
        if bad is None and (op, name) == ("NCA.fit", "max_iter"):
            continue                                   # None: NCA's automatic epoch count
        with pytest.raises(TypeError, match=rf"^{op}: {name} must be an int >= \d"):
            fit(rng, **{name: bad})


@pytest.mark.parametrize("op", list(FITS))
@pytest.mark.parametrize("big", [2**31, 2**70, np.uint64(2**63)])
def test_integer_hyper_parameters_are_bounded(rng, op, big):
    fit, names = FITS[op]
    for name in names:
        with pytest.raises(ValueError, match=rf"^{op}: {name} must be an int <= 2\*\*31 - 1; got"):
            fit(rng, **{name: big})


@pytest.mark.parametrize("op", list(FITS))
@pytest.mark.parametrize("name", ["verbose", "progress"])
@pytest.mark.parametrize("bad", ["no", [1], 1.0, None])
def test_flags_must_be_bools(rng, op, name, bad):
    fit, _ = FITS[op]
    with pytest.raises(TypeError, match=rf"^{op}: {name} must be a bool \(or an int\); got"):
        fit(rng, **{name: bad})


def test_integer_hyper_parameters_take_numpy_ints(rng):
    assert _fit_nca(rng, max_iter=np.int64(2), batch_size=np.int32(16)).n_iter_ == 2
    assert _fit_poly(rng, degree=np.int8(2), max_iter=np.uint16(3)).n_iter_ <= 3
    assert _fit_align(rng, max_iter=np.int64(2), log_every=np.int64(1)).n_iter_ <= 2
    assert _fit_nca(rng, n_components=np.int64(2)).components_.shape == (2, 4)


@pytest.mark.parametrize("bad, exc", [(2.0, TypeError), ("2", TypeError), (True, TypeError),
                                      (0, ValueError), (5, ValueError)])
def test_nca_n_components(rng, bad, exc):
    with pytest.raises(exc, match=r"^NCA.fit: n_components must be an int in \[1, 4\]"):
        _fit_nca(rng, n_components=bad)


@pytest.mark.parametrize("op", list(FITS))
@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.complex128),
    lambda a: a.astype(np.complex64),
    lambda a: a.astype(object) + 0j,
    lambda a: a.astype(str),
    lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, "1.5", a.astype(object)),
], ids=["complex128", "complex64", "object-complex", "str", "object-str"])
def test_complex_and_string_data_is_refused(rng, op, convert):
    fit, _ = FITS[op]
    data = {"NCA.fit": _blobs(rng)[0], "PolynomialRegression.fit": _classic()[0],
            "AffineAlign": _align_pair(size=8)[0]}[op]
    with pytest.raises(TypeError, match=rf"^{op}: \w+ must (be real|hold numbers); got"):
        fit(rng, data=convert(data))


@pytest.mark.parametrize("op", list(FITS))
def test_object_data_that_is_not_numbers_is_refused(rng, op):
    fit, _ = FITS[op]
    data = {"NCA.fit": _blobs(rng)[0], "PolynomialRegression.fit": _classic()[0],
            "AffineAlign": _align_pair(size=8)[0]}[op].astype(object)
    data.flat[0] = {"a": 1}
    with pytest.raises(TypeError, match=rf"^{op}: \w+ must hold numbers"):
        fit(rng, data=data)


def test_object_arrays_of_real_numbers_are_read_as_float64(rng):
    # scikit-learn's convention (check_estimator's check_dtype_object)
    X, y = _blobs(rng)
    a = NCA(max_iter=2, random_state=0).fit(X, y).components_
    np.testing.assert_array_equal(NCA(max_iter=2, random_state=0).fit(X.astype(object), y)
                                  .components_, a)


@pytest.mark.parametrize("bad", [np.ones(10) + 1j, np.array(["1"] * 10)])
def test_regression_targets_must_be_real_numbers(rng, bad):
    with pytest.raises(TypeError, match=r"^PolynomialRegression.fit: y must"):
        _fit_poly(rng, y=bad)
    model = _fit_poly(rng)
    with pytest.raises(TypeError, match=r"^PolynomialRegression.score: y must"):
        model.score(_classic()[0], bad)
    with pytest.raises(TypeError, match=r"^PolynomialRegression.predict: x must"):
        model.predict(bad)


def test_type_errors_are_also_value_errors_as_scikit_learn_raises(rng):
    with pytest.raises(ValueError, match="Complex data not supported"):
        _fit_nca(rng, data=_blobs(rng)[0] + 1j)
    with pytest.raises(ValueError, match="max_iter"):
        _fit_nca(rng, max_iter=2.5)


@pytest.mark.parametrize("size, exc", [(3, TypeError), ("ab", TypeError), ((4.0, 4), TypeError),
                                       ((4, 4, 4), ValueError), ((0, 4), ValueError),
                                       ((2**40, 4), ValueError)])
def test_affine_align_transform_size(rng, size, exc):
    model = _fit_align(rng)
    with pytest.raises(exc, match=r"^AffineAlign.transform: size must"):
        model.transform(_align_pair(size=8)[0], size=size)


@pytest.mark.parametrize("bad, exc", [("0.5", TypeError), (None, TypeError), (True, TypeError),
                                      (0.0, ValueError), (1.5, ValueError),
                                      (float("nan"), ValueError)])
def test_affine_align_sample_fraction(bad, exc):
    with pytest.raises(exc, match="^AffineAlign: sample_fraction must be"):
        AffineAlign(sample_fraction=bad)


@pytest.mark.parametrize("op", list(FITS))
def test_flags_take_ints_as_scikit_learn_does(rng, op, capsys):
    fit, _ = FITS[op]
    fit(rng, verbose=0, progress=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", np.dtype("f8")])
def test_nca_dtype_names(rng, dtype):
    assert _fit_nca(rng, dtype=dtype).components_.dtype == np.dtype(dtype)


@pytest.mark.parametrize("theta0, exc, match", [
    (np.full((2, 3), np.nan), ValueError, r"theta0 must be finite; got 6 NaN or inf entries"),
    (np.array([[np.inf, 0, 0], [0, 1, 0]]), ValueError, r"theta0 must be finite; got 1 NaN"),
    (np.eye(2, 3) + 0j, InvalidTypeError, r"theta0 must be real; got complex128"),
    ("abc", InvalidTypeError, r"theta0 must hold numbers; got dtype <U3"),
    ([[1, 0, None], [0, 1, 0]], ValueError, r"theta0 must be finite; got 1 NaN or inf entry"),
    ([[1, 0, object()], [0, 1, 0]], TypeError, r"theta0 must hold numbers"),
    (np.eye(2, 3)[None], ValueError, r"theta0 must have shape \(2, 3\); got \(1, 2, 3\)"),
    (np.eye(3), ValueError, r"theta0 must have shape \(2, 3\); got \(3, 3\)"),
])
@pytest.mark.parametrize("max_iter", [0, 5])
def test_affine_align_refuses_bad_theta0(theta0, exc, match, max_iter):
    moving, fixed, _ = _align_pair(size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no ComplexWarning instead
        with pytest.raises(exc, match=rf"^AffineAlign: {match}"):
            AffineAlign(max_iter=max_iter, verbose=False).fit(moving, fixed, theta0=theta0)


def test_affine_align_takes_theta0_as_any_real_array(torch):
    moving, fixed, theta = _align_pair(size=8)
    for theta0 in ([[1, 0, 0.08], [0, 1, -0.05]], np.float32(theta), torch.tensor(theta)):
        fit = AffineAlign(max_iter=0, verbose=False).fit(moving, fixed, theta0=theta0)
        assert fit.theta_.dtype == np.float64
        np.testing.assert_allclose(fit.theta_, theta, rtol=1e-7)


@pytest.mark.parametrize("scale", [1e-300, 1e-30, 1e30, 1e300])
@pytest.mark.parametrize("which", ["moving", "fixed"])
def test_affine_align_images_of_two_dtypes_at_any_scale(scale, which):
    """Each image is scaled from its own dtype: a float64 image beyond float32's range
    next to a float32 one is finite. Images whose scales differ by far more than float64
    can square give a ValueError saying so, never a NaN theta_."""
    moving, fixed, _ = _align_pair(size=16)
    images = {"moving": moving.astype(np.float32), "fixed": fixed.astype(np.float32)}
    images[which] = {"moving": moving, "fixed": fixed}[which] * scale
    model = AffineAlign(max_iter=20, verbose=False)
    if (scale if which == "moving" else 1 / scale) > 1e200:
        with pytest.raises(ValueError, match=r"^AffineAlign: moving and fixed must have "
                                             r"comparable scales"):
            model.fit(images["moving"], images["fixed"])
        return
    fit = model.fit(images["moving"], images["fixed"])
    assert np.isfinite(fit.theta_).all() and np.isfinite(fit.loss_history_).all()


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)])
def test_affine_align_mixed_dtypes_recover_the_shift(scale, dtypes):
    moving, fixed, theta = _align_pair()
    fit = AffineAlign(verbose=False).fit((moving * scale).astype(dtypes[0]),
                                         (fixed * scale).astype(dtypes[1]))
    assert np.abs(fit.theta_ - theta).max() < 1e-2


@pytest.mark.parametrize("which", ["moving", "fixed"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 5, 5), (3, 0, 5)])
def test_affine_align_refuses_empty_images(which, shape):
    moving, fixed, _ = _align_pair(size=8)
    images = {"moving": moving[None], "fixed": fixed[None], which: np.ones(shape)}
    if len(shape) == 2:
        images = {k: v[0] if v.ndim == 3 else v for k, v in images.items()}
    with pytest.raises(ValueError, match=rf"^AffineAlign: {which} must have at least one "
                                         rf"channel and one pixel; got shape "
                                         rf"{re.escape(str(shape))}\.$"):
        AffineAlign(verbose=False).fit(images["moving"], images["fixed"])
    if which == "moving":
        fit = AffineAlign(max_iter=0, verbose=False).fit(moving, fixed)
        with pytest.raises(ValueError, match=r"^AffineAlign.transform: moving must have at "
                                             r"least one channel"):
            fit.transform(np.ones(shape))


def test_finite_data_spanning_more_than_float64_trains_to_a_finite_fit():
    """X - mean overflowed (|X| near 1e308 of both signs): NaN components, scipy's eigh
    error, or an 'SGD: lr must be finite' about an lr the caller never gave."""
    X = np.array([[1.7e308, 0.0], [-1.7e308, 1.0], [-1.7e308, 2.0], [-1.7e308, 3.0]])
    for init in ("pca", "identity", "random"):
        A = NCA(init=init, max_iter=2).fit(X, [0, 1, 0, 1]).components_
        assert np.isfinite(A).all(), (init, A)
    x, t = np.array([1.7e308, -1.7e308, -1.7e308]), np.array([0.0, 1.0, 2.0])
    for optimizer in ("sgd", "adam"):
        model = PolynomialRegression(1, optimizer=optimizer).fit(x, t)
        assert np.isfinite(model.coef_).all()
        np.testing.assert_allclose(model.predict(x), [0.0, 1.5, 1.5], atol=1e-6)


def test_a_diverging_fit_is_a_value_error_naming_lr():
    """sklearn's SGD estimators raise on overflow; the coefficients were all NaN, silently."""
    with pytest.raises(ValueError, match=r"^PolynomialRegression.fit: training diverged .*lower "
                                         r"lr \(got 1.0\)"):
        PolynomialRegression(2, lr=1.0).fit(np.linspace(0, 1, 10), np.linspace(0, 1, 10) ** 2)
    X, y = np.random.default_rng(0).standard_normal((30, 3)), np.arange(30) % 3
    with pytest.raises(ValueError, match=r"^NCA.fit: training diverged .*lower lr"):
        NCA(2, lr=1e300, dtype=np.float64).fit(X, y)


def test_nca_lr_or_reg_beyond_float32_is_reported_by_nca():
    """A float32 model's lr whose step exceeds float32 was refused by the internal
    optimizer ("Adam.step: lr must be representable in float32 ... got 5.06e+38", a
    value the caller never passed); reg=1e300 printed NumPy's overflow warning first."""
    X, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 3
    for lr in (1e39, 3e38, 1e38):        # (Adam's first step is 10x lr / rms row norm)
        with pytest.raises(ValueError, match=r"^NCA.fit: lr is too large for a float32 "
                                             rf"model.*got {re.escape(repr(lr))}"):
            NCA(max_iter=3, lr=lr).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^NCA.fit: training diverged .*reg"):
            NCA(max_iter=3, reg=1e300).fit(X, y)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_nca_batches_of_fewer_than_three_points_are_refused(batch_size):
    """A point's only neighbour in a batch of 2 is picked with probability 1: the loss is
    constant and the penalty shrank the map to 0 (5-NN accuracy 0.39 on digits)."""
    X, y = np.random.default_rng(1).standard_normal((12, 3)), np.arange(12) % 2
    with pytest.raises(ValueError, match=r"batch_size must be at least 3 with neighbors='batch'"):
        NCA(batch_size=batch_size).fit(X, y)
    NCA(batch_size=batch_size, neighbors="all", max_iter=2).fit(X, y)      # (all: fine)


def test_nca_pca_start_leaves_constant_features_out_in_every_variant():
    """LAPACK left ~1e-19 in the columns of features constant in training, which Adam
    inflated differently per build (1.5e-6 relative on transform between v2 and v4)."""
    X = np.random.default_rng(2).standard_normal((60, 5))
    X[:, 1] = 0.0
    X[:, 3] = 7.0
    model = NCA(3, dtype=np.float64, max_iter=5).fit(X, np.arange(60) % 3)
    assert np.all(model.components_[:, [1, 3]] == 0)


CONSTANTS = [0.1, 0.3, 1 / 3, np.pi, 2.5, -7.7, 1e-300, 3e300]


@pytest.mark.parametrize("n", [3, 10, 30, 101])
def test_a_constant_column_has_its_value_for_mean_and_zero_spread(n):
    """Summing n copies of 0.1 and dividing gave 0.10000000000000005: the column's
    spread came out ~4e-17, not 0, and the models standardised by it (57 of 100
    constant columns; an NCA transform moved by 2e7 for a 1e-9 change)."""
    from fastinterp.models._common import column_mean, column_spread
    rng = np.random.default_rng(n)
    X = np.c_[rng.standard_normal((n, 2)), np.tile(CONSTANTS, (n, 1))]
    mean = column_mean(X, chunk=7)
    np.testing.assert_array_equal(mean[2:], CONSTANTS)
    np.testing.assert_array_equal(column_spread(X, mean, chunk=7)[2:], 0.0)
    assert np.all((mean >= X.min(axis=0)) & (mean <= X.max(axis=0)))


@pytest.mark.filterwarnings("ignore:.*stopped at max_iter")
@pytest.mark.parametrize("value", [0.1, np.pi, -7.7])
def test_models_leave_a_feature_constant_in_training_out(value):
    """The documented rules for features constant in training hold for any constant,
    not only those whose sum is exact: NCA's standardize='feature' scale is 1 and its
    PCA start has a zero column; a regression does not depend on the feature."""
    rng = np.random.default_rng(3)
    X = np.c_[rng.standard_normal((30, 3)), np.full(30, value)]
    y = np.arange(30) % 3
    X[:, 0] += 2 * y
    assert NCA(standardize="feature", max_iter=0).fit(X, y).scale_[3] == 1.0
    assert np.all(NCA(max_iter=0, dtype=np.float64).fit(X, y).components_[:, 3] == 0)
    model = PolynomialRegression(2, max_iter=300).fit(X[:, 2:], X[:, 2] ** 2 + 1)
    moved = X[:3, 2:].copy()
    moved[:, 1] += 1e-6
    np.testing.assert_allclose(model.predict(moved), model.predict(X[:3, 2:]), rtol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("scale", [1e307, 1e-300])
def test_regression_of_a_target_near_the_ends_of_float64(optimizer, scale):
    """A finite y near float64's largest value overflowed the stopping threshold: the fit
    stopped at once with zero coefficients, silently. y is fitted in units of a power of
    two near its largest entry (exact), the coefficients scaled back."""
    x = np.linspace(0, 1, 50)
    kw = dict(optimizer=optimizer, max_iter=20000 if optimizer == "sgd" else 3000)
    ref = PolynomialRegression(1, **kw).fit(x, 1 + x)
    got = PolynomialRegression(1, **kw).fit(x, (1 + x) * scale)
    np.testing.assert_allclose(got.coef_, ref.coef_ * scale, rtol=1e-9)   # adam: not scale-free
    np.testing.assert_allclose(got.predict(np.array([0.5])), 1.5 * scale, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_regression_fitted_on_1d_x_refuses_non_finite_x_in_predict(bad):
    m = PolynomialRegression(2).fit(np.linspace(0, 1, 20), np.linspace(0, 1, 20) ** 2)
    with pytest.raises(ValueError, match=r"PolynomialRegression.predict: x must be finite"):
        m.predict(np.array([0.5, bad]))


def test_regression_with_more_monomials_than_points_takes_its_lr_from_the_small_gram(
        monkeypatch):
    """The default lr came from the eigenvalues of the T x T Gram matrix of the monomials
    (46376 x 46376, 16 GiB, for 30 features at degree 4 on 10 points); its largest
    eigenvalue is that of the n x n one."""
    from fastinterp.models import regression
    X = np.random.default_rng(0).standard_normal((10, 5))
    sizes, largest = [], regression._largest_eigenvalue
    monkeypatch.setattr(regression, "_largest_eigenvalue",
                        lambda a: sizes.append(a.shape) or largest(a))
    with pytest.warns(UserWarning, match="stopped at max_iter = 3 steps"):
        m = PolynomialRegression(3, max_iter=3).fit(X, X.sum(1))
    assert sizes == [(10, 10)] and m.coef_.shape == (56,)
    assert np.isfinite(m.coef_).all()


def test_float32_nca_embedding_beyond_float32_is_inf_not_nan():
    """X finite (float64) whose float32 embedding overflows: inf - inf in the product gave
    NaN; the row is embedded in float64 and rounded (inf where it exceeds float32)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    model = NCA(2, max_iter=2).fit(X, y)
    Z = model.transform(np.concatenate([np.full((1, 4), 1e39), X[:2]]))
    assert not np.isnan(Z).any() and np.isinf(Z[0]).all()
    np.testing.assert_array_equal(Z[1:], model.transform(X[:2]))
    wide = NCA(2, max_iter=2, dtype="float64").fit(X, y).transform(np.full((1, 4), 1e39))
    assert np.isfinite(wide).all()


def test_regression_fit_bits_do_not_depend_on_the_blas_thread_count():
    """The default lr came from LAPACK's eigen-solver, whose bits depend on OpenBLAS's
    thread count (1/lambda differed in the last place at 455 monomials)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((600, 12)), rng.standard_normal(600)
    coefs = []
    for threads in (1, 2, 3):
        with threadpoolctl.threadpool_limits(threads, user_api="blas"):
            coefs.append(PolynomialRegression(3, max_iter=50).fit(X, y).coef_)
    assert all(c.tobytes() == coefs[0].tobytes() for c in coefs)


def test_regression_default_lr_is_the_largest_eigenvalues_inverse(rng):
    from fastinterp.models.regression import _largest_eigenvalue
    for n in (1, 2, 7, 60):
        a = rng.standard_normal((n + 3, n))
        gram = a.T @ a
        want = np.linalg.eigvalsh(gram)[-1]
        assert abs(_largest_eigenvalue(gram) - want) <= 1e-9 * want
    assert _largest_eigenvalue(np.zeros((3, 3))) == 0


def test_regression_that_stops_at_max_iter_warns():
    """A degree-9 fit stopped 20000 steps short of the least-squares fit (mse 4.8e-4
    against 1.3e-11) without a word."""
    x = np.linspace(0, 1, 50)
    with pytest.warns(UserWarning, match="stopped at max_iter = 200 steps"):
        PolynomialRegression(9, max_iter=200).fit(x, np.sin(6 * x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PolynomialRegression(2).fit(x, 1 + x - x * x)           # converges: no warning


def test_a_diverging_regression_stops_at_once_and_keeps_the_last_fit():
    """lr=1e6 ran 20000 steps on NaN, reported them all, and a refit that failed left
    the new run's n_iter_ and loss_curve_ beside the previous coef_."""
    x = np.linspace(0, 1, 50)
    m = PolynomialRegression(3).fit(x, x ** 3)
    fitted = (m.coef_.copy(), m.n_iter_, list(m.loss_curve_))
    m.set_params(lr=1e6)
    with pytest.raises(ValueError, match=r"non-finite at step \d+\);") as info:
        m.fit(x, x ** 3)
    assert int(re.search(r"at step (\d+)", str(info.value)).group(1)) < 100
    assert m.coef_.tobytes() == fitted[0].tobytes()
    assert (m.n_iter_, m.loss_curve_) == fitted[1:]
    fresh = PolynomialRegression(3, lr=1e6)
    with pytest.raises(ValueError, match="diverged"):
        fresh.fit(x, x ** 3)
    assert not hasattr(fresh, "n_iter_") and not hasattr(fresh, "loss_curve_")


@pytest.mark.parametrize("labels", [
    np.array([1.0, 0.0, np.nan, 1.0, 0.0, np.nan, 2.0, 1.0], dtype=object),
    np.array([1.0, 0.0, np.nan, 1.0, 0.0, np.nan, 2.0, 1.0]),
    np.array(["a", "b", float("nan"), "a", "b", "a", "b", "a"], dtype=object),
])
def test_nan_labels_are_refused_everywhere(labels):
    """An object array holding NaN was accepted: np.unique cannot sort around NaN, so the
    classes split (loss 0); float NaNs were merged into one class by nca_loss_grad."""
    X = np.random.default_rng(1).standard_normal((8, 2))
    with pytest.raises(ValueError, match=r"nca_loss_grad: labels must not contain NaN "
                                         r"labels; got 2 of them|got 1 of them"):
        nca_loss_grad(np.eye(2), X, labels)
    with pytest.raises(ValueError, match=r"NCA.fit: y must not contain NaN labels"):
        NCA(max_iter=1).fit(X, labels)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e160, 1e-170])
def test_polynomial_score_does_not_depend_on_the_scale_of_y(scale):
    """score squared y - pred unscaled: 0/0 (1.0) below ~1e-160 and inf/inf (NaN) above
    ~1e154, where fit and predict are right."""
    x = np.linspace(0, 1, 20)
    y = 3 * x + np.sin(6 * x) + 1
    want = PolynomialRegression(2).fit(x, y).score(x, y)
    model = PolynomialRegression(2).fit(x, y * scale)
    assert model.score(x, y * scale) == pytest.approx(want, rel=1e-9)


def test_nca_loss_of_a_huge_transform_without_reg_is_finite():
    """With reg = 0 the loss added 0 * ||A||^2, NaN once ||A||^2 overflowed float64; the
    same embedding reached through X instead of A gave the right loss."""
    X = np.array([[0.0], [1e-170], [1e-160], [1.1e-160]])
    labels = np.array([0, 0, 1, 1])
    loss, _ = nca_loss_grad(np.array([[1e160]]), X, labels)
    want, _ = nca_loss_grad(np.array([[1.0]]), X * 1e160, labels)
    assert loss == pytest.approx(want, rel=1e-12)
    # with reg, the penalty's overflow is the loss's
    assert nca_loss_grad(np.array([[1e160]]), X, labels, reg=1e-3)[0] == np.inf
    big = np.full((2, 2), 1e154)       # ||A||^2 = 4e308 overflows, reg * ||A||^2 does not
    assert np.isfinite(nca_loss_grad(big, np.ones((4, 2)), labels, reg=1e-10)[0])


def test_affine_align_fits_bright_images_at_any_scale():
    """The standardisation took the fixed image's mean with a plain float64 sum: a 32x32
    image of pixels up to 228 at 1e305 summed to inf, and fit said the images must have
    comparable scales."""
    from fastinterp.models import AffineAlign
    moving, fixed, theta = _align_pair()
    moving, fixed = 128 + 100 * moving / np.abs(moving).max(), 128 + 100 * fixed / np.abs(fixed).max()
    ref = AffineAlign(verbose=False, max_iter=5).fit(moving, fixed)
    big = AffineAlign(verbose=False, max_iter=5).fit(moving * 1e305, fixed * 1e305)
    np.testing.assert_allclose(big.theta_, ref.theta_, rtol=1e-9, atol=1e-12)



@pytest.mark.parametrize("call", [
    lambda: PolynomialRegression(lr=10**400).fit([0.0, 1, 2], [0.0, 1, 2]),
    lambda: NCA(reg=10**400).fit(np.eye(4), [0, 0, 1, 1]),
    lambda: PolynomialRegression().fit([0, 1, 10**400], [0.0, 1, 2]),
    lambda: NCA(max_iter=2).fit([[0, 1], [1, 0], [10**400, 1], [2, 2]], [0, 0, 1, 1]),
])
def test_ints_beyond_float64_are_value_errors(call):
    """An int too large for a float (a hyper-parameter or a value in the data) escaped as
    a raw OverflowError; the optimizers already said ValueError."""
    with pytest.raises(ValueError, match=r"must be (finite|a finite number).*(digits|beyond float64)"):
        call()
