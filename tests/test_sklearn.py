"""mlpcore.sklearn: scikit-learn's estimator checks, equivalence with scikit-learn's own MLP,
and the ecosystem round trips (Pipeline, GridSearchCV, cross_val_score, clone, joblib)."""
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network as skn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_diabetes,
    load_digits,
    load_iris,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_sample_weight_equivalence_on_dense_data,
    check_sample_weight_equivalence_on_sparse_data,
    parametrize_with_checks,
)

from helpers import PYTHON_DIR  # noqa: E402
from mlpcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

_STOCHASTIC_WEIGHTS = ("mini-batch sgd/adam: a sample weight of 2 is not the same as a repeated "
                       "row once rows are shuffled into batches (scikit-learn's own MLP is checked "
                       "with solver='lbfgs' here; test_lbfgs_sample_weight_equivalence does that)")


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data": _STOCHASTIC_WEIGHTS,
            "check_sample_weight_equivalence_on_sparse_data": _STOCHASTIC_WEIGHTS}


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=100 on purpose
        check(estimator)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("check", [check_sample_weight_equivalence_on_dense_data,
                                   check_sample_weight_equivalence_on_sparse_data])
def test_lbfgs_sample_weight_equivalence(cls, check):
    check(cls.__name__, cls(solver="lbfgs", dtype="float64"))


# --- the same training as scikit-learn's --------------------------------------------------------
def _pair(cls_name, **params):
    """scikit-learn's estimator and ours with the same parameters (ours in float64)."""
    return getattr(skn, cls_name)(**params), globals()[cls_name](dtype="float64", **params)


def _fit_both_and_compare_weights(ref, ours, X, y):
    """Fits scikit-learn's estimator and ours on (X, y); their weights agree to 1e-9."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
        ours.fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _data(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    if kind == "multiclass":
        y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    elif kind == "binary":
        y = (X[:, 0] + X[:, 2] > 0).astype(int)
    elif kind == "multilabel":
        y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 1], axis=1).astype(int)
    else:
        y = np.stack([X @ np.arange(5.0), X[:, 0] ** 2], axis=1)
        if kind == "regression":
            y = y[:, 0]
    return X, y


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression",
                                  "multioutput"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_full_batch_sgd_matches_scikit_learn(kind, nesterov):
    # Full batch and no shuffling remove the only differences (batch order, last-batch L2): the
    # loss scale, the alpha mapping, momentum and the initial weights must then all agree.
    X, y = _data(kind)
    name = "MLPRegressor" if kind in ("regression", "multioutput") else "MLPClassifier"
    ref, ours = _pair(name, hidden_layer_sizes=(7, 4), solver="sgd", batch_size=60,
                      shuffle=False, alpha=0.05, learning_rate_init=0.05, max_iter=15,
                      nesterovs_momentum=nesterov, random_state=3, activation="tanh")
    _fit_both_and_compare_weights(ref, ours, X, y)
    # several regression outputs: scikit-learn's reported alpha term is k times ours
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_,
                               rtol=1e-2 if kind == "multioutput" else 1e-9)
    assert ours.n_iter_ == ref.n_iter_ and ours.t_ == ref.t_
    assert (ours.out_activation_, ours.n_outputs_, ours.n_layers_) == \
        (ref.out_activation_, ref.n_outputs_, ref.n_layers_)
    if name == "MLPClassifier":
        np.testing.assert_array_equal(ours.classes_, ref.classes_)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-9)
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
def test_full_batch_adam_matches_scikit_learn(kind):
    # scikit-learn's Adam adds epsilon before the bias correction; an epsilon near sqrt(v)
    # makes the placement visible (torch's placement misses by far more than the tolerance).
    X, y = _data(kind)
    name = "MLPRegressor" if kind == "regression" else "MLPClassifier"
    ref, ours = _pair(name, hidden_layer_sizes=(7,), solver="adam", batch_size=60,
                      shuffle=False, alpha=0.01, learning_rate_init=0.02, epsilon=0.01,
                      beta_1=0.8, beta_2=0.9, max_iter=12, random_state=2)
    _fit_both_and_compare_weights(ref, ours, X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-9)
    assert ours.model_.optimizer.param_groups[0]["eps_before_correction"] is True


def test_invscaling_and_tol_stopping_match_scikit_learn():
    X, y = _data("regression")
    ref, ours = _pair("MLPRegressor", hidden_layer_sizes=(6,), solver="sgd", batch_size=60,
                      shuffle=False, momentum=0.0, learning_rate="invscaling",
                      learning_rate_init=0.01, power_t=0.3, max_iter=200, tol=5.0,
                      n_iter_no_change=3, random_state=0)
    ref.fit(X, y)
    ours.fit(X, y)
    assert ours.n_iter_ == ref.n_iter_ < 200  # stopped by tol after n_iter_no_change epochs
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.best_loss_, ref.best_loss_, rtol=1e-9)


def test_adaptive_learning_rate_divides_by_five_like_scikit_learn():
    X, y = _data("binary")
    ref, ours = _pair("MLPClassifier", hidden_layer_sizes=(5,), solver="sgd", batch_size=60,
                      shuffle=False, momentum=0.0, learning_rate="adaptive", tol=10.0,
                      n_iter_no_change=2, learning_rate_init=0.1, max_iter=400, random_state=1)
    ref.fit(X, y)
    ours.fit(X, y)
    assert ours.n_iter_ == ref.n_iter_ < 400  # stopped once the rate fell below 1e-6
    assert ours._learning_rate == pytest.approx(ref._optimizer.learning_rate)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-8)


def test_lbfgs_matches_scikit_learn():
    X, y = _data("multiclass")
    ref, ours = _pair("MLPClassifier", hidden_layer_sizes=(6,), solver="lbfgs", max_iter=30,
                      alpha=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
        ours.fit(X, y)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.loss_ == pytest.approx(ref.loss_, rel=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_adam_tracks_scikit_learn():
    # Adam's epsilon sits in a slightly different place (see mlpcore.sklearn); otherwise equal
    X, y = _data("multiclass")
    ref, ours = _pair("MLPClassifier", hidden_layer_sizes=(8,), batch_size=60, shuffle=False,
                      max_iter=20, random_state=0, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
        ours.fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = make_classification(300, 10, random_state=0)
    ref, ours = _pair("MLPClassifier", hidden_layer_sizes=(10,), early_stopping=True,
                      validation_fraction=0.2, n_iter_no_change=3, max_iter=200,
                      random_state=0, batch_size=240, shuffle=False, solver="sgd",
                      learning_rate_init=0.05)
    ref.fit(X, y)
    ours.fit(X, y)
    assert ours.best_loss_ is None and ours.validation_scores_ is not None
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_)
    assert ours.best_validation_score_ == ref.best_validation_score_
    for a, b in zip(ours.coefs_, ref.coefs_):  # restored to the best epoch, as scikit-learn
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# --- accuracy within scikit-learn's spread --------------------------------------------------------
@pytest.mark.parametrize("loader,cls", [(load_iris, "MLPClassifier"),
                                        (load_digits, "MLPClassifier"),
                                        (load_diabetes, "MLPRegressor")])
def test_score_within_scikit_learn_spread(loader, cls):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    if cls == "MLPRegressor":
        y = (y - y.mean()) / y.std()
    rng = np.random.default_rng(0)
    test = rng.permutation(len(X))[: len(X) // 4]
    train = np.setdiff1d(np.arange(len(X)), test)
    scores = {"ref": [], "ours": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(2):
            ref = getattr(skn, cls)(hidden_layer_sizes=(32,), max_iter=40, random_state=seed)
            ours = globals()[cls](hidden_layer_sizes=(32,), max_iter=40, random_state=seed)
            for key, est in (("ref", ref), ("ours", ours)):
                scores[key].append(est.fit(X[train], y[train]).score(X[test], y[test]))
    spread = max(scores["ref"]) - min(scores["ref"])
    assert np.mean(scores["ours"]) >= min(scores["ref"]) - max(spread, 0.02), scores


# --- the estimator's own behaviour ----------------------------------------------------------------
def test_fitted_attributes_and_views():
    X, y = _data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(4, 3), max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    for name in ("classes_", "loss_", "best_loss_", "loss_curve_", "t_", "coefs_",
                 "intercepts_", "n_features_in_", "n_iter_", "n_layers_", "n_outputs_",
                 "out_activation_", "model_"):
        assert hasattr(est, name), name
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert [c.shape for c in est.coefs_] == [(5, 4), (4, 3), (3, 3)]
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 5 and est.t_ == 5 * 60
    assert est.out_activation_ == "softmax" and est.n_layers_ == 4
    # coefs_ are the network's memory: writing them changes the predictions
    assert np.shares_memory(est.coefs_[0], est.model_.layers[0].weight)
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_allclose(est.predict_proba(X), 1 / 3)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(1 / 3))


def test_string_labels_partial_fit_and_score():
    X, y = _data("multiclass")
    ref, est = _pair("MLPClassifier", hidden_layer_sizes=(8,), random_state=0,
                     learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    for _ in range(30):
        est.partial_fit(X, y, classes=["a", "b", "c"])
        ref.partial_fit(X, y, classes=["a", "b", "c"])
    # (each call's epochs, as scikit-learn counts them; t_ counts every sample seen)
    assert est.n_iter_ == ref.n_iter_ == 1 and est.t_ == ref.t_ == 30 * len(X)
    assert list(est.classes_) == ["a", "b", "c"]
    assert set(est.predict(X)) <= {"a", "b", "c"}
    assert est.score(X, y) >= ref.score(X, y) - 0.05
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        est.partial_fit(X, np.where(y == "a", "z", y))


def test_multilabel_and_multioutput():
    X, Y = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref, clf = _pair("MLPClassifier", hidden_layer_sizes=(16,), max_iter=300, random_state=0)
        ref.fit(X, Y)
        clf.fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.predict(X).shape == Y.shape
    assert clf.predict_proba(X).shape == (200, 4)
    assert clf.score(X, Y) >= ref.score(X, Y) - 0.05  # subset accuracy
    X, Y = make_regression(200, 6, n_targets=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0,
                           learning_rate_init=0.01).fit(X, Y)
    assert reg.predict(X).shape == (200, 3) and reg.predict(X).dtype == np.float64
    assert reg.score(X, Y) > 0.9


def test_pandas_and_sparse_input():
    pd = pytest.importorskip("pandas")
    sp = pytest.importorskip("scipy.sparse")
    X, y = _data("binary")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=50, random_state=0, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(frame, pd.Series(y))
        dense = est.predict_proba(frame)
        sparse = clone(est).fit(sp.csr_matrix(X), y)
    # sparse rows are densified per batch: the same training as dense input
    np.testing.assert_allclose(sparse.predict_proba(sp.csc_matrix(X)), dense, rtol=1e-5)
    assert list(est.feature_names_in_) == list(frame.columns)


def test_extras():
    X, y = _data("multiclass")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for activation in ("leaky_relu", "gelu", "silu", "elu", "selu"):
            MLPClassifier((6,), activation=activation, max_iter=3, random_state=0).fit(X, y)
        est = MLPClassifier((6,), dropout=0.3, batch_norm=True, dtype="float64", n_threads=1,
                            optimizer="adamw", class_weight="balanced", max_iter=5,
                            random_state=0).fit(X, y, sample_weight=np.linspace(0.5, 1.5, 60))
    kinds = [type(layer).__name__ for layer in est.model_.layers]
    assert kinds == ["Dense", "BatchNorm1d", "ReLU", "Dropout", "Dense"]
    assert type(est.model_.optimizer).__name__ == "AdamW"
    assert est.model_.dtype == np.float64 and est.coefs_[0].dtype == np.float64
    with pytest.raises(ValueError, match="optimizer='adamw'"):
        MLPClassifier(solver="sgd", optimizer="adamw").fit(X, y)
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(X, X[:, 0])
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier(solver="lbfgs", dropout=0.5).fit(X, y)
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit(X, y, classes=["a", "b", "c"])


def test_warm_start_continues_and_refits_from_the_same_random_state():
    X, y = _data("regression")
    params = dict(hidden_layer_sizes=(5,), max_iter=4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPRegressor(**params).fit(X, y)
        b = MLPRegressor(**params).fit(X, y)
        np.testing.assert_array_equal(a.predict(X), b.predict(X))  # deterministic
        first = a.coefs_[0].copy()
        a.set_params(warm_start=True).fit(X, y)
    # n_iter_ counts this fit's epochs (as scikit-learn's), loss_curve_ every epoch
    assert a.n_iter_ == 4 and len(a.loss_curve_) == 8
    assert not np.array_equal(a.coefs_[0], first)


# --- the ecosystem ------------------------------------------------------------------------------
def test_pipeline_grid_search_cross_val_and_joblib(tmp_path):
    joblib = pytest.importorskip("joblib")
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(10,), max_iter=60,
                                                         random_state=0, n_threads=1,
                                                         learning_rate_init=0.05))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2)
        grid.fit(X, y)
    assert scores.mean() > 0.8 and grid.best_score_ > 0.8
    path = tmp_path / "pipe.joblib"
    joblib.dump(grid.best_estimator_, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), grid.best_estimator_.predict_proba(X))
    copy = clone(grid.best_estimator_)
    assert copy.get_params()["mlpclassifier__alpha"] == grid.best_params_["mlpclassifier__alpha"]
    assert not hasattr(copy[-1], "model_")


def test_pickled_estimator_trains_on_identically():
    import pickle
    X, y = _data("binary")
    est = MLPClassifier(hidden_layer_sizes=(6,), random_state=0)
    for _ in range(3):
        est.partial_fit(X, y, classes=[0, 1])
    twin = pickle.loads(pickle.dumps(est))
    for _ in range(3):
        est.partial_fit(X, y)
        twin.partial_fit(X, y)
    for a, b in zip(est.coefs_ + est.intercepts_, twin.coefs_ + twin.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_import_without_scikit_learn_names_the_package():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import mlpcore.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=_env())
    assert "pip install" in out.stdout and "scikit-learn" in out.stdout


def _env():
    # the child imports the mlpcore this process runs (an installed one in CI)
    return dict(os.environ, PYTHONPATH=PYTHON_DIR)


def test_partial_fit_with_a_new_batch_size_keeps_weights_and_optimizer_state():
    # the alpha term depends on the batch size: a smaller chunk rebuilds the layers around the
    # same weights and optimizer state
    import mlpcore as mc
    X, y = _data("regression")
    est = MLPRegressor(hidden_layer_sizes=(5,), random_state=0, n_threads=1)
    threads = mc.get_num_threads()
    est.partial_fit(X, y)
    before = [c.copy() for c in est.coefs_]
    steps = est.model_.optimizer.step_count
    est.partial_fit(X[:30], y[:30])
    assert mc.get_num_threads() == threads  # n_threads only holds during the call
    assert est.model_.layers[0].l2 == pytest.approx(est.alpha / 30)  # c = 2 for one output
    assert est.model_.optimizer.step_count == steps + 1
    assert est.t_ == 90 and est.n_iter_ == 1
    assert max(np.abs(a - b).max() for a, b in zip(est.coefs_, before)) < 0.01


@pytest.mark.parametrize("labels", [np.array([3, 1, 2, 3, 7, 1]),
                                    np.array(["b", "a", "c", "a", "b", "c"], dtype=object),
                                    np.array([2.0, -1.0, 2.0, 0.0, -1.0, 0.0])])
def test_one_hot_targets_are_label_binarizers(labels):
    # the multiclass targets are built without LabelBinarizer.transform's sparse matrix; they
    # must be what it gives, for fit and for partial_fit on a subset of the classes
    from sklearn.preprocessing import LabelBinarizer

    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=1)
    X = np.random.default_rng(0).normal(size=(len(labels), 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, labels)
    want = LabelBinarizer().fit(labels).transform(labels).astype(np.float64)
    got = est._one_hot(labels)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(est._one_hot(labels[2:4]), want[2:4])


@pytest.mark.parametrize("labels", [
    np.array([3, 1, 2, 3, 7, 1]), np.array([3, 1, 2, 3, 7, 1], dtype=np.int32),
    np.array([-100, 100, 0, 100], dtype=np.int8), np.array([250, 3, 3], dtype=np.uint8),
    np.array([5, 5, 5]), np.array([0, 1, 1, 0]), np.array([9, 4]),
    np.array([0, 1 << 20, 5]),  # (a span beyond the bincount: LabelBinarizer itself)
    np.array([3, 1, 2], dtype=np.uint64), np.array([1.0, 2.0, 1.0]),
])
def test_integer_labels_are_binarized_as_label_binarizer_fits_them(labels):
    # the fast path for 1-D integer labels (one np.bincount) sets what LabelBinarizer.fit sets
    from sklearn.preprocessing import LabelBinarizer

    from mlpcore.sklearn import _fitted_binarizer

    lb, index = _fitted_binarizer(labels)
    want = LabelBinarizer().fit(labels)
    assert vars(lb).keys() == vars(want).keys()
    assert (lb.y_type_, lb.sparse_input_) == (want.y_type_, want.sparse_input_)
    assert lb.classes_.dtype == want.classes_.dtype
    np.testing.assert_array_equal(lb.classes_, want.classes_)
    if index is not None:
        np.testing.assert_array_equal(lb.classes_[index], labels)
    np.testing.assert_array_equal(lb.transform(labels), want.transform(labels))
    np.testing.assert_array_equal(lb.inverse_transform(want.transform(labels)), labels)


def test_integer_and_float_labels_train_the_same_bits():
    # integer labels (the bincount path) and the same labels as floats (LabelBinarizer's)
    X, y = _X, (np.floor(_X[:, 1] * 2) % 3).astype(int) + 4
    fits = []
    for labels in (y, y.astype(np.float64)):
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(est.fit(X, labels))
    assert fits[0].classes_.tolist() == fits[1].classes_.tolist() == [4, 5, 6]
    np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))
    assert fits[0].predict(X).dtype == y.dtype


# --- hostile input (a red-team pass) ---------------------------------------------------------
_X = np.random.RandomState(0).randn(40, 3)
_YR = 2 * _X[:, 0] + 1
_YC = (_X[:, 0] > 0).astype(int)


def test_a_network_beyond_memory_is_refused_before_any_allocation(monkeypatch):
    import mlpcore._validation as validation

    monkeypatch.setattr(validation, "physical_memory", lambda: 2**30)
    # 5e8 parameters: about 12 GiB to train, refused against the 1 GiB given above
    with pytest.raises(ValueError, match=r"hidden_layer_sizes=\(100000000,\).*500,000,001 "
                                         r"parameters.*more than this machine's 1.0 GiB"):
        MLPRegressor(hidden_layer_sizes=(10**8,), max_iter=1).fit(_X, _YR)


@pytest.mark.parametrize("sizes", [(2.5,), (True,), (np.nan,), ("8",)])
def test_hidden_layer_sizes_must_be_integers(sizes):
    with pytest.raises(TypeError, match="hidden_layer_sizes must hold integers"):
        MLPRegressor(hidden_layer_sizes=sizes, max_iter=1).fit(_X, _YR)


@pytest.mark.parametrize("scale", [1e307, 1e-320])
def test_equal_sample_weights_of_any_size_give_the_unweighted_fit(scale):
    # the weights' sum overflowed (1e307) or their mean's inverse did (1e-320)
    args = dict(max_iter=20, random_state=0, hidden_layer_sizes=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPRegressor(**args).fit(_X, _YR)
        weighted = MLPRegressor(**args).fit(_X, _YR, sample_weight=np.full(40, scale))
        both = MLPClassifier(**args, class_weight={0: 1e200, 1: 1e200})
        both.fit(_X, _YC, sample_weight=np.full(40, 1e200))
        unweighted = MLPClassifier(**args).fit(_X, _YC)
    np.testing.assert_allclose(weighted.coefs_[0], plain.coefs_[0], rtol=1e-6)
    np.testing.assert_allclose(both.coefs_[0], unweighted.coefs_[0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, fit_weight, pattern", [
    ({}, -np.ones(40), "sample_weight must be non-negative, got a minimum of -1.0"),
    ({"class_weight": {0: -1, 1: 1}}, None, "class_weight must be non-negative"),
    ({"class_weight": {0: np.nan, 1: 1}}, None, "class_weight must be finite, got nan"),
    ({"class_weight": {0: 0, 1: 0}}, None, "class_weight must have a positive sum"),
])
def test_bad_weights_are_named(kwargs, fit_weight, pattern):
    with pytest.raises(ValueError, match=pattern):
        MLPClassifier(max_iter=1, **kwargs).fit(_X, _YC, sample_weight=fit_weight)


@pytest.mark.parametrize("change", [{"hidden_layer_sizes": (7, 3)}, {"activation": "tanh"},
                                    {"dtype": "float64"}, {"dropout": 0.5},
                                    {"batch_norm": True}])
def test_warm_start_and_partial_fit_refuse_a_changed_architecture(change):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPRegressor(max_iter=2, warm_start=True, random_state=0).fit(_X, _YR)
        model.set_params(max_iter=3, learning_rate_init=0.01)  # not the architecture: trains on
        model.fit(_X, _YR)
        assert model.n_iter_ == 3 and len(model.loss_curve_) == 5
        before = model.predict(_X)
        model.set_params(**change)
        name = next(iter(change))
        with pytest.raises(ValueError, match=f"fit with warm_start=True .*{name}="):
            model.fit(_X, _YR)
        np.testing.assert_array_equal(model.predict(_X), before)
        online = MLPClassifier().partial_fit(_X, _YC, classes=[0, 1])
        online.set_params(**change)
        with pytest.raises(ValueError, match=f"partial_fit .*{name}="):
            online.partial_fit(_X, _YC)


@pytest.mark.parametrize("call", ["fit_x", "fit_y", "predict", "fit_sparse"])
def test_values_beyond_float32_are_named_not_reported_as_inf(call):
    from scipy import sparse

    model = MLPRegressor(max_iter=1)
    big = _X * 1e300
    with warnings.catch_warnings(), pytest.raises(ValueError) as info:
        warnings.simplefilter("ignore", ConvergenceWarning)
        if call == "fit_x":
            model.fit(big, _YR)
        elif call == "fit_y":
            model.fit(_X, _YR * 1e38)
        elif call == "predict":
            model.fit(_X, _YR).predict(big)
        else:
            model.fit(sparse.csr_matrix(big), _YR)
    name = "y" if call == "fit_y" else "X"
    assert str(info.value).startswith(f"{name} holds values beyond the range of float32")


def test_wide_sparse_input_is_predicted_in_chunks_with_the_dense_results():
    from scipy import sparse

    rng = np.random.RandomState(0)
    n, d = 300, 2**16  # a chunk of 64 MiB holds 85 rows of this width: four chunks
    X = sparse.random(n, d, density=5 / d, format="csr", random_state=rng)
    y = rng.randint(0, 3, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X.toarray()))


def test_stochastic_solvers_refuse_sparse_batches_too_large_to_densify(monkeypatch):
    from scipy import sparse

    import mlpcore.sklearn as mcsk

    X = sparse.csr_matrix(_X.astype(np.float64))  # 3 features: 36 bytes a row, both copies
    monkeypatch.setattr(mcsk, "_SPARSE_BATCH_MAX_BYTES", 10 * 36)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPRegressor(batch_size=10, max_iter=2).fit(X, _YR)
        with pytest.raises(ValueError, match=r"X is sparse with 3 features: each batch of 11 "
                           r"rows.*use batch_size=10 or less"):
            MLPRegressor(batch_size=11, max_iter=2).fit(X, _YR)
        monkeypatch.setattr(mcsk, "_SPARSE_BATCH_MAX_BYTES", 20)
        with pytest.raises(ValueError, match="a single row is too wide"):
            MLPClassifier(batch_size=1, max_iter=2).partial_fit(X, _YR > 0, classes=[False, True])


def test_lbfgs_refuses_a_sparse_x_too_large_to_densify(monkeypatch):
    from scipy import sparse

    import mlpcore.sklearn as mcsk

    monkeypatch.setattr(mcsk, "_LBFGS_SPARSE_MAX_BYTES", 500)
    X = sparse.csr_matrix(_X)  # 40 x 3 float32: 480 bytes dense
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPRegressor(solver="lbfgs", max_iter=2).fit(X, _YR)
    with pytest.raises(ValueError, match=r"solver='lbfgs' .*shape \(80, 3\).*use solver='adam'"):
        MLPRegressor(solver="lbfgs", max_iter=2).fit(sparse.vstack([X, X]), np.r_[_YR, _YR])


@pytest.mark.parametrize("bad", ["nan_x", "features", "sample_weight", "class_weight"])
def test_a_refused_refit_leaves_the_fitted_estimator_as_it_was(bad):
    """The input checks set classes_ and n_features_in_ as they go: a refit they refuse
    restores them (predictions, classes and feature count unchanged)."""
    rng = np.random.RandomState(0)
    X, y = rng.rand(30, 3), np.arange(30) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    proba = est.predict_proba(X)
    X_bad, y_new, kwargs = X.copy(), y + 10, {}
    if bad == "nan_x":
        X_bad[0, 0] = np.nan
    elif bad == "features":
        X_bad = np.full((30, 5), np.nan)
    elif bad == "sample_weight":
        kwargs["sample_weight"] = -np.ones(30)
    else:
        est.set_params(class_weight={10: "x"})
    with pytest.raises((ValueError, TypeError)):
        est.fit(X_bad, y_new, **kwargs)
    assert list(est.classes_) == [0, 1, 2] and est.n_features_in_ == 3
    np.testing.assert_array_equal(est.predict_proba(X), proba)


@pytest.mark.parametrize("patience", [np.inf, 10**30])
def test_n_iter_no_change_may_be_infinite(patience):
    model = MLPRegressor(n_iter_no_change=patience, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(_X, _YR)
    assert model.n_iter_ == 3


def test_a_dataframe_of_sparse_columns_fits_as_sparse_input():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(_X).astype(pd.SparseDtype("float64", 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPRegressor(max_iter=3, random_state=0).fit(frame, _YR)
        b = MLPRegressor(max_iter=3, random_state=0).fit(frame.sparse.to_coo().tocsr(), _YR)
    np.testing.assert_array_equal(a.predict(_X), b.predict(_X))
    with_nan = _X.copy()
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPRegressor(max_iter=3).fit(pd.DataFrame(with_nan).astype(pd.SparseDtype("float64", 0.0)),
                                     _YR)


def test_a_second_warm_fit_warns_at_max_iter_as_the_first():
    model = MLPRegressor(max_iter=2, warm_start=True, random_state=0)
    for _ in range(2):
        with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
            model.fit(_X, _YR)


def test_assigning_into_coefs_and_intercepts_writes_the_network():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(_X, _YC)
    est.coefs_[-1] = np.zeros_like(est.coefs_[-1])
    est.intercepts_[-1] = np.zeros_like(est.intercepts_[-1])
    np.testing.assert_array_equal(est.model_.layers[-1].weight, 0)
    np.testing.assert_allclose(est.predict_proba(_X), 0.5)
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape \(.*\), got \(2, 2\)"):
        est.coefs_[0] = np.ones((2, 2))
    with pytest.raises(ValueError, match="coefs_ must be a list of 2 arrays"):
        est.coefs_ = [np.ones((2, 2))]
    with pytest.raises(NotFittedError, match="intercepts_ can be assigned only on a fitted"):
        MLPClassifier().intercepts_ = [np.zeros(4), np.zeros(1)]
    assert type(pickle.loads(pickle.dumps(est.coefs_))) is list


@pytest.mark.parametrize("kind", ["strings", "bytes", "datetime", "timedelta"])
def test_non_numeric_x_is_a_type_error_in_fit_and_predict(kind):
    values = {"strings": _X.astype(str), "bytes": _X.astype(bytes),
              "datetime": np.zeros(_X.shape, "datetime64[s]"),
              "timedelta": np.zeros(_X.shape, "timedelta64[s]")}[kind]
    with pytest.raises(TypeError, match="X must hold numbers, got an array of dtype"):
        MLPRegressor(max_iter=1).fit(values, _YR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPRegressor(max_iter=1).fit(_X, _YR)
    with pytest.raises(TypeError, match="X must hold numbers"):
        model.predict(values)
    with pytest.raises(TypeError, match="y must hold numbers"):
        MLPRegressor(max_iter=1).fit(_X, _YR.astype(str))


def test_class_weight_checks():
    with pytest.raises(TypeError, match=r"class_weight\[0\] must be a number, got str"):
        MLPClassifier(max_iter=1, class_weight={0: "x", 1: 1.0}).fit(_X, _YC)
    with pytest.raises(ValueError, match="class_weight='balanced' is not supported for partial"):
        MLPClassifier(class_weight="balanced").partial_fit(_X, _YC, classes=[0, 1])


def test_a_boolean_learning_rate_is_one_as_in_scikit_learn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPRegressor(learning_rate_init=True, max_iter=2, random_state=0).fit(_X, _YR)
        same = MLPRegressor(learning_rate_init=1.0, max_iter=2, random_state=0).fit(_X, _YR)
    np.testing.assert_array_equal(ours.predict(_X), same.predict(_X))
