"""``streamvc-rvq``: one subcommand per pipeline step; every Snakemake rule calls one.

The same commands are what a person runs by hand. Errors the user can fix (bad config,
bad input file, too small a corpus, a full, read-only or forbidden disk) print one line
prefixed ``error:`` and exit 2, rather than a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from streamvc_rvq import __version__

EXIT_USER_ERROR = 2
DEFAULT_CONFIG = Path("config/config.yaml")
DEFAULT_EXPERIMENT = "phase1"


class UserError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def _add_config_args(parser: argparse.ArgumentParser, experiment: bool = True) -> None:
    group = parser.add_argument_group("configuration (either --config files or --config-json)")
    group.add_argument(
        "--config", action="extend", nargs="+", type=Path, metavar="YAML",
        help="one or more config files, merged left to right like snakemake --configfile "
             "(e.g. --config config/config.yaml config/quick.yaml; default: config/config.yaml)",
    )
    group.add_argument("--config-json", help="an experiment's resolved config as JSON (what the workflow passes)")
    if experiment:
        group.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                           help=f"experiment name from the config's experiments (default: {DEFAULT_EXPERIMENT})")


def load_experiment_config(args: argparse.Namespace) -> dict:
    """The resolved experiment config from --config-json, or from --config files + --experiment."""
    from streamvc_rvq.config import ConfigError, load_config, resolve_experiment

    try:
        if args.config_json:
            return json.loads(args.config_json)
        paths = args.config or [DEFAULT_CONFIG]
        return resolve_experiment(load_config(*paths), getattr(args, "experiment", DEFAULT_EXPERIMENT))
    except (ConfigError, json.JSONDecodeError) as err:
        raise UserError(str(err)) from None


def _add_labels_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels", default="manifest", metavar="NPZ|none|manifest",
        help="frame labels of the content head: a frame_labels.npz from `streamvc-rvq labels` (what the workflow "
             "passes), none, or manifest: the corpus's own label files (default)",
    )


def _labels(value: str) -> str | Path | None:
    return None if value == "none" else value if value == "manifest" else Path(value)


# read by the native thread pools beside torch's (OpenBLAS, OpenMP, MKL) when their library loads
NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _bound_native_pools(threads: int | None) -> None:
    """``--threads`` bounds the BLAS and OpenMP pools numpy and scipy load too: left to themselves they
    take every core (an evaluation with ``--threads 1`` used 1.4 cores). Set before any of them loads;
    a value already in the environment (Snakemake sets the job's) wins."""
    if threads and threads > 0:
        for name in NATIVE_THREAD_VARIABLES:
            os.environ.setdefault(name, str(threads))


def _set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from streamvc_rvq.config import data_dir, load_config
    from streamvc_rvq.data.prepare import CorpusError, describe_splits, prepare_corpus

    _set_threads(args.threads)
    corpus = json.loads(args.corpus_json) if args.corpus_json else load_config(*(args.config or [DEFAULT_CONFIG]))["corpus"]
    out_dir = args.output_dir or Path(data_dir(corpus["name"]))
    try:
        summary = prepare_corpus(corpus, Path(out_dir), sample_rate=args.sample_rate, hop_length=args.hop_length,
                                 workers=args.threads or None)
    except CorpusError as err:
        raise UserError(str(err)) from None
    print(json.dumps(summary, indent=2))
    for line in describe_splits(summary):
        print(line, file=sys.stderr)


def _snapshot_policy(args: argparse.Namespace):
    """The flags; for those not given, the --config files' ``snapshots`` section (the
    schema's defaults with --config-json, which carries one experiment's config only)."""
    from streamvc_rvq.config import ConfigError, load_config, validate
    from streamvc_rvq.training.snapshots import SnapshotPolicy

    try:
        defaults = (validate({}) if args.config_json else load_config(*(args.config or [DEFAULT_CONFIG])))["snapshots"]
    except ConfigError as err:
        raise UserError(str(err)) from None
    steps, minutes = args.snapshot_every_steps, args.snapshot_every_minutes
    return SnapshotPolicy(defaults["every_steps"] if steps is None else steps,
                          defaults["every_minutes"] if minutes is None else minutes)


def cmd_train(args: argparse.Namespace) -> None:
    from streamvc_rvq.training.trainer import TrainingError, train_to_step

    cfg = load_experiment_config(args)
    _set_threads(args.threads or cfg["train"]["num_threads"])
    try:
        train_to_step(
            cfg, manifest=args.manifest, step=args.step, output=args.output, resume=args.resume,
            tensorboard_dir=args.tensorboard, device=args.device, labels=_labels(args.labels),
            snapshots=_snapshot_policy(args), scalars_output=args.scalars_output,
        )
    except TrainingError as err:
        raise UserError(str(err)) from None


def cmd_evaluate(args: argparse.Namespace) -> None:
    from streamvc_rvq.evaluation.evaluate import evaluate_checkpoint

    from streamvc_rvq.data.content_labels import LabelError
    from streamvc_rvq.training.checkpoint import CheckpointError

    from streamvc_rvq.quality.scorer import MEASURES

    cfg = load_experiment_config(args)
    unknown = sorted(set(args.quality_measures or ()) - set(MEASURES))
    if unknown:
        raise UserError(f"--quality-measures: unknown {unknown}; choose from {list(MEASURES)}")
    _set_threads(args.threads)
    try:
        evaluate_checkpoint(
            cfg, checkpoint=args.checkpoint, manifest=args.manifest, scalars=args.scalars,
            samples_dir=args.samples_dir, output=args.output, device=args.device, labels=_labels(args.labels),
            quality_measures=args.quality_measures,
        )
    except (CheckpointError, LabelError) as err:
        raise UserError(str(err)) from None


def cmd_labels(args: argparse.Namespace) -> None:
    from streamvc_rvq.data.content_labels import LabelError, make_frame_labels, save_frame_labels

    _set_threads(args.threads)
    try:
        labels, info = make_frame_labels(
            args.manifest, args.method, num_clusters=args.num_clusters, max_frames=args.max_frames,
            iterations=args.iterations, seed=args.seed, sample_rate=args.sample_rate, hop_length=args.hop_length,
        )
    except LabelError as err:
        raise UserError(str(err)) from None
    save_frame_labels(args.output, labels, info)
    print(json.dumps(info, indent=2))


def cmd_reference_levels(args: argparse.Namespace) -> None:
    from streamvc_rvq.atomic import write_json
    from streamvc_rvq.quality.reference_levels import reference_levels, summary_line

    _set_threads(args.threads)
    try:
        levels = reference_levels(args.manifest, measures=args.measures, max_utterances=args.max_utterances,
                                  sample_rate=args.sample_rate)
    except ValueError as err:
        raise UserError(str(err)) from None
    write_json(args.output, levels)
    print(summary_line(levels))


def cmd_experiments(args: argparse.Namespace) -> None:
    from streamvc_rvq.atomic import atomic_write_bytes
    from streamvc_rvq.reporting.experiments_table import build_table, compact, read_runs, sort_rows, to_csv, to_markdown

    runs = read_runs(args.results)
    if not runs:
        raise UserError(f"no evaluated experiment under {args.results} (no metrics/step_*.json)")
    columns, rows = build_table(runs)
    try:
        rows = sort_rows(rows, args.sort, args.descending)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None
    if args.csv:
        atomic_write_bytes(args.csv, to_csv(columns, rows).encode())
    if args.markdown:
        atomic_write_bytes(args.markdown, to_markdown(columns, rows).encode())
    print(to_markdown(columns if args.wide else compact(columns, rows), rows), end="")


def cmd_verdict(args: argparse.Namespace) -> None:
    from streamvc_rvq.verdict.judge import write_verdict

    cfg = load_experiment_config(args)
    write_verdict(
        cfg, metrics=args.metrics, control_metrics=args.control_metrics, scalars=args.scalars,
        output=args.output, report=args.report, plots_dir=args.plots_dir, reference_levels=args.reference_levels,
        samples_dirs=args.samples_dirs, manifest=args.manifest, samples_pages=args.samples_pages,
        report_html=args.report_html, seed_verdicts=args.seed_verdicts, fidelity_verdict=args.fidelity_verdict, fidelity_metrics=args.fidelity_metrics,
    )


def cmd_ab(args: argparse.Namespace) -> None:
    from streamvc_rvq.verdict.judge import write_ab

    write_ab(args.name, arms=args.arms, verdicts=args.verdicts, metrics=args.metrics, output=args.output, report=args.report, plots_dir=args.plots_dir)


def cmd_ladder(args: argparse.Namespace) -> None:
    from streamvc_rvq.verdict.judge import write_ladder

    skipped = {}
    for item in args.skipped:
        arm, sep, reason = item.partition("=")
        if not sep:
            raise UserError(f"--skipped takes ARM=REASON, got {item!r}")
        skipped[arm] = reason
    write_ladder(
        arms=args.arms, verdicts=args.verdicts, metrics=args.metrics, output=args.output, report=args.report,
        plots_dir=args.plots_dir, reference_levels=args.reference_levels, skipped=skipped,
        scalars=args.scalars, experiments_table=args.experiments_table, phase2=args.phase2,
        generator=_json_arg(args.generator, "--generator") if args.generator else None,
    )


def _json_arg(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{flag} takes a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} takes a JSON object, got {text!r}")
    return value


def cmd_infer(args: argparse.Namespace) -> None:
    from streamvc_rvq.inference.infer_file import InferenceError, convert_file

    _set_threads(args.threads)
    given = args.config or args.config_json
    if args.experiment is not None and not given:
        raise UserError("infer: --experiment picks the experiment of --config to check the checkpoint against; "
                        "without --config the checkpoint's own config is used: drop --experiment or add --config")
    if given:
        args.experiment = args.experiment or DEFAULT_EXPERIMENT
    cfg = load_experiment_config(args) if given else None
    try:
        stats = convert_file(
            checkpoint=args.checkpoint, config=cfg, source=args.source, target_ref=args.target_ref,
            output=args.output, device=args.device, stream=args.stream, precision=args.precision,
            progress=_progress_printer("converting"),
        )
    except InferenceError as err:
        raise UserError(str(err)) from None
    print(json.dumps(stats, indent=2))


def _progress_printer(what: str):
    """``progress(done, total)`` printing to stderr at every tenth of the work, with an ETA."""
    import time

    started, shown = time.monotonic(), 0

    def progress(done: int, total: int) -> None:
        nonlocal shown
        tenth = 10 * done // total
        if total < 4 or tenth == shown:
            return
        shown = tenth
        elapsed = time.monotonic() - started
        eta = elapsed * (total - done) / max(done, 1)
        print(f"{what}: {100 * done // total} % ({elapsed:.0f} s, about {eta:.0f} s left)", file=sys.stderr, flush=True)

    return progress


def cmd_plan(args: argparse.Namespace) -> None:
    from streamvc_rvq.config import ConfigError
    from streamvc_rvq.plan import PlanError, plan

    try:
        print(plan(args.targets, DEFAULT_CONFIG, args.configfile or (), args.cores))
    except (PlanError, ConfigError) as err:
        raise UserError(str(err)) from None


def cmd_model_summary(args: argparse.Namespace) -> None:
    from streamvc_rvq.model.summary import model_summary

    print(model_summary(load_experiment_config(args)["model"]))


def _add_threads_arg(parser: argparse.ArgumentParser, what: str = "torch CPU threads", zero: str = "torch's default") -> None:
    parser.add_argument("--threads", type=int, default=0, help=f"{what} (default 0: {zero})")


def _add_data_parsers(sub) -> None:
    p = sub.add_parser("prepare-data", help="build or ingest a corpus: manifest.csv, rejected.csv, 16 kHz audio, frame labels")
    p.add_argument("--config", action="extend", nargs="+", type=Path, metavar="YAML",
                   help="one or more config files, merged left to right; the corpus section is used")
    p.add_argument("--corpus-json", help="the corpus section as JSON (what the workflow passes)")
    p.add_argument("--output-dir", type=Path, help="default: results/data/{corpus.name}")
    p.add_argument("--sample-rate", type=int, default=16000, help="target sample rate (default 16000)")
    p.add_argument("--hop-length", type=int, default=320, help="the model's samples per frame, for label files (default 320 = 20 ms)")
    _add_threads_arg(p, "worker processes and torch threads", "2 workers")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("labels", help="frame labels for the content encoder: the corpus's own, or k-means on MFCCs (HuBERT's first iteration)")
    p.add_argument("--manifest", required=True, type=Path, help="results/data/{corpus}/manifest.csv")
    p.add_argument("--method", default="auto", choices=["auto", "files", "mfcc_kmeans"],
                   help="files: the corpus's label files; mfcc_kmeans: k-means on the training split's MFCCs + deltas; "
                        "auto: files when every utterance has them (default)")
    p.add_argument("--num-clusters", type=int, default=100, help="k-means clusters = label classes (default 100, as HuBERT)")
    p.add_argument("--max-frames", type=int, default=200000, help="training frames k-means is fitted on (default 200000)")
    p.add_argument("--iterations", type=int, default=50, help="Lloyd iterations (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame subsample and the k-means seeds")
    p.add_argument("--sample-rate", type=int, default=16000, help="the corpus's sample rate (default 16000)")
    p.add_argument("--hop-length", type=int, default=320, help="samples per frame (default 320 = 20 ms)")
    p.add_argument("--output", required=True, type=Path, help="frame_labels.npz to write (atomically)")
    _add_threads_arg(p)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("reference-levels", help="the quality measures on the corpus's own audio: speaker separation (EER, AUC), DNSMOS, recognition error")
    p.add_argument("--manifest", required=True, type=Path, help="results/data/{corpus}/manifest.csv (held-out and validation speakers are used)")
    p.add_argument("--measures", nargs="*", default=["speaker", "dnsmos", "recognition"],
                   help="which of speaker, dnsmos, recognition (default: all three)")
    p.add_argument("--max-utterances", type=int, default=64, help="utterances measured, spread evenly over speakers (default 64)")
    p.add_argument("--sample-rate", type=int, default=16000, help="the corpus's sample rate (default 16000)")
    p.add_argument("--output", required=True, type=Path, help="reference_levels.json to write (atomically)")
    _add_threads_arg(p)
    p.set_defaults(func=cmd_reference_levels)


def _add_training_parsers(sub) -> None:
    p = sub.add_parser("train", help="train an experiment to one step target, from scratch or from the previous checkpoint")
    _add_config_args(p)
    p.add_argument("--manifest", required=True, type=Path, help="results/data/{corpus}/manifest.csv")
    p.add_argument("--step", required=True, type=int, help="global step to train to")
    p.add_argument("--resume", type=Path, help="checkpoint to continue from (the previous step target)")
    p.add_argument("--output", required=True, type=Path, help="checkpoint to write (atomically)")
    p.add_argument("--scalars-output", type=Path, help="JSON of the points this target logs (what evaluate and verdict read)")
    p.add_argument("--tensorboard", type=Path, help="TensorBoard log directory (one continuous run per experiment)")
    p.add_argument("--device", default=None, help="auto | cpu | mps | cuda[:N]; overrides train.device")
    _add_threads_arg(p, zero="train.num_threads, else torch's default")
    p.add_argument("--snapshot-every-steps", type=int, metavar="N",
                   help="write a resumable snapshot every N steps (0: off; default: the config's snapshots.every_steps)")
    p.add_argument("--snapshot-every-minutes", type=float, metavar="M",
                   help="... and every M minutes (0: off; default: the config's snapshots.every_minutes)")
    _add_labels_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics and sample conversions of one checkpoint over the validation split")
    _add_config_args(p)
    p.add_argument("--manifest", required=True, type=Path, help="results/data/{corpus}/manifest.csv (the validation and held-out splits are used)")
    p.add_argument("--checkpoint", required=True, type=Path, help="the step_N.pt to evaluate")
    p.add_argument("--scalars", nargs="*", type=Path, default=[], help="the training scalars files of the chain up to it (training-curve facts)")
    p.add_argument("--samples-dir", required=True, type=Path, help="where converted and reconstructed wavs go")
    p.add_argument("--output", required=True, type=Path, help="metrics JSON to write")
    p.add_argument("--device", default=None, help="auto | cpu | mps | cuda[:N]; overrides evaluation.device")
    p.add_argument("--quality-measures", nargs="*", default=None, metavar="MEASURE",
                   help="the quality measures to run here (of speaker, dnsmos, recognition; none: pitch and signal "
                        "only); overrides evaluation.quality_measures (the workflow passes those the verdict reads at "
                        "this step)")
    _add_threads_arg(p)
    _add_labels_arg(p)
    p.set_defaults(func=cmd_evaluate)


def _add_judging_parsers(sub) -> None:
    p = sub.add_parser("verdict", help="apply the Phase 1 checkpoint and decision tables; write verdict.json and a report")
    _add_config_args(p)
    p.add_argument("--metrics", nargs="+", required=True, type=Path, help="the experiment's metrics files, in step order")
    p.add_argument("--control-metrics", nargs="*", type=Path, default=[], help="metrics files of the pre-fix control")
    p.add_argument("--reference-levels", type=Path, help="results/data/{corpus}/reference_levels.json: the corpus's own "
                   "levels of the quality measures (without it, the criteria that need them are not evaluated)")
    p.add_argument("--scalars", nargs="*", type=Path, default=[], help="the experiment's training scalars files (curves in the plots)")
    p.add_argument("--output", required=True, type=Path, help="verdict.json to write")
    p.add_argument("--report", required=True, type=Path, help="Markdown report to write")
    p.add_argument("--plots-dir", required=True, type=Path, help="where the report's PNG plots go")
    p.add_argument("--samples-dirs", nargs="*", type=Path, default=[], help="the samples directory of each --metrics file, same order")
    p.add_argument("--manifest", type=Path, help="results/data/{corpus}/manifest.csv (the samples pages play each source and target reference)")
    p.add_argument("--samples-pages", type=Path, help="folder of HTML pages to write, one per checkpoint (split into parts "
                   "past the report's page budget), where every sample plays")
    p.add_argument("--report-html", type=Path, help="the Markdown report as one self-contained HTML page (what "
                   "Snakemake's HTML report shows first)")
    p.add_argument("--seed-verdicts", nargs="*", type=Path, default=[],
                   help="verdict.json of the same experiment at the other seeds (verdict.seeds): class per seed and spread")
    p.add_argument("--fidelity-verdict", type=Path,
                   help="verdict.json of the same experiment at a larger protocol scale (verdict.fidelity_times)")
    p.add_argument("--fidelity-metrics", nargs="*", type=Path, default=[], help="that run's metrics files")
    p.set_defaults(func=cmd_verdict)

    arms = {}
    for name, help_, func in (("ab", "compare the arms of an A/B test at every checkpoint", cmd_ab),
                              ("ladder", "rank the Phase 2 remedy arms by the protocol's criteria and conversion quality", cmd_ladder)):
        p = arms[name] = sub.add_parser(name, help=help_)
        p.add_argument("--arms", nargs="+", required=True,
                       help="the compared experiments, the reference first (seed variants {arm}_s{seed} are grouped under their arm)")
        p.add_argument("--verdicts", nargs="+", required=True, type=Path, help="verdict.json of every run of every arm")
        p.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics files of every run of every arm")
        p.add_argument("--output", required=True, type=Path, help="JSON to write")
        p.add_argument("--report", required=True, type=Path, help="Markdown report to write")
        p.add_argument("--plots-dir", required=True, type=Path, help="where the PNG plots go")
        p.set_defaults(func=func)
    arms["ab"].add_argument("--name", required=True, help="comparison name (a key of the config's ab section)")
    p = arms["ladder"]
    p.add_argument("--reference-levels", type=Path, help="the corpus's reference_levels.json (dashed lines in the quality plot)")
    p.add_argument("--scalars", nargs="+", type=Path, action="append", default=[],
                   help="the training scalars files of one run, once per run (training curves in the plots)")
    p.add_argument("--skipped", nargs="*", default=[], metavar="ARM=REASON", help="arms left out of the ladder, with the reason")
    p.add_argument("--experiments-table", type=Path, help="the experiments table the report links to")
    p.add_argument("--phase2", type=Path, help="phase2.yaml to write: the winner with the GAN losses on (a --configfile overlay)")
    p.add_argument("--generator", help='the Phase 2 generator phase2.yaml runs the winner in: an experiment\'s config change as '
                   'JSON (e.g. \'{"train": {"loss_weights": {"adversarial": 1.0}}}\')')


def _add_tool_parsers(sub) -> None:
    p = sub.add_parser("experiments", help="one table of every evaluated experiment: the config values that differ, verdict and key metrics per checkpoint")
    p.add_argument("--results", type=Path, default=Path("results"), help="where to look for */metrics/step_*.json (default results)")
    p.add_argument("--sort", help="column to sort by, e.g. class or perplexity_q0@10000 (a checkpoint step)")
    p.add_argument("--descending", action="store_true", help="sort from the largest value")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    p.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    p.add_argument("--wide", action="store_true", help="print every column (default: those holding a value, the "
                   "metrics at the last checkpoint only; the CSV and Markdown files always hold every column)")
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("plan", help="what `snakemake TARGET` would run: jobs per rule, training steps and device, "
                       "and on a CPU the measured training time (run it in the workflow's folder)")
    p.add_argument("targets", nargs="+", help="snakemake targets, e.g. results/phase1/verdict.json")
    p.add_argument("--configfile", nargs="+", help="config files after config/config.yaml, as snakemake's --configfile")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="the cores snakemake would get (default: all)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("infer", help="convert SOURCE to the voice of TARGET_REF with a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path, help="a step_N.pt written by `train` (its config travels with it)")
    _add_config_args(p)
    p.add_argument("--source", required=True, type=Path, help="WAV/FLAC, any sample rate or channel count")
    p.add_argument("--target-ref", required=True, type=Path, help="reference recording of the target speaker")
    p.add_argument("--output", required=True, type=Path, help="WAV to write (replaced only once fully written)")
    p.add_argument("--device", default="cpu", help="auto | cpu | mps | cuda[:N] (default cpu)")
    p.add_argument("--stream", action="store_true", help="process 20 ms chunks through the streaming path (causal configs only)")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default), autocast to bf16 (CUDA, AVX-512/AMX CPUs) / fp16 (MPS), or int8 products "
                   "(CPU: ~1.7x faster streaming, slower offline, its deviation model-dependent); the code search stays fp32")
    _add_threads_arg(p)
    # the checkpoint carries its config: --experiment only names the section of --config to check it against
    p.set_defaults(func=cmd_infer, experiment=None)

    p = sub.add_parser("model-summary", help="parameters and multiply-accumulates per second of audio, per component")
    _add_config_args(p)
    p.set_defaults(func=cmd_model_summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamvc-rvq",
        description="StreamVC with a residual vector quantizer: corpus, training, evaluation and the Phase 1 verdict.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parsers(sub)
    _add_training_parsers(sub)
    _add_judging_parsers(sub)
    _add_tool_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _bound_native_pools(getattr(args, "threads", None))
    try:
        args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # disk full, read-only, no permission: the file system's, not a bug
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def os_error_line(err: OSError) -> str:
    """One line naming the path and the cause (a WriteError already does)."""
    from streamvc_rvq.atomic import WriteError

    if isinstance(err, WriteError) or not err.strerror:
        return " ".join(str(err).split())
    if not err.filename:
        return f"{err.strerror} (the operating system named no file)"
    return f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "") + f": {err.strerror}"


if __name__ == "__main__":
    sys.exit(main())
