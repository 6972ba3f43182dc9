"""Loss values and output gradients against the NumPy reference (and torch if present), the
numerical stability the fused deltas promise, and the loss table's errors."""
import numpy as np
import pytest

import mlpcore as mc
import reference
from helpers import identity_model, kernel_isa, usable_isas


def loss_and_grad(name, out, target, **compile_kw):
    model = identity_model(out.shape[1])
    model.compile(loss=name, optimizer="sgd", **compile_kw)
    return model.compute_gradients(out, target, return_input_grad=True)


def targets_for(name, rng, n, k):
    if name in ("bce", "bce_with_logits"):
        return rng.random((n, k))
    if name == "cross_entropy":
        return rng.integers(0, k, size=n)
    return rng.normal(size=(n, k))


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce_with_logits", "cross_entropy"])
def test_value_and_gradient_match_reference(name, rng):
    out = rng.normal(0, 2, size=(9, 4))
    target = targets_for(name, rng, 9, 4)
    loss, grad = loss_and_grad(name, out, target)
    ref_loss, ref_grad = reference.loss(name, out, target)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


def test_bce_on_probabilities_matches_reference(rng):
    # bce needs probabilities: a Sigmoid after the identity layer; dL/dx = dL/dp * p(1-p)
    x = rng.normal(size=(6, 3))
    t = rng.random((6, 3))
    model = identity_model(3, last=mc.Sigmoid())
    model.compile(loss="bce", optimizer="sgd")
    loss, dx = model.compute_gradients(x, t, return_input_grad=True)
    p = reference.sigmoid(x)
    ref_loss, ref_grad = reference.loss("bce", p, t)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(dx, ref_grad * p * (1 - p), rtol=1e-9, atol=1e-15)


def test_cross_entropy_with_class_probabilities(rng):
    out = rng.normal(size=(5, 4))
    t = rng.random((5, 4))
    t /= t.sum(axis=1, keepdims=True)
    loss, grad = loss_and_grad("cross_entropy", out, t)
    ref_loss, ref_grad = reference.loss("cross_entropy", out, t)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    # one-hot probabilities equal integer labels
    labels = rng.integers(0, 4, size=5)
    assert loss_and_grad("cross_entropy", out, np.eye(4)[labels])[0] == pytest.approx(
        loss_and_grad("cross_entropy", out, labels)[0], rel=1e-14)


def test_huber_delta(rng):
    out = rng.normal(0, 2, size=(7, 3))
    t = rng.normal(size=(7, 3))
    loss, grad = loss_and_grad("huber", out, t, huber_delta=0.5)
    ref_loss, ref_grad = reference.loss("huber", out, t, delta=0.5)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_deltas_are_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
    model = identity_model(3, dtype)
    model.compile(loss="cross_entropy", optimizer="sgd")
    loss, grad = model.compute_gradients(logits, np.array([1, 2, 0]), return_input_grad=True)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx((2e4 + 0 + np.log(2)) / 3, rel=1e-6)
    model = identity_model(3, dtype)
    model.compile(loss="bce_with_logits", optimizer="sgd")
    t = np.array([[1.0, 0.0, 0.5]] * 3)
    loss, grad = model.compute_gradients(logits, t, return_input_grad=True)
    assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_with_probabilities_of_exactly_zero_and_one(dtype):
    # saturated sigmoid outputs are exactly 0 and 1: loss clamps log at -100, no NaN anywhere
    x = np.array([[-1e4, 1e4, -1e4, 1e4]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    model = identity_model(4, dtype, last=mc.Sigmoid())
    model.compile(loss="bce", optimizer="sgd")
    loss, dx = model.compute_gradients(x, t, return_input_grad=True)
    assert loss == pytest.approx(50.0, rel=1e-6)  # two terms at the -100 clamp, mean over 4
    assert np.isfinite(dx).all()


def test_unknown_loss_lists_valid_names():
    model = identity_model(2)
    with pytest.raises(ValueError, match="valid names: .*cross_entropy.*mse"):
        model.compile(loss="hinge")
    with pytest.raises(TypeError, match="loss must be a str"):
        model.compile(loss=3)


def test_bce_requires_probability_outputs():
    with pytest.raises(ValueError, match="bce_with_logits"):
        identity_model(2).compile(loss="bce")


def test_classification_targets_are_checked(rng):
    model = identity_model(3)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match=r"class label 3 outside the valid range \[0, 2\]"):
        model.train_step(x, np.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="whole numbers"):
        model.train_step(x, np.array([0.0, 1.5, 2.0, 1.0]))
    model.compile(loss="bce_with_logits", optimizer="sgd")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.train_step(x, np.full((4, 3), 2.0))


TORCH_LOSSES = {"mse": "mse_loss", "mae": "l1_loss", "huber": "huber_loss",
                "bce_with_logits": "binary_cross_entropy_with_logits",
                "cross_entropy": "cross_entropy"}


@pytest.mark.parametrize("name", sorted(TORCH_LOSSES))
def test_matches_torch(name, rng):
    torch = pytest.importorskip("torch")
    out = rng.normal(0, 2, size=(8, 5))
    target = targets_for(name, rng, 8, 5)
    ot = torch.tensor(out, requires_grad=True)
    value = getattr(torch.nn.functional, TORCH_LOSSES[name])(ot, torch.tensor(target))
    value.backward()
    loss, grad = loss_and_grad(name, out, target)
    assert loss == pytest.approx(value.item(), rel=1e-12)
    np.testing.assert_allclose(grad, ot.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "bce_with_logits", "cross_entropy"])
def test_sample_weights_follow_keras_semantics(name, rng):
    # weighted loss = mean over samples of w_i * (sample i's loss, a mean over its outputs)
    out = rng.normal(0, 2, size=(6, 3))
    target = targets_for(name, rng, 6, 3)
    w = rng.uniform(0, 3, size=6)
    model = identity_model(3)
    model.compile(loss=name, optimizer="sgd")
    loss, grad = model.compute_gradients(out, target, sample_weight=w, return_input_grad=True)
    per_sample = [reference.loss(name, out[i:i + 1], target[i:i + 1])[0] for i in range(6)]
    per_sample_grad = np.vstack([reference.loss(name, out[i:i + 1], target[i:i + 1])[1]
                                 for i in range(6)])
    assert loss == pytest.approx(np.mean(w * np.array(per_sample)), rel=1e-12)
    np.testing.assert_allclose(grad, w[:, None] * per_sample_grad / 6, rtol=1e-10, atol=1e-15)
    assert model.evaluate(out, target, sample_weight=w)["loss"] == pytest.approx(loss, rel=1e-12)
    ones = model.compute_gradients(out, target, sample_weight=np.ones(6))
    assert ones == pytest.approx(model.compute_gradients(out, target), rel=1e-14)


def test_sample_weight_errors(rng):
    model = identity_model(3)
    model.compile(loss="mse", optimizer="sgd")
    x = rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        model.train_step(x, x, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        model.train_step(x, x, sample_weight=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        model.evaluate(x, x, sample_weight=np.array([1.0, np.nan, 1.0, 1.0]))


@pytest.mark.parametrize("alias, name", [("categorical_crossentropy", "cross_entropy"),
                                         ("sparse_categorical_crossentropy", "cross_entropy"),
                                         ("binary_crossentropy", "bce"),
                                         ("mean_squared_error", "mse")])
def test_keras_loss_names_are_aliases(alias, name):
    assert mc.losses.get_loss(alias) is mc.losses.get_loss(name)
    assert mc.losses.get_loss(alias.upper()).name == name


def test_keras_categorical_crossentropy_takes_logits_and_one_hot_targets(rng):
    x = rng.normal(size=(8, 2))
    labels = rng.integers(0, 2, size=8)
    losses = []
    for name, y in (("categorical_crossentropy", np.eye(2)[labels]),
                    ("sparse_categorical_crossentropy", labels), ("cross_entropy", labels)):
        model = identity_model(2)
        model.compile(loss=name)
        losses.append(model.evaluate(x, y)["loss"])
    assert losses[0] == pytest.approx(losses[2], rel=1e-12)
    assert losses[1] == losses[2]


@pytest.mark.parametrize("n, k", [(400, 70), (203, 10)])
def test_float32_softmax_exponential_is_within_a_few_ulp(n, k):
    # float32 cross-entropy computes exp(x - max) with its own vectorised exponential (within 2
    # ulp of the exact value): the gradient (softmax - one_hot) / n against float64 NumPy, over
    # 70 classes (more than one 64-column chunk, rows one at a time) or 10 (rows in blocks of 8,
    # then the rest one at a time) and logits spread over the whole float range down to where
    # the exponential underflows
    rng = np.random.default_rng(5)
    logits = rng.uniform(-95.0, 5.0, size=(n, k)).astype(np.float32)
    logits[:40] = rng.uniform(-1.0, 1.0, size=(40, k))  # every class contributes
    labels = rng.integers(0, k, size=n)
    model = identity_model(k, "float32")
    model.compile(loss="cross_entropy", optimizer="sgd")
    loss, grad = model.compute_gradients(logits, labels, return_input_grad=True)
    z = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)  # rounded to float32 as the model does
    e = np.exp(shifted.astype(np.float64))
    softmax = e / e.sum(axis=1, keepdims=True)
    want = softmax.copy()
    want[np.arange(n), labels] -= 1.0
    want /= n
    others = np.ones((n, k), bool)
    others[np.arange(n), labels] = False
    # 5 ulp: the exponential, then two roundings; (p - 1) / n for the label's column cancels,
    # so there the error is that of p, a few ulp of 1, over n
    np.testing.assert_allclose(grad[others], want[others], rtol=6e-7, atol=1e-36)
    np.testing.assert_allclose(grad[~others], want[~others], rtol=0, atol=1e-6 / n)
    lse = np.log(e.sum(axis=1)) + z.max(axis=1)
    assert loss == pytest.approx(np.mean(lse - z[np.arange(n), labels]), rel=1e-6)


def _loss_results(name, dtype, out, target, weights):
    # (bce takes probabilities: a Sigmoid after the identity layer)
    model = identity_model(out.shape[1], dtype, last=mc.Sigmoid() if name == "bce" else None)
    model.compile(loss=name, optimizer="sgd")
    loss, grad = model.compute_gradients(out, target, sample_weight=weights,
                                         return_input_grad=True)
    scores = model.evaluate(out, target, sample_weight=weights)  # the loss without gradients
    return loss, grad.tobytes(), scores


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, probabilities", [
    ("mse", False), ("mae", False), ("huber", False), ("bce", False), ("bce_with_logits", False),
    ("cross_entropy", False), ("cross_entropy", True)])
def test_every_isa_copy_of_the_losses_gives_the_same_bits(name, probabilities, dtype):
    # the losses run in the element-wise copy of the active ISA (kernels/isa_regions.hpp):
    # value, gradient, evaluate's loss and accuracy agree bit for bit across the copies, for
    # class counts below, at and above the 8-row blocks' limit of 64 and batches that are and
    # are not a multiple of the block
    rng = np.random.default_rng(11)
    isas = usable_isas()
    for n, k in [(1, 1), (9, 4), (16, 10), (37, 64), (21, 65), (13, 130)]:
        out = rng.normal(0, 3, size=(n, k))
        if probabilities:
            target = rng.random((n, k))
            target /= target.sum(axis=1, keepdims=True)
        else:
            target = targets_for(name, rng, n, k)
        weights = rng.random(n) + 0.5
        for w in (None, weights):
            results = {}
            for isa in isas:
                with kernel_isa(isa):
                    results[isa] = _loss_results(name, dtype, out, target, w)
            first = results[isas[0]]
            assert np.isfinite(first[0]), (n, k)
            for isa in isas[1:]:
                assert results[isa] == first, (name, n, k, isa, w is None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("soft, weighted", [(False, False), (False, True), (True, True)])
def test_cross_entropy_rows_in_blocks_and_alone_give_the_same_bits(dtype, soft, weighted):
    # Up to 64 classes, rows are taken 8 at a time (exponentials and the labels' scaling as one
    # run over the block) and the rows after the last whole block one by one: the same row,
    # placed once in a block and once at the tail of the same batch, gets the same gradient
    # bits.
    rng = np.random.default_rng(31)
    for k in (1, 3, 10, 64):
        n = 17  # rows 0-15 in two blocks, row 16 alone
        logits = rng.normal(0, 4, size=(n, k))
        logits[16] = logits[3]
        if soft:
            target = rng.random((n, k))
            target /= target.sum(axis=1, keepdims=True)
            target[16] = target[3]
        else:
            target = rng.integers(0, k, size=n)
            target[16] = target[3]
        weights = rng.random(n) + 0.5 if weighted else None
        if weighted:
            weights[16] = weights[3]
        model = identity_model(k, dtype)
        model.compile(loss="cross_entropy", optimizer="sgd")
        loss, grad = model.compute_gradients(logits, target, sample_weight=weights,
                                             return_input_grad=True)
        assert grad[16].tobytes() == grad[3].tobytes(), k
        assert np.isfinite(loss)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_accuracy_takes_the_first_largest_logit(dtype):
    # correct predictions: the row's first largest logit (NumPy's argmax) against the label,
    # rows in blocks of 8 and then one by one, logits with many ties
    rng = np.random.default_rng(32)
    for k in (2, 10, 70):
        n = 37
        logits = rng.integers(-2, 3, size=(n, k)).astype(dtype)
        labels = rng.integers(0, k, size=n)
        labels[:20] = np.argmax(logits[:20], axis=1)
        model = identity_model(k, dtype)
        model.compile(loss="cross_entropy", optimizer="sgd")
        want = np.mean(np.argmax(logits, axis=1) == labels)
        assert model.evaluate(logits, labels)["accuracy"] == want, k
