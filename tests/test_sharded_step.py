"""The sharded training step (cpp/net/network_shards.cpp): a batch of at least 32 rows, in a
network without BatchNorm or active Dropout whose activations outweigh its parameters, is cut
into two halves taken through forward, loss and backward separately, and the two parameter
gradients are added. It must give the gradients of the whole batch, and the same bits for any
thread count."""
import numpy as np
import pytest

import mlpcore as mc
from helpers import dense_arrays, epochs_by_train_step, same_bits


def _norm(n_features, x):
    norm = mc.Normalization()
    norm.adapt(x)
    return norm


def _model(x, dtype, seed=3):
    """Every kind a sharded step takes: Normalization, Dense + fused and separate activations,
    LayerNorm, Residual, Dropout(0)."""
    k = x.shape[1]
    return mc.Sequential([_norm(k, x), mc.Dense(k, 160), mc.ReLU(), mc.LayerNorm(160),
                          mc.Residual([mc.Dense(160, 160), mc.Tanh()]), mc.Dropout(0.0),
                          mc.Dense(160, 96), mc.GELU(), mc.Dense(96, 5)],
                         dtype=dtype, seed=seed)


def _data(n, k=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * 3 + 1
    return x, rng.integers(0, classes, size=n)


def _gradients(model, x, y, **kwargs):
    loss, dx = model.compute_gradients(x, y, return_input_grad=True, **kwargs)
    return loss, dx, model.grads_view().copy(), model._net.last_step_shards


@pytest.mark.parametrize("n", [32, 33, 64, 147, 200])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_sharded_gradients_are_those_of_the_whole_batch(n, loss):
    # detect_anomaly checks whole-batch blocks, so it keeps the step whole: the reference
    x, labels = _data(n)
    y = labels if loss == "cross_entropy" else np.eye(5)[labels] * 0.5
    weights = np.random.default_rng(1).uniform(0.1, 2.0, size=n)
    results = []
    for whole in (False, True):
        model = _model(x, "float64")
        model.compile(loss=loss, optimizer="adam", detect_anomaly=whole)
        results.append(_gradients(model, x.astype(np.float64), y, sample_weight=weights))
    (loss_cut, dx_cut, g_cut, parts_cut), (loss_whole, dx_whole, g_whole, parts_whole) = results
    assert (parts_cut, parts_whole) == (2, 1)
    assert loss_cut == pytest.approx(loss_whole, rel=1e-13)
    # dL/dx is computed row by row: the cut does not change a bit of it
    np.testing.assert_array_equal(dx_cut, dx_whole)
    np.testing.assert_allclose(g_cut, g_whole, rtol=1e-11, atol=1e-14)
    assert np.abs(g_cut).max() > 0


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sharded_training_bits_do_not_depend_on_thread_count(dtype):
    x, y = _data(300)
    w = np.random.default_rng(2).uniform(0.5, 1.5, size=300)
    before = mc.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            mc.set_num_threads(threads)
            model = _model(x, dtype)
            model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-2),
                          metrics=["accuracy"])
            hist = model.fit(x, y, epochs=3, batch_size=64, sample_weight=w, verbose=0)
            step_loss = model.train_step(x[:40].astype(dtype), y[:40])
            results.append(dense_arrays(model) + [model.predict(x),
                                                  np.array(hist.history["loss"]),
                                                  np.array(hist.history["accuracy"]),
                                                  np.array([step_loss])])
    finally:
        mc.set_num_threads(before)
    assert same_bits(results[0], results[1])


def test_small_batches_batchnorm_and_dropout_keep_the_whole_batch_step():
    # the step is cut only where the cut cannot change what the layers compute: with
    # BatchNorm (batch statistics), active Dropout (one random sequence), fewer than 32 rows or
    # more parameters than activations,
    # the step with the anomaly check (always whole) gives the same bits as without it
    x, y = _data(64)
    nets = {
        "batchnorm": lambda: mc.Sequential([mc.Dense(12, 16), mc.BatchNorm1d(16), mc.ReLU(),
                                            mc.Dense(16, 5)], dtype="float64", seed=0),
        "dropout": lambda: mc.Sequential([mc.Dense(12, 16), mc.ReLU(), mc.Dropout(0.3),
                                          mc.Dense(16, 5)], dtype="float64", seed=0),
        "small": lambda: _model(x, "float64"),
        # parameters outweigh the 64 rows' activations: split product by product instead
        "wide": lambda: mc.Sequential([mc.Dense(12, 512), mc.ReLU(), mc.Dense(512, 512),
                                       mc.ReLU(), mc.Dense(512, 5)], dtype="float64", seed=0),
    }
    for name, make in nets.items():
        rows = 31 if name == "small" else 64
        results = []
        for whole in (False, True):
            model = make()
            model.compile(loss="cross_entropy", optimizer="sgd", detect_anomaly=whole)
            results.append(_gradients(model, x[:rows], y[:rows]))
        assert results[0][3] == results[1][3] == 1, name
        assert same_bits(list(results[0][1:3]), list(results[1][1:3])), name


def test_sharded_step_adds_l1_and_l2_gradients_and_measures_their_norm():
    # the halves' sum, the penalties' gradients and the norm are one pass per layer where only
    # an L2 term applies (add_into_squares) and three where an L1 term does
    x, y = _data(400)
    results = []
    for whole in (False, True):
        model = mc.Sequential([mc.Dense(12, 64, l2=0.3), mc.ReLU(),
                               mc.Dense(64, 48, l1=0.02, l2=0.1), mc.Tanh(), mc.Dense(48, 5)],
                              dtype="float64", seed=4)
        model.compile(loss="cross_entropy", optimizer="sgd", detect_anomaly=whole)
        loss, _, grads, parts = _gradients(model, x, y)
        results.append((loss, grads, parts, model._net.last_grad_norm))
    (loss_cut, g_cut, parts_cut, norm_cut), (loss_whole, g_whole, parts_whole, norm_whole) = results
    assert (parts_cut, parts_whole) == (2, 1)
    assert loss_cut == pytest.approx(loss_whole, rel=1e-13)
    np.testing.assert_allclose(g_cut, g_whole, rtol=1e-11, atol=1e-14)
    assert norm_cut == pytest.approx(float(np.linalg.norm(g_cut)), rel=1e-13)
    assert norm_cut == pytest.approx(norm_whole, rel=1e-11)


OPTIMIZERS = {
    "sgd-nesterov": lambda: mc.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: mc.optim.Adam(lr=1e-2),
    "adamw": lambda: mc.optim.AdamW(lr=1e-2, weight_decay=1e-2),
    "rmsprop": lambda: mc.optim.RMSprop(lr=1e-3, momentum=0.5),
    "adagrad": lambda: mc.optim.Adagrad(lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("clip", [{}, {"clip_norm": 0.05}, {"clip_value": 1e-3}])
def test_sharded_step_updates_in_its_threads_as_the_separate_update_does(name, clip):
    # train_step and the native loop apply the rule inside the sharded step's threads, each on
    # its part of the parameters; compute_gradients + apply_gradients update separately
    x, y = _data(96)
    models = []
    for _ in range(2):
        model = _model(x, "float32")
        model.compile(loss="cross_entropy", optimizer=OPTIMIZERS[name](), **clip)
        models.append(model)
    fused, separate = models
    xs = x.astype(np.float32)
    for step in range(3):
        rows = slice(step * 8, step * 8 + 80)
        fused.train_step(xs[rows], y[rows])
        assert fused._net.last_step_shards == 2
        separate.compute_gradients(xs[rows], y[rows])
        separate.apply_gradients()
    assert same_bits(dense_arrays(fused), dense_arrays(separate))
    state_f, state_s = fused.optimizer.state_dict(), separate.optimizer.state_dict()
    assert state_f["step"] == state_s["step"] == 3
    assert same_bits(list(state_f["state"].values()), list(state_s["state"].values()))


def test_sharded_step_refuses_a_non_finite_update_and_changes_nothing():
    x, y = _data(64)
    model = _model(x, "float32")
    model.compile(loss="mse", optimizer="adam")
    before = dense_arrays(model)
    target = np.zeros((64, 5), np.float32)
    target[3, 2] = np.float32(3e38)  # the squared error overflows in one row of the first half
    with pytest.raises(mc.NonFiniteLossError):
        model.train_step(x.astype(np.float32), target)
    assert model._net.last_step_shards == 2
    assert same_bits(dense_arrays(model), before)
    assert model.optimizer.state_dict()["step"] == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("clip", [{}, {"clip_norm": 1.0}])
def test_sharded_step_refuses_a_finite_loss_with_an_infinite_gradient(threads, clip):
    # A weight of 3e38 on an input column of zeros leaves the forward pass finite, and its L2
    # penalty (summed in double) the loss, but the penalty's gradient 2 * l2 * w overflows:
    # whichever thread decides whether the step applies (each on its own without clipping),
    # nothing may change.
    x, y = _data(64)
    x[:, 0] = 0.0
    before_threads = mc.get_num_threads()
    try:
        mc.set_num_threads(threads)
        model = mc.Sequential([mc.Dense(12, 160, l2=1.0), mc.ReLU(), mc.Dense(160, 96),
                               mc.ReLU(), mc.Dense(96, 5)], seed=3)
        model.compile(loss="cross_entropy", optimizer="adam", **clip)
        model.layers[0].weight[0, 7] = np.float32(3e38)
        before = dense_arrays(model)
        with pytest.raises(mc.NonFiniteLossError):
            model.train_step(x.astype(np.float32), y)
        assert model._net.last_step_shards == 2
        assert same_bits(dense_arrays(model), before)
        assert model.optimizer.state_dict()["step"] == 0
        model.layers[0].weight[0, 7] = 0.5  # and the next finite step applies
        assert np.isfinite(model.train_step(x.astype(np.float32), y))
        assert model.optimizer.state_dict()["step"] == 1
    finally:
        mc.set_num_threads(before_threads)


@pytest.mark.parametrize("one_hot", [False, True])
def test_training_accuracy_counts_the_rows_whose_first_largest_logit_is_the_class(one_hot):
    # The loss pass counts the correct rows itself (the rows' maxima are found there anyway):
    # with a learning rate of 0 an epoch's accuracy is the model's own accuracy on the data,
    # for sharded batches and for a small last batch.
    x, y = _data(212)
    model = _model(x, "float32")
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.0), metrics=["accuracy"])
    target = np.eye(5, dtype=np.float32)[y] if one_hot else y
    model.train_step(x[:100].astype(np.float32), target[:100])
    assert model._net.last_step_shards == 2
    hist = model.fit(x, target, epochs=1, batch_size=100, shuffle=False, verbose=0)
    assert model._net.last_step_shards == 1  # (the last batch, 12 rows)
    want = np.mean(np.argmax(model.predict(x), axis=1) == y)
    assert 0.0 < want < 1.0
    assert hist.history["accuracy"][0] == pytest.approx(want, abs=1e-12)


# Which steps are cut (shard_rows in network_shards.cpp). A step of small products (at most 2^21
# multiply-adds each) is cut from 2^19 multiply-adds of forward work, whatever its parameters
# weigh: uncut, it would run on one thread. A step with a larger product is cut only where its
# activations outweigh its parameters (and from 2^20 multiply-adds).
@pytest.mark.parametrize("sizes, rows, cut", [
    ((64, 128, 64, 10), 32, True),      # 17,226 parameters, 32 x 266 activations
    ((100, 100, 4), 64, True),
    ((64, 64, 64, 10), 32, False),      # 283,648 multiply-adds: less than 2^19
    ((64, 128, 64, 10), 31, False),     # fewer than 32 rows
    ((784, 128, 10), 32, False),        # a 3.2 M product; 101,770 parameters, 29,504 activations
    ((784, 128, 10), 160, True),        # 147,520 activations
])
def test_which_steps_are_cut(sizes, rows, cut):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [mc.Dense(fan_in, fan_out)] + ([mc.ReLU()] if i < len(sizes) - 2 else [])
    model = mc.Sequential(layers, dtype="float32", seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    x, y = _data(rows, k=sizes[0], classes=sizes[-1])
    assert _gradients(model, x, y)[3] == (2 if cut else 1)


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
def test_a_run_of_small_cut_steps_has_the_bits_of_one_thread():
    # batches of 32 rows through 64-128-64-10: cut, in the native loop's team at two threads
    x, y = _data(32 * 6 + 5, k=64, classes=10)
    xs = x.astype(np.float32)
    results = []
    for threads in (1, 2):
        model = mc.Sequential([mc.Dense(64, 128), mc.ReLU(), mc.Dense(128, 64), mc.ReLU(),
                               mc.Dense(64, 10)], dtype="float32", seed=0)
        model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-2))
        before = mc.get_num_threads()
        try:
            mc.set_num_threads(threads)
            hist = model.fit(xs, y, epochs=2, batch_size=32, verbose=0)
            model.train_step(xs[:32], y[:32])
            assert model._net.last_step_shards == 2
        finally:
            mc.set_num_threads(before)
        results.append(dense_arrays(model) + [np.array(hist.history["loss"])])
    assert same_bits(results[0], results[1])


# At two threads the native loop keeps one team of threads for a run's cut steps (a barrier
# between steps instead of a fork and a join each) and leaves it for an uncut step.
def _at_two_threads(run):
    before = mc.get_num_threads()
    try:
        mc.set_num_threads(2)
        return run()
    finally:
        mc.set_num_threads(before)


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_run_of_cut_steps_in_one_team_equals_train_step_batch_by_batch(name):
    # 2 x 80 + 20 rows: two cut batches and a short uncut one, each epoch
    x, y = _data(180)
    xs = x.astype(np.float32)
    models = []
    for _ in range(2):
        model = _model(x, "float32")
        model.compile(loss="cross_entropy", optimizer=OPTIMIZERS[name]())
        models.append(model)
    fitted, stepped = models
    history = _at_two_threads(lambda: fitted.fit(xs, y, epochs=3, batch_size=80, verbose=0))
    assert fitted._net.last_step_shards == 1  # the last step of the run was the short one
    losses = epochs_by_train_step(stepped, xs, y, 3, 80)  # one thread, a step per call
    assert same_bits(dense_arrays(fitted), dense_arrays(stepped))
    assert history.history["loss"] == losses
    state_f, state_s = fitted.optimizer.state_dict(), stepped.optimizer.state_dict()
    assert state_f["step"] == state_s["step"] == 9
    assert same_bits(list(state_f["state"].values()), list(state_s["state"].values()))


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("bad", ["index", "label", "non-finite"])
def test_a_run_in_one_team_stops_at_a_bad_batch_with_the_batches_before_applied(bad):
    x, y = _data(64 * 4)
    xs = x.astype(np.float32)
    order = np.arange(len(x), dtype=np.int64)
    if bad == "index":
        order[2 * 64 + 40] = 10**6  # in the third batch's second half
    elif bad == "label":
        y[2 * 64 + 3] = 5  # five classes: 0 .. 4
    else:
        xs[2 * 64 + 50] = np.inf  # (train_batches takes x as it is)
    models = []
    for _ in range(2):
        model = _model(x, "float32")
        model.compile(loss="cross_entropy", optimizer="adam")
        models.append(model)
    ran, reference = models

    def run():
        return ran._net.train_batches(xs, y, order, 64, 0, 4)

    if bad == "non-finite":
        loss_sum, _, done, ok, failed_loss = _at_two_threads(run)
        assert (done, ok) == (2, False) and not np.isfinite(failed_loss)
    else:
        with pytest.raises(ValueError, match="index 1000000 outside" if bad == "index"
                           else "class label 5 outside"):
            _at_two_threads(run)
    for lo in (0, 64):  # the two batches before, one thread
        reference.train_step(xs[lo:lo + 64], y[lo:lo + 64])
    assert same_bits(dense_arrays(ran), dense_arrays(reference))
    assert ran.optimizer.state_dict()["step"] == 2
    # and the model goes on from there
    assert np.isfinite(_at_two_threads(lambda: ran.train_step(xs[:64], y[:64])))
