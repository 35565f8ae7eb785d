"""CPU time to start each ``sycam`` command that needs no model, against ``import torch`` (a script, not a test).

    .venv/bin/python benchmarks/startup.py [--repeats 5]

Why: ``sycam --help``, ``--version``, ``seeds``, ``metrics`` and every ``COMMAND --help`` must
start in at most 0.5 s of CPU and ``sycam check EXPR`` (which needs sympy) in at most 1.0 s;
torch alone costs several seconds. Each command runs as a fresh process; its CPU time is user +
sys of the child (``getrusage(RUSAGE_CHILDREN)``), which a busy machine inflates far less than
wall time. Every round runs ``python -c "import torch"`` first, then each command, so the
ratio command / torch is taken within a round; the table shows medians over rounds. ``import
sympy`` is shown for reference: it is most of ``check``'s time (and sympy with
``sympy.physics.units``, which ``sympy.simplify`` would import on its first call: sycam's
simplification uses sympy's algebraic rewrites without it).
Run it on a quiet machine (load average < 1.5): it prints the load before and after. The
children run with byte-code caching on (PYTHONDONTWRITEBYTECODE removed), as in a normal install;
a warm-up round writes the caches.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SYCAM = [str(Path(PYTHON).with_name("sycam"))] if Path(PYTHON).with_name("sycam").exists() else \
    [PYTHON, "-c", "import sys; from sycam.cli import main; sys.exit(main())"]

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

#: (command line, CPU budget in seconds)
COMMANDS = [(["--help"], 0.5), (["--version"], 0.5), (["seeds"], 0.5), (["metrics"], 0.5),
            *[([c, "--help"], 0.5) for c in ("explain", "eval", "search", "ablate", "seeds", "check", "layers",
                                             "metrics", "data")],
            (["data", "fetch", "--help"], 0.5), (["check", "gradcam"], 1.0), (["check", "gradcampp"], 1.0)]


def cpu_seconds(argv: list[str]) -> float:
    """user + sys CPU seconds of one run of ``argv`` (output discarded; a failure stops the benchmark)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT, env=ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="rounds (each: import torch, then every command)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"CPU seconds (user+sys) per start, median of {args.repeats} rounds; load average {load:.2f} at start"
          + ("  [busy machine: numbers inflated]" if load >= 1.5 else ""))
    torch_argv = [PYTHON, "-c", "import torch"]
    references = {"python -c pass": [PYTHON, "-c", "pass"],
                  'python -c "import sympy"': [PYTHON, "-c", "import sympy"],
                  "... + sympy.physics.units": [PYTHON, "-c", "import sympy, sympy.physics.units"]}
    for argv, _ in COMMANDS:                        # warm the file cache once
        cpu_seconds(SYCAM + argv)
    cpu_seconds(torch_argv)
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        base = cpu_seconds(torch_argv)
        times.setdefault("import torch", []).append(base)
        for label, argv in references.items():
            times.setdefault(label, []).append(cpu_seconds(argv))
            ratios.setdefault(label, []).append(times[label][-1] / base)
        for argv, _ in COMMANDS:
            t = cpu_seconds(SYCAM + argv)
            times.setdefault(" ".join(argv), []).append(t)
            ratios.setdefault(" ".join(argv), []).append(t / base)
    width = max(len(k) for k in times) + 6
    print(f"{'command':<{width}}{'CPU s':>8}{'/ torch':>9}{'budget':>8}  ok")
    label = 'python -c "import torch"'
    print(f"{label:<{width}}{statistics.median(times['import torch']):>8.2f}{1:>9.2f}")
    for label in references:
        print(f"{label:<{width}}{statistics.median(times[label]):>8.2f}{statistics.median(ratios[label]):>9.3f}")
    failed = 0
    for argv, budget in COMMANDS:
        key = " ".join(argv)
        t = statistics.median(times[key])
        ok = t <= budget
        failed += not ok
        print(f"{'sycam ' + key:<{width}}{t:>8.2f}{statistics.median(ratios[key]):>9.3f}{budget:>8.1f}  "
              f"{'yes' if ok else 'NO'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end; {len(COMMANDS) - failed} of {len(COMMANDS)} "
          f"within budget")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
