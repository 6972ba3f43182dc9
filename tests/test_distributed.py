"""mlpcore.distributed: a size-1 no-op without MPI; under ``mpiexec -n 2`` and ``-n 3``
(subprocesses, skipped when mpi4py or mpiexec is absent) the same weights as one process on
the same global batches, bitwise-reproducible runs, identical replicas, every rank stopping
when one fails, and resuming a checkpoint with another rank count."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import distributed

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mpi_worker  # noqa: E402

TIMEOUT = 120  # seconds: a hang fails the test instead of blocking the suite
REL = 1e-12


@pytest.fixture
def no_mpi(monkeypatch):
    """A process outside any MPI launcher, with mpi4py not importable."""
    for var in distributed._LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_WORLD", None)


def test_size_one_without_mpi4py(no_mpi):
    comm = distributed.init()
    assert (comm.rank, comm.size) == (0, 1)
    model = mpi_worker.build("adam", 0.05)
    before = model.params_view().copy()
    distributed.broadcast_model(model, comm)
    np.testing.assert_array_equal(model.params_view(), before)
    model.grads_view()[...] = 2.0
    distributed.allreduce_gradients(model, comm, scale=1.0)
    np.testing.assert_array_equal(model.grads_view(), 2.0)
    # distributed=True in one process is plain fit, bit for bit
    plain, h_plain = mpi_worker.train("adam", 0.05, False)
    dist, h_dist = mpi_worker.train("adam", 0.05, True)
    np.testing.assert_array_equal(dist.params_view(), plain.params_view())
    assert h_dist["val_loss"] == h_plain["val_loss"]


def test_launcher_without_mpi4py_says_what_to_install(no_mpi, monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    with pytest.raises(ImportError, match=r"mlpcore\[mpi\]"):
        distributed.Communicator()


def test_allreduce_gradients_scales_then_sums_in_one_process(no_mpi):
    model = mpi_worker.build("sgd", None)
    x, y, w, _, _ = mpi_worker.data()
    model.compute_gradients(x[:10], y[:10])
    expected = model.grads_view() * 0.25
    distributed.allreduce_gradients(model, distributed.init(), scale=0.25)
    np.testing.assert_array_equal(model.grads_view(), expected)


def test_apply_gradients_is_one_update_and_refuses_nan():
    x, y, w, _, _ = mpi_worker.data()
    a, b = mpi_worker.build("adam", 0.05), mpi_worker.build("adam", 0.05)
    a.train_step(x[:16], y[:16], sample_weight=w[:16])
    loss, correct = b.compute_gradients(x[:16], y[:16], sample_weight=w[:16],
                                        return_correct=True)
    assert 0 <= correct <= 16
    b.apply_gradients()
    np.testing.assert_array_equal(a.params_view(), b.params_view())
    b.grads_view()[0] = np.nan
    before = b.params_view().copy()
    with pytest.raises(mc.NonFiniteLossError, match="apply_gradients"):
        b.apply_gradients()
    np.testing.assert_array_equal(b.params_view(), before)


# --- under mpiexec ----------------------------------------------------------------------------
def _mpiexec():
    pytest.importorskip("mpi4py")
    found = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    return found


def _run(n: int, *args, check: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(mc.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable,
                           str(HERE / "mpi_worker.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mpiexec -n {n} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def single_process():
    """The reference: plain fit in this process on the same global batches."""
    out = {}
    for optimizer, clip in mpi_worker.CONFIGS:
        model, history = mpi_worker.train(optimizer, clip, False)
        out.update(mpi_worker.results(model, history, f"{optimizer}-{clip}-"))
    return out


def _max_relative(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_match_one_process(ranks, single_process, tmp_path):
    _run(ranks, "train", tmp_path / "a.npz")
    _run(ranks, "train", tmp_path / "b.npz")
    first, second = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for optimizer, clip in mpi_worker.CONFIGS:
        p = f"{optimizer}-{clip}-"
        assert first[f"{p}replicas_identical"], p
        # run to run: bit for bit
        np.testing.assert_array_equal(first[f"{p}params"], second[f"{p}params"])
        ref = single_process[f"{p}params"]
        assert _max_relative(first[f"{p}params"], ref) <= REL, p
        assert not np.array_equal(first[f"{p}params"],
                                  single_process[f"{optimizer}-None-params"]) or clip is None
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(first[f"{p}{key}"], single_process[f"{p}{key}"],
                                       rtol=1e-10, err_msg=f"{p}{key}")


def test_clipping_changes_the_reference(single_process):
    """The clipped configurations really clip (else the 'with clipping' cases prove nothing)."""
    for optimizer in ("sgd", "adam"):
        assert _max_relative(single_process[f"{optimizer}-0.05-params"],
                             single_process[f"{optimizer}-None-params"]) > 1e-3


def test_a_failing_rank_stops_every_rank():
    proc = _run(2, "fail-in-fit", check=False)
    assert proc.returncode != 0
    out = proc.stdout
    assert "rank 0 stopped: rank 1 failed at epoch 1, step 3: ValueError: injected failure" in out
    assert "rank 1 stopped: rank 1 failed at epoch 1, step 3" in out
    assert "finished without an error" not in out


def test_a_nan_on_one_rank_stops_every_rank():
    proc = _run(2, "nan-in-fit", check=False)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} stopped: fit: the loss or a gradient became non-finite at " \
               "epoch 1, step 3" in proc.stdout


def test_a_nan_loss_on_one_rank_stops_every_rank():
    """A non-finite loss leaves the previous step's gradients in the arena: the rank sends
    NaN instead, so no stale gradient is applied anywhere."""
    proc = _run(2, "nan-loss-in-fit", check=False)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} stopped: fit: the loss or a gradient became non-finite at " \
               "epoch 1, step 3" in proc.stdout, proc.stdout + proc.stderr


def test_a_killed_rank_ends_the_job():
    """The launcher ends the job when a rank dies (rank 0 is then inside an allreduce)."""
    proc = _run(2, "killed-in-fit", check=False)
    assert proc.returncode != 0


def test_ranks_with_different_data_refuse_instead_of_hanging():
    proc = _run(2, "mismatch", check=False)
    assert proc.stdout.count("refused: fit(distributed=True): every rank must pass the same") \
        == 2


def test_an_uncaught_exception_aborts_the_job():
    """Rank 0 waits in a barrier that rank 1 never reaches: without the abort hook of init()
    the job would hang until the timeout. (The launcher sometimes drops the aborting rank's
    last output, so only the exit status is checked.)"""
    proc = _run(2, "fail-outside-fit", check=False)
    assert proc.returncode != 0
    assert "rank 0 passed the barrier" not in proc.stdout


def test_resume_with_another_rank_count(tmp_path):
    ckpt = tmp_path / "ck.safetensors"
    _run(2, "resume-save", ckpt)
    _run(3, "resume-load", ckpt, tmp_path / "resumed.npz")
    straight, _ = mpi_worker.train("adam", 0.05, False)
    resumed = np.load(tmp_path / "resumed.npz")["params"]
    assert _max_relative(resumed, straight.params_view()) <= REL


def test_callbacks_act_once_and_every_rank_follows(tmp_path):
    _run(3, "callbacks", tmp_path, tmp_path / "out.npz")
    out = np.load(tmp_path / "out.npz")
    assert out["replicas_identical"]  # the same learning rates and stop on every rank
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref, ref_history = mpi_worker.with_callbacks(str(ref_dir), 0)
    np.testing.assert_allclose(out["lr"], ref_history["lr"], rtol=1e-15)
    assert len(out["lr"]) == 2  # stopped early, restored epoch 1's weights
    assert _max_relative(out["params"], ref.params_view()) <= REL
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert written == ["out.npz", "rank0-1.safetensors", "rank0-2.safetensors", "rank0.csv"]
    assert (tmp_path / "rank0.csv").read_text() .count("\n") == 3  # header + 2 epochs


def test_dropout_differs_per_rank_reproducibly_and_batchnorm_stays_replicated(tmp_path):
    _run(2, "dropout-bn", tmp_path / "a.npz")
    _run(2, "dropout-bn", tmp_path / "b.npz")
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["distinct_dropout"] and a["replicas_identical"]
    np.testing.assert_array_equal(a["params"], b["params"])


@pytest.fixture(scope="module")
def sync_bn_single_process():
    out = {}
    for optimizer, clip, batch, _ in mpi_worker.SYNC_CONFIGS:
        model, history = mpi_worker.train_sync_bn(optimizer, clip, batch, False)
        out.update(mpi_worker.sync_bn_results(model, history, f"{optimizer}-{clip}-"))
    return out


@pytest.mark.parametrize("ranks", [2, 3])
def test_synchronized_batchnorm_matches_one_process(ranks, sync_bn_single_process, tmp_path):
    """BatchNorm1d(synchronized=True): N ranks give one process's weights, running statistics
    and losses on the same global batches (with 3 ranks and batch 17 the last batch of 2 rows
    leaves rank 0 an empty shard, and its running statistics come from the last rank)."""
    _run(ranks, "sync-bn", tmp_path / "a.npz")
    _run(ranks, "sync-bn", tmp_path / "b.npz")
    first, second = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for optimizer, clip, _, tolerance in mpi_worker.SYNC_CONFIGS:
        p = f"{optimizer}-{clip}-"
        assert first[f"{p}replicas_identical"], p
        np.testing.assert_array_equal(first[f"{p}weights"], second[f"{p}weights"])
        ref = sync_bn_single_process[f"{p}weights"]
        assert _max_relative(first[f"{p}weights"], ref) <= tolerance, p
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(first[f"{p}{key}"], sync_bn_single_process[f"{p}{key}"],
                                       rtol=1e-10, err_msg=f"{p}{key}")


def test_local_batchnorm_differs_from_one_process(sync_bn_single_process, tmp_path):
    """The same network with per-rank statistics (the default, as DDP) does not match one
    process, so the test above proves the synchronisation."""
    _run(2, "local-bn", tmp_path / "local.npz")
    local = np.load(tmp_path / "local.npz")["weights"]
    assert _max_relative(local, sync_bn_single_process["sgd-None-weights"]) > 1e-3


def test_a_failing_rank_stops_every_rank_inside_synchronized_batchnorm():
    """Rank 1 raises before its pass while rank 0 waits in a BatchNorm allreduce: rank 1 makes
    the step's remaining statistic reductions (NaN), so both stop with the shared error."""
    proc = _run(2, "sync-bn-fail", check=False)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} stopped: rank 1 failed at epoch 1, step 3: ValueError: injected " \
               "failure" in proc.stdout, proc.stdout + proc.stderr


def test_cli_ranks(tmp_path):
    _mpiexec()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(mc.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mlpcore", "train", "--ranks", "2",
                           "--epochs", "2", "--quiet", "--save", str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy:") == 1  # one report, from rank 0
    assert mc.load(tmp_path / "m.safetensors").num_params > 0
