"""Fuzz target for mlpcore.load / mlpcore.load_checkpoint.

    python tests/hostile/fuzz_load.py [--seconds 60] [--runs N] [--seed S]

With atheris installed the search is coverage-guided over the Python reader (libFuzzer mutations
mixed with mutate.py's header-aware ones); without it, seeded random mutations of valid files
(mutate.py) run for the given time or number of inputs. A finding is anything other than a model
or a ValueError / OSError: another exception type (printed with the input, saved as
``fuzz-finding-*.safetensors`` in the current folder), a crash or a hang of the native code.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import make_corpus  # noqa: E402
from mutate import mutate  # noqa: E402

CLEAN = (ValueError, OSError)


def check_one(data: bytes, path: Path, mc) -> None:
    """Load ``data`` as a model and as a checkpoint: a model or a clean error, nothing else."""
    path.write_bytes(data)
    for load in (mc.load, mc.load_checkpoint):
        try:
            load(path)
        except CLEAN:
            pass


def _finding(data: bytes, exc: BaseException) -> None:
    name = f"fuzz-finding-{abs(hash(data)) % 10**8}.safetensors"
    Path(name).write_bytes(data)
    print(f"FINDING: {type(exc).__name__}: {exc} (input saved as {name})", file=sys.stderr)


def run_random(seeds, seconds: float, runs: int, seed: int, folder: Path) -> int:
    import mlpcore as mc

    rng, path = random.Random(seed), folder / "input.safetensors"
    start, done, findings = time.monotonic(), 0, 0
    while done < runs and time.monotonic() - start < seconds:
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng)
        try:
            check_one(data, path, mc)
        except Exception as exc:  # noqa: BLE001 - any other type is what we look for
            findings += 1
            _finding(data, exc)
        done += 1
    elapsed = time.monotonic() - start
    print(f"fuzz_load (random mutations): {done} inputs in {elapsed:.1f} s, "
          f"{findings} findings", file=sys.stderr)
    return 1 if findings else 0


def run_atheris(seeds, seconds: float, runs: int, seed: int, folder: Path, extra) -> None:
    import atheris

    with atheris.instrument_imports(include=["mlpcore"]):
        import mlpcore as mc

    corpus = folder / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(data)
    path = folder / "input.safetensors"

    def one_input(data: bytes) -> None:
        try:
            check_one(data, path, mc)
        except Exception as exc:
            _finding(data, exc)
            raise

    def custom_mutator(data: bytes, max_size: int, mut_seed: int) -> bytes:
        rng = random.Random(mut_seed)
        if rng.random() < 0.5:
            return mutate(data, rng)[:max_size]
        return atheris.Mutate(data, max_size)

    args = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-seed={seed}",
            "-max_len=65536", "-timeout=30", "-rss_limit_mb=4096", *extra, str(corpus)]
    if runs < sys.maxsize:
        args.insert(1, f"-runs={runs}")
    atheris.Setup(args, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=sys.maxsize)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-atheris", action="store_true",
                        help="random mutations even if atheris is installed")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seeds = [p.read_bytes() for p in make_corpus.valid_files(folder / "seeds")]
        try:
            if args.no_atheris:
                raise ImportError
            import atheris  # noqa: F401
        except ImportError:
            return run_random(seeds, args.seconds, args.runs, args.seed, folder)
        run_atheris(seeds, args.seconds, args.runs, args.seed, folder, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
