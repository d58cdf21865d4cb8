"""fastinterp.models as scikit-learn estimators: check_estimator, clone, Pipeline,
GridSearchCV, random_state (and the deprecated seed), progress bars."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastinterp.models import NCA, AffineAlign, PolynomialRegression

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone                                         # noqa: E402
from sklearn.exceptions import NotFittedError                          # noqa: E402
from sklearn.utils.estimator_checks import check_estimator             # noqa: E402

# Checks that cannot apply, with the reason (check_estimator's documented mechanism).
POLY_EXPECTED_FAILURES = {
    "check_fit1d": "a 1-D x is PolynomialRegression's documented single-variable input "
                   "(coefficients of 1, x, ..., x^degree), so it is fitted, not refused",
}


@pytest.mark.parametrize("estimator, expected", [
    (NCA(max_iter=3), {}),
    (NCA(2, max_iter=2, dtype=np.float64, standardize="global", init="random"), {}),
    (PolynomialRegression(max_iter=300), POLY_EXPECTED_FAILURES),
], ids=["nca", "nca-float64", "polynomial"])
def test_check_estimator(estimator, expected):
    failed, passed = [], []

    def record(*, estimator, check_name, exception, status, expected_to_fail,
               expected_to_fail_reason):
        if status == "failed" and not expected_to_fail:
            failed.append(f"{check_name}: {exception!r}")
        if status == "passed":
            passed.append(check_name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # skip notes (array API), convergence
        check_estimator(estimator, expected_failed_checks=expected, on_fail=None,
                        callback=record)
    assert failed == []
    assert len(passed) >= 40 and "check_fit_idempotent" in passed


def test_the_one_expected_failure_does_fail():
    # check_fit1d is listed because it fails, not as a blanket skip
    from sklearn.utils.estimator_checks import check_fit1d
    with pytest.raises(AssertionError):
        check_fit1d("PolynomialRegression", PolynomialRegression(max_iter=50))


def _digits_like(rng, n=160, d=12, classes=4):
    centres = rng.normal(0, 3, (classes, d))
    y = np.arange(n) % classes
    return centres[y] + rng.normal(0, 1.5, (n, d)), y


@pytest.mark.parametrize("make", [
    lambda: NCA(3, max_iter=4, random_state=5, standardize="global"),
    lambda: PolynomialRegression(3, optimizer="adam", max_iter=40),
    lambda: AffineAlign(lr=0.3, max_iter=7, random_state=2, sample_fraction=0.5),
])
def test_params_roundtrip_and_clone(make):
    model = make()
    params = model.get_params()
    again = clone(model)
    assert type(again) is type(model) and again is not model
    assert again.get_params() == params
    assert type(model)(**params).get_params() == params
    assert model.set_params(max_iter=1) is model and model.max_iter == 1
    with pytest.raises(ValueError, match=r"set_params: invalid parameter 'bogus'"):
        model.set_params(bogus=1)
    assert repr(model).startswith(type(model).__name__ + "(") and "max_iter=1" in repr(model)


def test_nca_in_grid_search_over_n_components(rng):
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    X, y = _digits_like(rng)
    pipe = make_pipeline(NCA(max_iter=3), KNeighborsClassifier(3))
    search = GridSearchCV(pipe, {"nca__n_components": [1, 2, 6], "nca__reg": [0.0, 0.01]},
                          cv=3).fit(X, y)
    assert set(search.cv_results_["param_nca__n_components"]) == {1, 2, 6}
    best = search.best_estimator_.named_steps["nca"]
    assert best.components_.shape == (search.best_params_["nca__n_components"], X.shape[1])
    assert best.n_features_in_ == X.shape[1] and search.best_score_ > 0.5


def test_nca_feature_names_out_in_a_pipeline(rng):
    """As scikit-learn's NCA: the embedding's columns are named nca0, nca1, ... and a
    Pipeline of scaler + NCA reports them."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _digits_like(rng)
    pipe = make_pipeline(StandardScaler(), NCA(3, max_iter=2)).fit(X, y)
    names = [f"x{i}" for i in range(X.shape[1])]
    assert pipe.get_feature_names_out(names).tolist() == ["nca0", "nca1", "nca2"]
    nca = pipe.named_steps["nca"]
    assert nca.get_feature_names_out().dtype == object
    with pytest.raises(ValueError, match="input_features must hold n_features_in_"):
        nca.get_feature_names_out(names[:2])
    with pytest.raises(NotFittedError):
        NCA(2).get_feature_names_out()


def test_polynomial_in_pipeline_and_grid_search(rng):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = rng.uniform(-1, 1, (120, 2))
    y = 1 + X[:, 0] - 2 * X[:, 0] * X[:, 1] + 0.5 * X[:, 1] ** 3
    search = GridSearchCV(make_pipeline(StandardScaler(), PolynomialRegression(max_iter=3000)),
                          {"polynomialregression__degree": [1, 3]}, cv=3).fit(X, y)
    assert search.best_params_ == {"polynomialregression__degree": 3}
    assert search.best_score_ > 0.99


def test_polynomial_several_features_matches_closed_form(rng):
    X = rng.uniform(-2, 3, (80, 3))
    y = 2 - X[:, 0] + 3 * X[:, 1] * X[:, 2] - X[:, 2] ** 2 + 0.01 * rng.standard_normal(80)
    model = PolynomialRegression(2).fit(X, y)
    assert model.coef_.shape == (10,) and model.powers_.shape == (10, 3)
    assert model.powers_.sum(1).tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    np.testing.assert_allclose(model.coef_, model.closed_form(), atol=1e-6)
    V = np.prod(X[:, None, :] ** model.powers_[None], axis=2)
    np.testing.assert_allclose(model.predict(X), V @ model.coef_, rtol=1e-9, atol=1e-9)
    assert model.score(X, y) > 0.999 and model.n_features_in_ == 3


@pytest.mark.parametrize("model, call", [
    (NCA(2), lambda m: m.transform(np.zeros((3, 4)))),
    (PolynomialRegression(2), lambda m: m.predict(np.zeros((3, 2)))),
    (AffineAlign(), lambda m: m.transform(np.zeros((4, 4)))),
])
def test_not_fitted_is_sklearns_error(model, call):
    with pytest.raises(NotFittedError):
        call(model)


def test_n_features_mismatch_message(rng):
    X, y = _digits_like(rng, d=5)
    nca = NCA(2, max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but NCA is expecting 5 features"):
        nca.transform(X[:, :4])
    poly = PolynomialRegression(1).fit(X, y.astype(float))
    with pytest.raises(ValueError, match="X has 4 features, but PolynomialRegression is "
                                         "expecting 5"):
        poly.predict(X[:, :4])


@pytest.mark.parametrize("make, fit", [
    (lambda **kw: NCA(2, max_iter=2, init="random", **kw),
     lambda m, d: m.fit(*d["nca"]).components_),
    (lambda **kw: AffineAlign(max_iter=5, sample_fraction=0.5, verbose=False, **kw),
     lambda m, d: m.fit(*d["align"]).theta_),
])
def test_seed_is_a_deprecated_alias_of_random_state(rng, make, fit):
    X, y = _digits_like(rng)
    img = np.exp(-np.linspace(-2, 2, 16)[:, None] ** 2 - np.linspace(-2, 2, 16) ** 2)
    data = {"nca": (X, y), "align": (img, np.roll(img, 1, axis=1))}
    with pytest.warns(FutureWarning, match="seed is deprecated.*use random_state"):
        old = fit(make(seed=4), data)
    np.testing.assert_array_equal(old, fit(make(random_state=4), data))
    assert not np.array_equal(old, fit(make(random_state=5), data))
    gen = fit(make(random_state=np.random.default_rng(4)), data)
    np.testing.assert_array_equal(gen, fit(make(random_state=np.random.default_rng(4)), data))


def test_random_state_errors(rng):
    X, y = _digits_like(rng)
    with pytest.raises(ValueError, match="random_state must be None, an int >= 0"):
        NCA(2, random_state="zero").fit(X, y)


def test_importing_models_does_not_import_sklearn():
    code = ("import sys, fastinterp.models\n"
            "print(any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- progress -------------------------------------------------------------------------------

@pytest.mark.parametrize("make, fit", [
    (lambda p: NCA(2, max_iter=2, progress=p, batch_size=40), lambda m, X, y: m.fit(X, y)),
    (lambda p: PolynomialRegression(2, max_iter=30, tol=0.0, progress=p),
     lambda m, X, y: m.fit(X[:, 0], X[:, 1])),
])
@pytest.mark.parametrize("tqdm", [True, False])
def test_progress_bar(rng, capsys, monkeypatch, make, fit, tqdm):
    X, y = _digits_like(rng)
    if not tqdm:
        monkeypatch.setitem(sys.modules, "tqdm", None)       # import tqdm fails
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    fit(make(True), X, y)
    err = capsys.readouterr()
    assert err.out == ""                                  # verbose is off
    name = type(make(False)).__name__
    assert name in err.err
    total = 8 if name == "NCA" else 30                    # 2 epochs x 4 batches / 30 steps
    assert f"{total}/{total}" in err.err
    if not tqdm:
        assert err.err.endswith("\n") and "\r" in err.err and "it/s" not in err.err
    fit(make(False), X, y)
    assert capsys.readouterr().err == ""


def test_progress_and_verbose_together(rng, capsys):
    X, y = _digits_like(rng)
    NCA(2, max_iter=2, verbose=True, progress=True).fit(X, y)
    out = capsys.readouterr()
    assert out.out.count("NCA epoch") == 2 and "NCA" in out.err


def test_nca_takes_pipeline_set_output():
    """NCA had no set_output: Pipeline.set_output raised ValueError."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), np.arange(30) % 3
    pipe = Pipeline([("nca", NCA(2, max_iter=3)), ("knn", KNeighborsClassifier(3))])
    assert pipe.set_output(transform="default").fit(X, y).predict(X).shape == (30,)
    assert NCA().set_output().get_params() == NCA().get_params()
    with pytest.raises(ValueError, match="transform must be one of 'default', 'pandas'"):
        NCA().set_output(transform="arrow")


def test_nca_set_output_pandas_gives_named_columns_and_xs_index():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((30, 3)), index=np.arange(30) + 100)
    y = np.arange(30) % 3
    frame = NCA(2, max_iter=3).set_output(transform="pandas").fit(X, y).transform(X)
    assert list(frame.columns) == ["nca0", "nca1"] and list(frame.index) == list(X.index)
    np.testing.assert_array_equal(frame.to_numpy(), NCA(2, max_iter=3).fit(X, y).transform(X))


@pytest.mark.filterwarnings("ignore:.*stopped at max_iter")
@pytest.mark.parametrize("make, method", [
    (lambda: NCA(2, max_iter=3), "transform"),
    (lambda: PolynomialRegression(2, max_iter=50), "predict"),
], ids=["nca", "polynomial"])
def test_feature_names_are_recorded_and_checked(make, method):
    """Fitted on a DataFrame, the models kept no feature_names_in_ and took the same
    columns in another order silently (an NCA embedding moved by 5.9): scikit-learn's
    rules and words now (sklearn.utils.estimator_checks'
    check_dataframe_column_names_consistency passes)."""
    pd = pytest.importorskip("pandas")
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((40, 3)), columns=["a", "b", "c"])
    y = np.arange(40) % 2
    model = make().fit(X, y)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    assert model.feature_names_in_.dtype == object
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        getattr(model, method)(X[["c", "b", "a"]])
    with pytest.raises(ValueError, match="unseen at fit time:\n- d\n"):
        getattr(model, method)(X.rename(columns={"c": "d"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        getattr(model, method)(X.to_numpy())
    assert not hasattr(make().fit(X.to_numpy(), y), "feature_names_in_")
    model.fit(X.to_numpy(), y)                       # a refit without names forgets them
    assert not hasattr(model, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but"):
        getattr(model, method)(X)
    with pytest.raises(TypeError, match="only supported if all input features have string"):
        make().fit(X.rename(columns={"a": 0}), y)
    twice = X.set_axis(["a", "a", "b"], axis=1)     # a swap of the two would go unseen
    with pytest.raises(ValueError, match=r"column names must be unique .*got \['a'\]"):
        make().fit(twice, y)
    with pytest.raises(ValueError, match=r"column names must be unique"):
        getattr(make().fit(X, y), method)(twice)
    check_dataframe_column_names_consistency(type(model).__name__, make())


def test_nca_follows_sklearns_global_transform_output():
    """Under sklearn.config_context(transform_output="pandas") NCA returned an array
    (check_global_output_transform_pandas failed); its own set_output still wins."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 3)), np.arange(30) % 3
    model = NCA(2, max_iter=3).fit(X, y)
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(model.transform(X), pd.DataFrame)
        assert isinstance(model.set_output(transform="default").transform(X), np.ndarray)
    assert isinstance(model.transform(X), np.ndarray)


@pytest.mark.parametrize("fit", [lambda X, y: NCA(max_iter=2).fit(X, y),
                                 lambda X, y: PolynomialRegression(max_iter=5).fit(X, y)],
                         ids=["nca", "polynomial"])
def test_pandas_missing_values_are_a_value_error_like_nan(fit):
    """pd.NA in a nullable Float64 column gave a TypeError ("must hold numbers"); NaN is
    the documented ValueError, as in scikit-learn."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(0).standard_normal((30, 3))).astype("Float64")
    X.iloc[0, 0] = pd.NA
    with pytest.raises(ValueError, match=r"[xX] must be finite; got a missing value \(pd.NA"):
        fit(X, np.arange(30) % 3)
