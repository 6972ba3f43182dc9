"""mlpcore's exceptions live in mlpcore.errors and stay importable where they were."""
import mlpcore as mc
import mlpcore.errors
import mlpcore.model


def test_non_finite_loss_error_is_one_class_in_three_places():
    assert mc.NonFiniteLossError is mlpcore.errors.NonFiniteLossError
    assert mlpcore.model.NonFiniteLossError is mlpcore.errors.NonFiniteLossError
    assert issubclass(mc.NonFiniteLossError, FloatingPointError)  # numpy-style catch works
