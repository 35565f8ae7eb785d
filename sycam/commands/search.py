"""``sycam search``: synthesise a CAM expression for a model, layer(s), images and metric(s).

Every search is a named study in Optuna storage (``--storage``, ``--study``): run the same
command again to resume a stopped search, or start it on several processes or machines
(PostgreSQL storage across machines) to share the work. The report (leaderboard, pictures,
``best.txt``, ``report.html``) scores candidates on held-out images the search never saw.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import add_model_args, check_out, console
from .problem import add_data_args, check_data_arg, load_problem, names_digest, read_data

DEFAULT_METRIC = "energy_pointing_game"
# = sycam.search.driver.STRATEGIES / SAMPLERS, which load torch and optuna (tests/test_startup.py checks)
STRATEGIES = ("enumerate", "optuna", "both")
SAMPLERS = ("tpe", "nsga2", "random")


def add(sub) -> None:
    p = sub.add_parser("search", help="synthesise a CAM expression (enumeration + Optuna TPE, resumable)",
                       description="Search the CAM grammar for the expression that scores best on a metric; "
                                   "report it against every seed on held-out images.")
    add_model_args(p)
    add_data_args(p)
    g = p.add_argument_group("objective")
    g.add_argument("--metric", action="append", dest="metrics",
                   help=f"metric name[:param=value,...] (default: {DEFAULT_METRIC}); repeat for several "
                        "objectives (Pareto front); 'size' = expression size (minimised); `sycam metrics` lists them")
    g = p.add_argument_group("search space", "default: the built-in weight-map grammar (sycam.search.space), "
                                             "printed when the search starts; these options change it")
    g.add_argument("--space", help="TOML or JSON file with the space options")
    g.add_argument("--operators", help="operators, e.g. '+,*,/,relu,sum:hw,mean:hw'")
    g.add_argument("--terminals", help="terminals (evidence), e.g. 'A,G,G2,G3'")
    g.add_argument("--constants", help="constants, e.g. '1,2'")
    g.add_argument("--max-size", type=int, help="largest candidate, in nodes")
    g.add_argument("--max-depth", type=int, help="deepest candidate")
    g.add_argument("--result", help="what a candidate computes: weights | weight_maps | heatmap")
    g = p.add_argument_group("budget and strategy")
    g.add_argument("--budget", type=int, default=300, help="evaluations in the whole study (0: no limit)")
    g.add_argument("--time", type=float, help="wall-clock seconds for this run's search loop")
    g.add_argument("--strategy", choices=STRATEGIES, default="both",
                   help="enumerate small sizes exhaustively, TPE, or both (enumeration first)")
    g.add_argument("--enumerate-size", type=int, help="largest size enumerated (default 5; max-size for enumerate)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler of the optuna stage")
    g.add_argument("--batch", type=int, default=16, help="TPE trials asked at once")
    g.add_argument("--fidelity", type=int, default=8,
                   help="score new candidates on a working subset of this many images first; the Wilcoxon "
                        "pruner stops clear losers, and images where a promising candidate fails join the "
                        "subset (counterexamples) (0: off; one objective only)")
    g.add_argument("--probe", type=int, default=8, help="images the enumerator's equivalence oracle compares on")
    g.add_argument("--seed", type=int, help="sampler seed (default: a random one)")
    g.add_argument("--tolerance", default="se",
                   help="select the smallest candidate whose working score is within this of the best: 'se' "
                        "(default: one standard error of the best's per-image scores) or a number in the "
                        "metric's units (0: the best)")
    g = p.add_argument_group("study")
    g.add_argument("--study", default="search", help="study name (same name + storage = same search)")
    g.add_argument("--storage", help="journal:PATH (default <out>/study.journal), sqlite:///PATH, "
                                     "postgresql://user:pw@host:port/db, or memory")
    g.add_argument("--out", help="report folder (default results/search/<study>)")
    g.add_argument("--top", type=int, default=10, help="synthesised candidates in the leaderboard")
    g.add_argument("--seed-cost-cap", type=float, default=None,
                   help="seeds outside the search space (Score-CAM, Ablation-CAM, MI-CAM, ...) are compared on the "
                        "held-out images when they cost at most this many model passes per image beyond the shared "
                        "one (default 100; 0: only those that need none); the report lists those left out")
    g.add_argument("--no-report", action="store_true", help="only search (e.g. extra workers)")
    g.add_argument("--grace", type=float, default=60.0,
                   help="seconds without a heartbeat before another machine's worker counts as dead")
    p.set_defaults(run=run)


def _stop_on_signals(stop: threading.Event):
    """First SIGINT/SIGTERM: finish the current batch and stop; a second SIGINT aborts."""
    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]stopping after the current batch (Ctrl-C again to abort); "
                      "run the same command to resume[/]")
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if threading.current_thread() is threading.main_thread():
        for s in old:
            signal.signal(s, handler)
    return old


def run(args) -> int:
    # deferred: torch, optuna and the search engine load here: `sycam search --help` starts without them
    from ..data import split
    from ..evidence.sets import EvidenceSet
    from ..search import Options, Problem
    from ..search import run as search
    from ..search.baselines import check_cap
    from ..search.objectives import parse_objectives
    from ..search.space import load_space
    from ..search.storage import check_study_name, open_store

    started = time.perf_counter()
    # everything that can be checked without the model, first
    check_study_name(args.study)
    space = load_space(args.space, operators=args.operators, terminals=args.terminals, constants=args.constants,
                       max_size=args.max_size, max_depth=args.max_depth, result=args.result)
    specs = parse_objectives(args.metrics or [DEFAULT_METRIC])
    seed_cost_cap = check_cap(args.seed_cost_cap)
    options = Options(strategy=args.strategy, budget=args.budget or None, seconds=args.time,
                      enumerate_size=args.enumerate_size, batch=args.batch, sampler=args.sampler, seed=args.seed,
                      grace=args.grace, fidelity=args.fidelity, probe=args.probe, tolerance=args.tolerance)
    check_data_arg(args)
    images = read_data(args)
    out = check_out(args.out or Path("results") / "search" / args.study)
    store = open_store(args.storage or f"journal:{out / 'study.journal'}", create=out)
    console.print(f"study [bold]{args.study}[/] in {store.url}; {space.describe()}")

    problem = load_problem(args, log=lambda m: console.print(m), images=images)
    train, held = split(problem.batch, args.held_out, args.split_seed)
    # version 2 (division exact with x / 0 = 0) -> 3 (every image's score recorded, working subset stored)
    settings = {"model": problem.model_name, "weights": args.weights, "data": problem.data,
                "split": {"held_out": args.held_out, "seed": args.split_seed, "train": names_digest(train),
                          "held": names_digest(held), "train_images": len(train), "held_images": len(held)}}
    job = Problem(problem.model, problem.layers, train, held, space=space, objectives=specs, storage=store,
                  study=args.study, settings=settings)

    stop = threading.Event()
    old = _stop_on_signals(stop)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("searching", total=options.budget)

            def progress(p):
                best = f"best {p.best_value:.4f} {p.best}"[:90] if p.best else "no result yet"
                bar.update(task, completed=p.done, description=f"[cyan]{best}[/] dup {p.duplicates} pruned {p.pruned}")

            result = search(job, options, progress=progress, stop=stop, log=lambda m: console.print(f"[dim]{m}[/]"))
    finally:
        for s, h in old.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(s, h)
    summary = result.summary
    console.print(f"this run: {summary.evaluated} candidates scored ({summary.pruned} pruned on few images, "
                  f"{summary.invalid} invalid), {summary.duplicates} duplicate proposals, "
                  f"{summary.retried} trials of stopped workers retried, {summary.seconds:.1f} s; "
                  f"ended by {summary.reason}")
    # the search's resources (with its Reexplainer when an objective re-explains) serve the report too
    resources = result.resources
    rx = resources["reexplainer"].stats() if "reexplainer" in resources else None
    if rx and (rx["captures"] or rx["per_candidate"]):
        console.print(f"re-explained on cached evidence: {rx['captures']} captures of copies / randomised models "
                      f"(once per image set), {rx['per_candidate']} of per-candidate inputs, "
                      f"{rx['forwards']} model calls, {rx['hits']} cache hits")
    if summary.reason in ("stopped", "interrupted"):
        console.print("[yellow]interrupted: resume with the same command[/]")
        return 130
    if args.no_report:
        return 0
    # deferred: the report (sympy, matplotlib) loads only when the search writes one
    from ..report.leaderboard import rich_table
    from ..report.search_report import write_search_report

    held_ev = EvidenceSet.capture(problem.model, held, problem.layers, needs=space.evidence_terms)
    run_info = {"worker": summary.worker, "reason": summary.reason, "evaluated_this_run": summary.evaluated,
                "duplicates_this_run": summary.duplicates, "search_seconds": round(summary.seconds, 1),
                "total_seconds": round(time.perf_counter() - started, 1), "threads": _threads(),
                "strategy": options.strategy, "budget": options.budget}
    report = write_search_report(out, study=result.study, space=space, objectives=specs, held_out=held_ev,
                                 held_batch=held, resources=resources, command=["sycam", *sys.argv[1:]],
                                 settings=result.settings, run=run_info, top=args.top, classes=problem.classes,
                                 tolerance=options.tolerance, model=problem.model, layers=problem.layers,
                                 seed_cost_cap=seed_cost_cap)
    console.print(rich_table(report.table, specs, f"held-out leaderboard ({len(held)} images)"))
    colour = "green" if report.verdict.beats_every_seed else "red"
    console.print(f"[{colour}]{report.verdict.message}[/]")
    console.print(f"wrote {out / 'report.html'}, leaderboard.csv/json, best.txt "
                  f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def _threads() -> int:
    import torch  # deferred: keeps start-up torch-free

    return torch.get_num_threads()
