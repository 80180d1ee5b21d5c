"""Per-face cost of age models in the serving runtime (`ml.serving.runtime`, ONNX Runtime), side by side.

    .venv/bin/python -m bench.age_cost [--weights A.onnx --weights B.onnx ...] [--repeat 300] [--threads 1]

Each model's whole age step (`estimate`: every member, the mirrored chip when the model averages
it, both temperatures, the interval) on one 64 px chip at a time, as the service runs a face, and
on a batch of 32 chips (per face). The models take turns call by call, so that the load of this
shared machine falls on each alike; medians over `--repeat` calls, after a warm-up. The chips are
random: the networks' work does not depend on what the pixels show.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench.machine import describe
from ml.paths import WEIGHTS_DIR
from ml.serving import runtime

ROOT = Path(__file__).resolve().parent.parent

MODELS = ("resnet10x3-utkface-v2", "resnet10-utkface-v2", "resnet10-utkface-v3")


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, action="append",
                        help="exported .onnx age models (default: the shipped v2 and v3 ones present)")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="CPUs the age step may spread over")
    args = parser.parse_args(argv)
    paths = args.weights or [p for m in MODELS if (p := WEIGHTS_DIR / f"{m}.onnx").exists()]
    models = [runtime.load_age_model(p, runtime.CpuShare(cpus=args.threads, load=lambda: 0.0)) for p in paths]
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    many = rng.integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    single: dict[str, list[float]] = {m.version: [] for m in models}
    batched: dict[str, list[float]] = {m.version: [] for m in models}
    for m in models:  # warm-up
        for _ in range(10):
            m.estimate(one)
        m.estimate(many)
    for i in range(args.repeat):
        for m in models:
            single[m.version].append(timed(m.estimate, one))
            if i % 8 == 0:
                batched[m.version].append(timed(m.estimate, many) / len(many))
    print(describe())
    print(f"age step in the serving runtime, {args.threads} thread(s), medians of {args.repeat} calls "
          f"(batch: {len(batched[models[0].version])} calls of {args.batch})")
    print(f"{'model':<24} {'networks':>8} {'mirror':>6} {'ms, one face':>13} {'ms a face, batch':>17}")
    for m in models:
        print(f"{m.version:<24} {len(m.member_costs):>8} {'yes' if m.mirror else 'no':>6} "
              f"{statistics.median(single[m.version]):>13.2f} {statistics.median(batched[m.version]):>17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
