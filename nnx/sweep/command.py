"""``nnx sweep``: train one network per combination of settings, print the table, draw the figures.

With no arguments it reruns tutorial 003's experiment: two moons (200 samples,
noise 0.2, seed 0), hidden sizes 0 (no hidden layer: logistic regression), 1, 2,
3, 4, 5, 20 and 50, 20,000 passes, lr 0.01, L2 0.01, summed gradients.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path

from ..errors import BackendUnavailableError, OutOfMemoryError, PerformanceWarning
from .api import SCHEDULERS, make_executor
from .axes import BACKENDS, FULL_BATCH, Axes
from .config import TUTORIAL_HIDDEN, TUTORIAL_SETTINGS
from .executor import SchedulerUnavailableError, default_workers
from .job import FAILED
from .runner import SweepInterrupted, notes, run_sweep
from . import table

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _number(kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def _batch_size(text: str) -> int | None:
    if text.lower() == FULL_BATCH:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or {FULL_BATCH!r}") from None


def comma_list(kind: type | None = None, parse=None):
    """An argparse type for 'a,b,c': a list of ints, floats, strings or ``parse(text)`` values
    (checked later, by name)."""
    def parse_list(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give at least one value, comma-separated")
        return [parse(t) if parse else _number(kind, t) if kind else t for t in items]
    parse_list.__name__ = f"comma-separated {kind.__name__ if kind else 'name'} list"
    return parse_list


class AxisValues(argparse.Action):
    """An axis's values: one or more after the option, each possibly a comma list
    (``--hidden 1 3,50``), gathered over repeats of the option."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest) or [])
        for value in values:
            items.extend(value if isinstance(value, list) else [value])
        setattr(namespace, self.dest, items)


def test_size(text: str) -> float | int:
    """'0.25' is a fraction of the samples; '50' is a count."""
    return _number(float, text) if any(c in text for c in ".eE") else _number(int, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.replace("``", "")
    parser.set_defaults(run=run)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  nnx sweep --plot sweep.png                      tutorial 003's sweep and its figure\n"
        "  nnx sweep --hidden 3,50 --lr 0.01,0.1 --seed 0,1,2 --test-size 0.25\n"
        "  nnx sweep --hidden 1024,4096,16384 --samples 4096 --passes 100\n"
        "  nnx sweep --hidden 3,20 --optimizer sgd adam 'sgd:momentum=0.9' --batch-size full 32 --epochs 500\n"
        "  nnx sweep --scheduler dask --address tcp://HOST:8786\n\n"
        "Each job's result is written to --out as it ends; rerunning the same command skips finished jobs.\n"
        "Exit status: 0 when every job finished (diverged ones included), 1 when a job failed, 2 on\n"
        "unusable options, 130 after Ctrl-C.")
    axes = parser.add_argument_group(
        "axes (one or more values each, spaces or commas between them; the sweep is their product)")

    def axis(flag: str, kind=None, metavar: str = "NAME", parse=None, **kwargs) -> None:
        axes.add_argument(flag, action=AxisValues, type=comma_list(kind, parse), metavar=metavar, **kwargs)

    axis("--hidden", int, "H",
         help=f"hidden layer sizes, 0 for none (default: {','.join(map(str, TUTORIAL_HIDDEN))})")
    axis("--lr", float, "LR", help=f"learning rates (default: {TUTORIAL_SETTINGS['lr']} for SGD, the "
                                   "optimizer's own for the others)")
    axis("--l2", float, "L2", help=f"L2 strengths (default: {TUTORIAL_SETTINGS['l2']})")
    axis("--seed", int, "S", help="initialisation seeds (default: 0, the tutorial's)")
    axis("--dtype", metavar="DTYPE", help="float64 and/or float32 (default: float64)")
    axis("--backend", help=f"{', '.join(BACKENDS)} (default: auto: the GPU when one works)")
    axis("--passes", int, "P", help=f"updates per fit (default: {TUTORIAL_SETTINGS['passes']})")
    axis("--epochs", int, "E", help="passes over the training samples per fit, instead of --passes "
                                    "(ceil(N / batch size) updates each)")
    axis("--batch-size", metavar="B", parse=_batch_size,
         help=f"minibatch sizes, {FULL_BATCH!r} for all samples at once (default: {FULL_BATCH})")
    axes.add_argument("--optimizer", action=AxisValues, metavar="SPEC",
                      help="sgd, adam, adamw or rmsprop with PyTorch's settings (NAME[:KEY=VALUE,...]), one "
                           "spec per value, e.g. "
                           "sgd adam 'sgd:momentum=0.9,nesterov=True' (default: sgd, the tutorial's plain "
                           "gradient descent); a spec without lr runs at each --lr")
    axes.add_argument("--schedule", action=AxisValues, metavar="SPEC",
                      help="learning-rate schedules (NAME[:KEY=VALUE,...]), one spec per value: constant (default), "
                           "'step:step_size=5000,gamma=0.5', 'exponential:gamma=0.999', 'cosine:T_max=20000', "
                           "'warmup:total_iters=100'")
    axis("--activation", help="hidden activation: tanh, sigmoid, relu, identity (default: tanh)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", action=AxisValues, type=comma_list(), metavar="NAME",
                      help="moons, spirals, xor or csv:PATH (the last column is the label; default: moons)")
    data.add_argument("--samples", action=AxisValues, type=comma_list(int), metavar="N",
                      help="samples to generate (default: moons 200, spirals 300)")
    data.add_argument("--noise", action=AxisValues, type=comma_list(float), metavar="X",
                      help="noise of the generated data (default: 0.2)")
    data.add_argument("--data-seed", action=AxisValues, type=comma_list(int), metavar="S",
                      help="seed of the generated data and of the test split (default: 0)")
    data.add_argument("--test-size", type=test_size, metavar="F|N",
                      help="hold out a fraction (0.25) or a count (50) of the samples and report test accuracy")
    data.add_argument("--reduction", choices=["sum", "mean"], help="sum (the tutorial's gradients, default) or mean")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=Path("nnx-sweep"),
                        help="folder for one JSON result per job and the summary (default: nnx-sweep)")
    output.add_argument("--save-models", action="store_true",
                        help="keep each trained model beside its result (JOB.npz; nnx.load reads it)")
    output.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw the decision-boundary grid (needs matplotlib: nnx[plot]; keeps the models)")
    output.add_argument("--plot-metrics", type=Path, metavar="FILE.png",
                        help="draw accuracy and loss against hidden size (needs matplotlib)")
    output.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    where = parser.add_argument_group("where the jobs run")
    where.add_argument("--scheduler", choices=SCHEDULERS, default="local",
                     help="local: spawned processes here (default); dask: Dask distributed (nnx[dask])")
    where.add_argument("--workers", type=int, metavar="N",
                     help=f"worker processes (default: usable cores // threads per worker, here "
                          f"{default_workers(1)})")
    where.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                     help="BLAS, OpenMP and Numba threads each job may use (default: 1)")
    where.add_argument("--address", metavar="tcp://HOST:8786",
                     help="with --scheduler dask: the scheduler of a running cluster (default: start a LocalCluster)")


def _resume_hint() -> str:
    if os.path.basename(sys.argv[0]) in ("nnx", "__main__.py"):
        return "nnx " + shlex.join(sys.argv[1:])
    return "the same command"


def run(args: argparse.Namespace) -> int:
    """Run the sweep: 0 when every job finished, 1 when one failed, 2 on unusable options, 130 on Ctrl-C."""
    from . import plot

    try:
        axes = Axes.of(hidden=args.hidden, lr=args.lr, l2=args.l2, seed=args.seed, dtype=args.dtype,
                       backend=args.backend, passes=args.passes, epochs=args.epochs, batch_size=args.batch_size,
                       optimizer=args.optimizer, schedule=args.schedule, activation=args.activation,
                       dataset=args.dataset, samples=args.samples, noise=args.noise, data_seed=args.data_seed,
                       test_size=args.test_size, reduction=args.reduction)
        for path in (args.plot, args.plot_metrics):
            if path is not None:
                plot.check_path(path)
        executor = make_executor(args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker,
                                 address=args.address)
    except (ValueError, TypeError, RuntimeError, SchedulerUnavailableError) as exc:
        print(f"nnx sweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    varying = axes.varying()

    def on_plan(configs, datasets, reused) -> None:
        if args.plot is not None:
            plot.check_plottable(datasets.values())
        todo = len(configs) - reused
        sources = "; ".join(f"{ds.spec.label} ({ds.n_samples} samples, {ds.n_features} features, "
                            f"{ds.n_classes} classes)" for ds in datasets.values())
        print(f"nnx sweep: {len(configs)} configurations on {sources}; {reused} finished earlier in {args.out}, "
              f"{todo} to run on {executor.describe()}", file=sys.stderr, flush=True)

    def progress(record, done, total) -> None:
        print(table.progress_line(record, done, total, varying), file=sys.stderr, flush=True)

    keep_models = args.save_models or args.plot is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PerformanceWarning)  # printed below, with the table
            records = run_sweep(axes, executor, out=args.out, keep_models=keep_models, progress=progress,
                                on_plan=on_plan)
    except SweepInterrupted as stop:
        print(f"\nnnx sweep: {stop}. To finish the rest (finished jobs are skipped), run again: "
              f"{_resume_hint()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, RuntimeError, BackendUnavailableError, OutOfMemoryError) as exc:
        print(f"nnx sweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(table.table(records, varying, markdown=args.markdown))
    for line in table.problems(records, varying):
        print(line)
    for note in notes(records):
        print(f"note: {note}")
    csv_path, json_path = records.summary
    print(f"\nresults: {records.out}/jobs/ (one JSON per job); summary: {csv_path}, {json_path}")
    if args.plot is not None:
        print(f"plot: {plot.save(plot.decision_boundaries(records, records.models, records.datasets, varying), args.plot)}")
    if args.plot_metrics is not None:
        print(f"plot: {plot.save(plot.metrics(records, varying), args.plot_metrics)}")
    return EXIT_FAILED if any(r["status"] == FAILED for r in records) else 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m nnx.sweep.command``)."""
    parser = argparse.ArgumentParser(prog="nnx sweep")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
