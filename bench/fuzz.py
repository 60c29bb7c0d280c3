"""The long fuzz run: hostile input on every surface, counting cases run and failures.

    python -m bench.fuzz [--cases 10000] [--surface http ...] [--jobs 2] [--seed N]
                         [--shrink] [--save]

Surfaces (tests/fuzz/harness.py): http, ac_ws, jambonz, vg_path, config, mapping. Each runs its
seed corpus, then `--cases` generated cases; every failing case is counted and the first few are
printed. `--shrink` re-runs a failing surface until hypothesis reduces the first failure to a
minimal case; `--save` writes each failing case to tests/fuzz/corpus/<surface>/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.fuzz.harness import SURFACES, FuzzReport, encode_case, fuzz, load_corpus, save_case

SHOWN_FAILURES = 3


def run_surface(name: str, cases: int, seed: int | None) -> FuzzReport:
    corpus = [case for _, case in load_corpus(name)]
    return fuzz(
        SURFACES[name](), cases, collect=True, corpus=corpus, random_seed=seed, progress=True
    )


def shrink(name: str, cases: int, seed: int | None) -> str:
    """The minimal failing case hypothesis finds (raising mode), as text."""
    try:
        fuzz(SURFACES[name](), cases, random_seed=seed)
    except Exception as exc:  # hypothesis re-raises the minimal failure
        notes = "\n".join(getattr(exc, "__notes__", []))
        return f"{type(exc).__name__}: {str(exc)[:500]}\n{notes[:3000]}"
    return "(no failure reproduced)"


def _short(case: object) -> str:
    return json.dumps(encode_case(case), ensure_ascii=True)[:400]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000, help="generated cases per surface")
    parser.add_argument("--surface", action="append", choices=sorted(SURFACES))
    parser.add_argument("--jobs", type=int, default=1, help="surfaces run in parallel")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--shrink", action="store_true")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    names = args.surface or list(SURFACES)

    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {name: pool.submit(run_surface, name, args.cases, args.seed) for name in names}
        reports = {name: future.result() for name, future in futures.items()}

    print(f"{'surface':<10} {'cases':>8} {'failures':>9} {'seconds':>8} {'cases/s':>8}")
    failed = False
    for name in names:
        report = reports[name]
        rate = report.cases / report.seconds if report.seconds else 0.0
        print(
            f"{name:<10} {report.cases:>8} {report.failed:>9} {report.seconds:>8.1f} {rate:>8.1f}"
        )
        failed = failed or report.failed > 0
    print(f"total wall time {time.monotonic() - started:.1f} s")

    for name in names:
        report = reports[name]
        if not report.failed:
            continue
        print(f"\n== {name}: {report.failed} failing cases; first {SHOWN_FAILURES}:")
        for case, reason in report.failures[:SHOWN_FAILURES]:
            print(f"- {reason[:500]}\n  case: {_short(case)}")
        if args.save:
            for case, reason in report.failures:
                digest = hashlib.sha256(_short(case).encode()).hexdigest()[:12]
                save_case(name, f"found-{digest}", case, reason[:300])
        if args.shrink:
            print(f"minimal failing case of {name}:\n{shrink(name, args.cases, args.seed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
