"""The binary wheel installs where no compiler is available and trains.

Slow (it builds the wheel, about 2 minutes on 2 cores from a cold build directory, and installs
it with its dependencies into a fresh virtual environment), so it runs only when asked:

    MLPCORE_TEST_WHEEL=build python -m pytest tests/test_wheel.py    # pip wheel . first
    MLPCORE_TEST_WHEEL=dist/mlpcore-0.1.0-cp311-...whl python -m pytest tests/test_wheel.py

.ci/run does not set it; cibuildwheel (pyproject.toml) tests every wheel it builds.
"""
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEEL = os.environ.get("MLPCORE_TEST_WHEEL", "")
pytestmark = pytest.mark.skipif(not WHEEL, reason="set MLPCORE_TEST_WHEEL=build or =PATH.whl")

COMPILERS = ("cc", "c++", "gcc", "g++", "clang", "clang++", "cmake", "ninja")
TRAIN = textwrap.dedent("""
    import numpy as np
    import mlpcore as mc

    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = mc.Sequential([mc.Dense(4, 16), mc.ReLU(), mc.Dense(16, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=0.01))
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    print(mc.__file__)
    print(model.evaluate(x, y)["accuracy"])
""")


def _wheel(tmp_path: Path) -> Path:
    if WHEEL != "build":
        path = Path(WHEEL)
        if not path.is_file() or path.suffix != ".whl":
            raise ValueError(f"MLPCORE_TEST_WHEEL: expected 'build' or a .whl file, got {WHEEL!r}")
        return path
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("mlpcore-*.whl")
    return wheel


def _no_compiler_env(tmp_path: Path, env_bin: Path) -> dict:
    """PATH with the venv first, then stand-ins for every compiler and build tool that fail."""
    fake = tmp_path / "no-compilers"
    fake.mkdir()
    for name in COMPILERS:
        tool = fake / name
        tool.write_text(f"#!/bin/sh\necho 'no {name}: the wheel must not compile' >&2\nexit 1\n")
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CMAKE_ARGS")}
    env.update(PATH=os.pathsep.join([str(env_bin), str(fake), env.get("PATH", "")]),
               CC="false", CXX="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="the compiler stand-ins are shell scripts")
def test_wheel_installs_without_a_compiler_and_trains(tmp_path):
    wheel = _wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env_bin = env_dir / "bin"
    env = _no_compiler_env(tmp_path, env_bin)
    python = str(env_bin / "python")
    # --only-binary: neither mlpcore nor a dependency may be built from source
    install = subprocess.run([python, "-m", "pip", "install", "--only-binary", ":all:", str(wheel)],
                             env=env, cwd=tmp_path, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    run = subprocess.run([python, "-c", TRAIN], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    where, accuracy = run.stdout.split()
    assert Path(where).resolve().is_relative_to(env_dir.resolve())  # the wheel, not the checkout
    assert float(accuracy) > 0.9
