"""The ``nas`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from nas.errors import STORAGE_ERRNOS, NasError, StorageError
from nas.estimation import ESTIMATIONS
from nas.estimation.settings import OPTIONS as SUPERNET_OPTIONS
from nas.options import (
    BACKENDS,
    DATA_SOURCES,
    DISTRIBUTED_MODES,
    RESUME_MAY_CHANGE,
    SCHEDULERS,
    STORAGE_HELP,
    TASK_KINDS,
    SearchOptions,
)
from nas.runtime.imports import skip_optional_imports
from nas.storage.records import TrialStatus
from nas.storage.results import format_config, format_value

#: one set of defaults, the API's (nas.options.SearchOptions): the flags of `nas search` show them
DEFAULTS = {k: v for k, v in vars(SearchOptions()).items() if not isinstance(v, (dict, list))}


EXAMPLES = {
    "search": """examples:
  nas search --space mlp --strategy random --trials 8 --epochs 5
  nas search --space cnn --strategy rl --trials 50 --max-concurrent 4 --gpus-per-trial 0.5
  nas search --space cnn --strategy rl --backend jax --gpus-per-trial 0.125     # 8 trials share each GPU
  nas search --space enas_cnn --estimation shared-weights --supernet-epochs 30 --top-k 5 --epochs 20   # ENAS
  nas search --space my_spaces.py:MySpace --data train.npz --objective val_loss:min
  nas search --space mlp --data prices.csv --target price --name prices --storage /shared/nas-runs
  nas search --address auto --workers-per-trial 4 --distributed horovod --gpus-per-trial 1 --storage /shared/nas-runs""",
    "status": """examples:
  nas status mlp-random-20261122-101500-ab12
  nas status my-run --json > my-run.json""",
    "runs": """examples:
  nas runs
  nas runs --storage /shared/nas-runs""",
    "plot": """examples:
  nas plot mlp-random-20261122-101500-ab12
  nas plot my-run --out my-run.png""",
    "list": "example:\n  nas list",
    "resume": """examples:
  nas resume my-run                 # after Ctrl-C, kill -9 or a reboot: continue where it stopped
  nas resume my-run --trials 50     # a finished 30-trial search: run 20 more""",
    "export": """examples:
  nas export mlp-random-20261122-101500-ab12                      # best trial: model.keras + saved_model/
  nas export my-run --trial 3 --format keras,savedmodel,onnx,tflite --out ./my-model
  nas export my-run --retrain --epochs 20                         # retrain on train+validation first""",
}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def _failure_flags(group: Any, defaults: bool = True) -> None:
    d = DEFAULTS if defaults else {}
    group.add_argument("--max-failures", type=int, default=d.get("max_failures"),
                       help="retry a trial whose worker died up to N times, from its last checkpoint (default: "
                            f"{DEFAULTS['max_failures']})")
    group.add_argument("--max-consecutive-failures", type=int, default=d.get("max_consecutive_failures"),
                       help=f"stop the search after N failed trials in a row (default: "
                            f"{DEFAULTS['max_consecutive_failures']}; 0: never)")
    group.add_argument("--max-worker-rss-mb", default=d.get("max_worker_rss_mb"), metavar="MB|auto|off",
                       help="replace a reused worker once its resident memory passes MB; Keras leaks a few MB per "
                            f"model (default: {DEFAULTS['max_worker_rss_mb']}, 1.5x a fresh worker's)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"nas: error: {message} (see `{self.prog} --help`)\n")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The ``nas`` parser; ``suppress_defaults``: ``nas search`` leaves out what is not given (``given``)."""
    parser = _Parser(prog="nas", description="Neural-architecture and hyperparameter search for Keras on Ray.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fmt = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("search", help="run a search", epilog=EXAMPLES["search"], formatter_class=fmt)
    g = s.add_argument_group("what to search")
    g.add_argument("--space", default=DEFAULTS["space"], help="search space: a registered name (see `nas list`), module:Class or file.py:Class (default: %(default)s)")
    g.add_argument("--strategy", default=None, help="strategy: a registered name, module:Class or file.py:Class (default: gp, Gaussian-process BO; rl, ENAS's controller, with --estimation shared-weights)")
    g.add_argument("--strategy-option", dest="strategy_options", action="append", type=_option, default=[], metavar="KEY=VALUE", help="strategy option, repeatable (e.g. points=3 for grid)")
    g.add_argument("--space-option", dest="space_options", action="append", type=_option, default=[], metavar="KEY=VALUE", help="search-space option, repeatable")
    g.add_argument("--objective", dest="objectives", action="append", default=[], metavar="METRIC[:max|min]", help="what to optimise (default: the space's, val_accuracy:max for classification)")
    w = s.add_argument_group("performance estimation (weight sharing: a supernet phase, then the top-k from scratch)")
    w.add_argument("--estimation", choices=ESTIMATIONS, default=DEFAULTS["estimation"],
                   help="standalone: every trial trains from scratch (default); shared-weights: ENAS, one supernet "
                        "whose shared weights judge the architectures the strategy samples (needs a space with a "
                        "supernet, e.g. enas_cnn), then the top-k trained from scratch as the trials")
    w.add_argument("--top-k", type=_positive_int, default=DEFAULTS["top_k"],
                   help="shared-weights: architectures trained from scratch after the supernet phase; they are the "
                        "search's trials (default: %(default)s)")
    w.add_argument("--supernet-epochs", type=_positive_int, default=DEFAULTS["supernet_epochs"],
                   help="shared-weights: supernet epochs, the first half on uniformly drawn children (default: %(default)s)")
    w.add_argument("--supernet-option", dest="supernet_options", action="append", type=_option, default=[],
                   metavar="KEY=VALUE", help="shared-weights, repeatable: " + "; ".join(
                       f"{k} ({v[2]}, default {v[0]})" for k, v in SUPERNET_OPTIONS.items()))
    d = s.add_argument_group("data")
    d.add_argument("--data", default=DEFAULTS["data"], help=f"{DATA_SOURCES[0]} (default, offline), {', '.join(DATA_SOURCES[1:])}, PATH.npz or PATH.csv")
    d.add_argument("--target", help="CSV column to predict")
    d.add_argument("--window", type=_positive_int, help="CSV time series: predict the next value from W steps")
    d.add_argument("--task", choices=TASK_KINDS, help="default: the space's first task that fits the data")
    d.add_argument("--normal-class", type=int, help="--task anomaly: the label of normal examples (default: the smallest)")
    b = s.add_argument_group("budget")
    b.add_argument("--trials", type=int, default=DEFAULTS["trials"], help="number of trials (default: %(default)s)")
    b.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs per trial (default: %(default)s)")
    b.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed for proposals and training (default: %(default)s)")
    b.add_argument("--scheduler", default=DEFAULTS["scheduler"], choices=SCHEDULERS,
                   help="stop poor trials early from their per-epoch reports (default: %(default)s)")
    b.add_argument("--min-epochs", type=_positive_int, default=DEFAULTS["min_epochs"],
                   help="epochs every trial runs before a scheduler may stop it (default: %(default)s)")
    b.add_argument("--executions-per-trial", type=_positive_int, default=DEFAULTS["executions_per_trial"],
                   help="models trained per configuration, each from its own seed; a trial reports their per-epoch "
                        "mean (KerasTuner's executions_per_trial; default: %(default)s)")
    b.add_argument("--max-params", type=_positive_int, help="constraint: reject larger models before training")
    b.add_argument("--max-latency-ms", type=float,
                   help="constraint: reject models slower than this (ms per sample, batch 1) before training")
    r = s.add_argument_group("resources")
    r.add_argument("--backend", choices=BACKENDS, default=None,
                   help="Keras backend every trial trains with (default: $KERAS_BACKEND, else tensorflow); jax is the "
                        "fast one on GPUs")
    r.add_argument("--address", help="an existing Ray cluster (default: start a local Ray on 127.0.0.1)")
    r.add_argument("--connect-timeout", type=_seconds, default=DEFAULTS["connect_timeout"], metavar="SECONDS",
                   help="fail when the cluster of --address cannot be reached within this time (default: 30)")
    r.add_argument("--max-concurrent", type=_positive_int, help="trials at once (default: as many as resources allow)")
    r.add_argument("--deterministic", action="store_true",
                   help="the same seed gives the same proposals and results at any --max-concurrent (trials are told "
                        "to the strategy in trial order; a slot may wait for a slower trial)")
    w = s.add_argument_group("warm start")
    w.add_argument("--warm-start", action="append", metavar="RUN",
                   help="tell the strategy the completed trials of an earlier run (a name in the storage or a run "
                        "directory) before its first proposal; they are not trained again nor counted in --trials "
                        "(repeatable)")
    w.add_argument("--enqueue", metavar="FILE",
                   help="a JSON list of configurations ({name: value}) to train first, in order; then the strategy "
                        "continues, told their results (a left-out hyperparameter takes its default)")
    r.add_argument("--cpus-per-trial", type=float, default=DEFAULTS["cpus_per_trial"], help="default: %(default)g")
    r.add_argument("--gpus-per-trial", type=float, default=DEFAULTS["gpus_per_trial"],
                   help="fractions share a GPU (default: %(default)g)")
    r.add_argument("--num-cpus", type=_positive_int, help="local Ray only: CPUs to use (default: all)")
    r.add_argument("--num-gpus", type=int, help="local Ray only: GPUs to advertise (default: detected)")
    r.add_argument("--workers-per-trial", type=_positive_int, default=DEFAULTS["workers_per_trial"],
                   help="data-parallel ranks per trial, each with --cpus/--gpus-per-trial (needs --distributed horovod)")
    r.add_argument("--distributed", choices=DISTRIBUTED_MODES, default=DEFAULTS["distributed"],
                   help="horovod: --workers-per-trial ranks via horovod.ray (install: bash launch/install-horovod.sh); "
                        "mirrored: tf.distribute.MirroredStrategy over one trial's GPUs (default: none)")
    r.add_argument("--scale-lr", action="store_true", help="horovod: multiply the learning rate by the ranks")
    _failure_flags(r)
    o = s.add_argument_group("output")
    o.add_argument("--name", help="run name (default: generated and printed)")
    o.add_argument("--storage", help=STORAGE_HELP)
    o.add_argument("--keep-checkpoints", action="store_true",
                   help="keep a completed trial's mid-trial checkpoint (trials/<id>/resume.npz); default: only "
                        "its best-epoch model stays")
    o.add_argument("--verbose", action="store_true", help="show Ray's and TensorFlow's own logs")
    o.add_argument("--resume", action="store_true", help="continue the run named by --name (as `nas resume NAME`)")
    c = s.add_argument_group("config file")
    c.add_argument("--config", metavar="FILE.yaml|FILE.json",
                   help="options from a file: every option above as a key (max-concurrent: 2, objective: [...], "
                        "space: enas_cnn, space-option: {filters: 32}); flags given here override its keys (--name, --storage are not "
                        "file keys)")
    c.add_argument("--dump-config", action="store_true",
                   help="print the config file of this command line (with --config: merged) and exit")
    if suppress_defaults:  # what was given on the command line itself, nothing argparse filled in
        for action in s._actions:
            action.default = argparse.SUPPRESS

    rs = sub.add_parser("resume", help="continue an interrupted search exactly where it stopped",
                        epilog=EXAMPLES["resume"], formatter_class=fmt)
    rs.add_argument("name")
    rs.add_argument("--storage", help=STORAGE_HELP)
    rs.add_argument("--trials", type=int, help="raise the budget (total trials, finished ones included)")
    rs.add_argument("--max-concurrent", type=_positive_int)
    rs.add_argument("--address", help="the Ray cluster to continue on (default: a local Ray)")
    rs.add_argument("--connect-timeout", type=_seconds, metavar="SECONDS",
                    help="fail when the cluster of --address cannot be reached within this time (default: 30)")
    rs.add_argument("--cpus-per-trial", type=float)
    rs.add_argument("--gpus-per-trial", type=float)
    _failure_flags(rs, defaults=False)
    rs.add_argument("--verbose", action="store_true", help="show Ray's and TensorFlow's own logs")

    st = sub.add_parser("status", help="leaderboard of a run's trials", epilog=EXAMPLES["status"], formatter_class=fmt)
    st.add_argument("name")
    st.add_argument("--storage", help=STORAGE_HELP)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--top", type=_positive_int, default=10, help="rows in the leaderboard (default: 10)")

    ru = sub.add_parser("runs", help="the searches in a storage directory", epilog=EXAMPLES["runs"], formatter_class=fmt)
    ru.add_argument("--storage", help=STORAGE_HELP)
    ru.add_argument("--json", action="store_true", help="machine-readable output")

    pl = sub.add_parser("plot", help="a PNG of a run: objective per trial, per hyperparameter, Pareto front",
                        epilog=EXAMPLES["plot"], formatter_class=fmt)
    pl.add_argument("name")
    pl.add_argument("--storage", help=STORAGE_HELP)
    pl.add_argument("--out", metavar="FILE.png", help="where to write it (default: <run>/plot.png)")

    sub.add_parser("list", help="registered search spaces and strategies", epilog=EXAMPLES["list"], formatter_class=fmt)

    ex = sub.add_parser("export", help="export a trial's model (Keras, SavedModel, ONNX, TFLite) with a model card",
                        epilog=EXAMPLES["export"], formatter_class=fmt)
    ex.add_argument("name", help="the run's name")
    ex.add_argument("--trial", metavar="ID", help="trial to export (default: the best completed trial; required "
                    "when the run has several objectives)")
    ex.add_argument("--format", dest="formats", default="keras,savedmodel", metavar="LIST",
                    help="comma-separated: keras, savedmodel, onnx (needs nas[onnx]), tflite (default: keras,savedmodel)")
    ex.add_argument("--out", metavar="DIR", help="output directory (default: <run>/exports/trial-<ID>)")
    ex.add_argument("--retrain", action="store_true", help="retrain the configuration on train+validation first")
    ex.add_argument("--epochs", type=_positive_int, help="--retrain: epochs (default: the trial's best epoch)")
    ex.add_argument("--storage", help=STORAGE_HELP)
    return parser


# -- search -------------------------------------------------------------------------------------------------
def _report(result: Any) -> int:
    """The summary on stdout: finished, stopped early or interrupted, and the command that comes next (which
    names --storage when the run is not in the default storage, so it works when pasted)."""
    from nas.storage.store import storage_flag

    done = sum(t.status == TrialStatus.COMPLETED for t in result.trials)
    failed = sum(t.status == TrialStatus.FAILED for t in result.trials)
    where = storage_flag(Path(result.directory).parent)
    ended = "interrupted" if result.interrupted else "stopped early" if result.stopped else "finished"
    print(f"{ended}: {done} completed, {failed} failed in {result.wall_s:.1f}s")
    if result.best:
        b = result.best
        metrics = {k: v for k, v in b.metrics.items() if k not in ("node",)}
        so_far = " so far" if result.interrupted or result.stopped else ""
        print(f"best trial{so_far} {b.trial_id}: {result.objective.metric}="
              f"{format_value(metrics.get(result.objective.metric))}")
        print(f"  config:  {format_config(b.config)}")
        print(f"  metrics: {format_config(metrics)}")
    else:
        print("no trial completed")
    print(f"results: {result.directory}")
    resume = f"nas resume {result.name}{where}"
    if result.stopped:
        print(f"stopped early: {result.stopped}", file=sys.stderr)
        print(f"next: fix the cause, then continue with: {resume}")
        return 3
    if result.interrupted:
        print("interrupted: state saved, every trial resumes from its last epoch", file=sys.stderr)
        print(f"next: continue with: {resume}")  # the command once, on stdout with the other next steps
        return 130
    print(f"next: nas status {result.name}{where}   (leaderboard)")
    if result.best:
        print(f"      nas plot {result.name}{where}     (objective per trial and per hyperparameter, PNG)")
        print(f"      nas export {result.name}{where}   (the best model: .keras and SavedModel, with a model card)")
    return 0 if result.best else 1


def _resume(name: str, storage: str | None, changes: dict[str, Any]) -> int:
    from nas import api  # imports no Keras: the run's backend is selected before it is

    return _report(api.resume(name, storage=storage, **changes).result)


def resume_changes(args: argparse.Namespace) -> dict[str, Any]:
    """What `nas resume` was given: its flags are options a resume may change (``RESUME_MAY_CHANGE``)."""
    changes = {k: getattr(args, k) for k in RESUME_MAY_CHANGE
               if k not in ("name", "storage", "verbose") and getattr(args, k, None) is not None}
    if args.verbose:
        changes["verbose"] = True
    return changes


def cmd_resume(args: argparse.Namespace) -> int:
    return _resume(args.name, args.storage, resume_changes(args))


def given(argv: Sequence[str] | None) -> dict[str, Any]:
    """The options of ``nas search`` given on its command line, none of argparse's defaults: a config file's
    keys yield to these only, and the rest are ``SearchOptions``' defaults (one set of defaults, the API's)."""
    values = vars(build_parser(suppress_defaults=True).parse_args(argv))
    return {k: v for k, v in values.items() if k not in ("command", "debug", "resume", "config", "dump_config")}


def cmd_search(args: argparse.Namespace) -> int:
    """``nas search``: the Python API's ``nas.search`` with the command line's options (one code path)."""
    from nas import api  # imports no Keras: the search selects its backend before it does

    options = given(args.argv)
    if args.dump_config:
        print(api.dump_config(api.search_options(args.config, **options)), end="")
        return 0
    if args.resume:
        if not args.name:
            raise NasError("--resume needs --name NAME naming the run to continue")
        api.search_options(args.config, **options)  # the same checks of the keys and values as a search
        changes = {k: v for k, v in options.items() if k not in ("name", "storage")}
        return _resume(args.name, args.storage, changes)
    return _report(api.search(config=args.config, **options).result)


# -- status, runs, plot --------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from nas.storage.store import ExperimentStore
    from nas.views.report import print_status, status_json

    data = status_json(ExperimentStore.open(args.name, args.storage))
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        print_status(data, args.top)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from nas.views.report import list_runs, print_runs

    runs = list_runs(args.storage)
    if args.json:
        print(json.dumps(runs, indent=1, default=str))
    else:
        print_runs(runs)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nas.storage.store import ExperimentStore
    from nas.views.plot import plot_run

    store = ExperimentStore.open(args.name, args.storage)
    out = Path(args.out) if args.out else store.root / "plot.png"
    if out.suffix.lower() != ".png":
        raise NasError(f"--out {args.out!r} is not valid; give a file name ending in .png")
    print(f"plot: {plot_run(store.spec(), store.trials(), out)}")
    return 0


# -- list ---------------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from nas.plugins.registry import SPACES, STRATEGIES, available, describe

    for group, title in ((SPACES, "spaces"), (STRATEGIES, "strategies")):
        print(f"{title}:")
        for name, target in available(group).items():
            try:
                doc = describe(group, name)
            except NasError as e:
                doc = f"(cannot load: {e})"
            print(f"  {name:<12} {doc}  [{target}]")
    return 0


# -- export -------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from nas.views.export import ExportOptions, parse_formats, run_export

    opts = ExportOptions(name=args.name, storage=args.storage, trial=args.trial, formats=parse_formats(args.formats),
                         out=args.out, retrain=args.retrain, epochs=args.epochs)
    result = run_export(opts, log=lambda msg: print(msg, flush=True))
    print(f"exported trial {result.trial_id} ({', '.join(result.files)}) in {result.seconds:.1f}s, every format "
          f"verified: {result.directory}")
    return 0


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "status": cmd_status, "runs": cmd_runs, "plot": cmd_plot,
            "export": cmd_export, "list": cmd_list}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except NasError as e:
        if args.debug:
            raise
        print(f"nas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nas runs --json | head -1`: the reader left; end quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 128 + signal.SIGPIPE
    except Exception as e:  # a bug or an environment problem: one line here, the traceback with --debug
        if args.debug:
            raise
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:  # full, read-only or over-quota storage
            print(f"nas: error: cannot write {e.filename or 'the storage'}: {e.strerror}; free space or fix the "
                  f"storage (nothing written before was changed)", file=sys.stderr)
            return StorageError.exit_code
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"nas: internal error: {type(e).__name__}: {first} (run `nas --debug {args.command} ...` for the "
              f"traceback)", file=sys.stderr)
        return 1


def run() -> int:
    """The ``nas`` command (and ``python -m nas.cli``): ``main`` in a process of nas's own, where Keras's imports of
    scikit-learn and matplotlib, which no command uses through Keras, are skipped (nas.runtime.imports)."""
    skip_optional_imports(own_process=True)
    return main()


if __name__ == "__main__":
    sys.exit(run())
