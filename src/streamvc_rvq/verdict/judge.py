"""The ``verdict``, ``ab`` and ``ladder`` commands: read metrics files, apply the pure decision
logic, write the JSON answer, the plots and the Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from streamvc_rvq.atomic import atomic_write_bytes, write_json
from streamvc_rvq.metrics_view import load, load_checkpoints
from streamvc_rvq.config import ab_target, config_hash, ladder_command, snakemake_command
from streamvc_rvq.reporting import plots
from streamvc_rvq.reporting import report as reporting
from streamvc_rvq.verdict.comparison import candidate_decision, compare_arms, control_comparison, decision_advice
from streamvc_rvq.verdict.confidence import scale_fidelity, seed_agreement
from streamvc_rvq.config import arm_of
from streamvc_rvq.training.scalars_file import read_segment_scalars, segment_experiment
from streamvc_rvq.metrics_view import training_config
from streamvc_rvq.reporting.ladder_report import plot_quality as plot_ladder_quality
from streamvc_rvq.reporting.ladder_report import plot_stage_metric, write_ladder_report
from streamvc_rvq.verdict.remedy_ladder import PHASE2_EXPERIMENT, phase2_overlay, rank_ladder
from streamvc_rvq.reporting.samples_page import write_samples_pages
from streamvc_rvq.reporting.verdict_page import write_markdown_page
from streamvc_rvq.verdict.decision import COMMITMENT_COST_AB, decide


def write_verdict(
    cfg: dict, *, metrics: Sequence[Path], control_metrics: Sequence[Path], scalars: Sequence[Path],
    output: Path, report: Path, plots_dir: Path, reference_levels: Path | None = None,
    samples_dirs: Sequence[Path] = (), manifest: Path | None = None, samples_pages: Path | None = None,
    report_html: Path | None = None, seed_verdicts: Sequence[Path] = (), fidelity_verdict: Path | None = None, fidelity_metrics: Sequence[Path] = (),
) -> dict:
    checkpoints = load_checkpoints(metrics)
    reference = load(reference_levels) if reference_levels else None
    verdict = decide(checkpoints, steps=cfg["train"]["steps"], progressive_steps=cfg["model"]["rvq"]["progressive_steps"],
                     reference=reference, ladder_command=ladder_command(cfg), scale=cfg["train"].get("scale"),
                     ab_command=snakemake_command(cfg, ab_target(cfg, COMMITMENT_COST_AB)))
    verdict["reference_levels"] = reference
    verdict["experiment"] = cfg.get("experiment", verdict.get("experiment"))
    verdict["seed"] = cfg["train"].get("seed")
    if seed_verdicts:
        seeds = seed_agreement([verdict, *(load(p) for p in seed_verdicts)])
        verdict["seeds"] = seeds
        if not seeds["stable"]:
            verdict["next_action"] = f"{seeds['statement']}; this seed's reading: {verdict['next_action']}"
    larger = None
    if fidelity_verdict is not None:
        larger = load(fidelity_verdict), load_checkpoints(fidelity_metrics)
        verdict["fidelity"] = scale_fidelity(verdict, checkpoints, *larger)
        verdict["fidelity"]["experiment"] = larger[0].get("experiment")
    verdict["provenance"] = {
        "preset": cfg.get("preset"),
        "corpus": cfg.get("corpus", {}).get("name"),
        "config_hash": config_hash(cfg),
        "training_config_hashes": sorted({m["provenance"]["training_config_hash"] for m in checkpoints if "provenance" in m}),
    }
    control, control_cps = None, None
    if control_metrics:
        control_cps = load_checkpoints(control_metrics)
        control = control_comparison(checkpoints, control_cps)
        control["experiment"] = control_cps[0].get("experiment")
        verdict["control"] = control
    pngs = _verdict_plots(checkpoints, read_segment_scalars(scalars) or None, reference, verdict,
                          None if larger is None else larger[1], Path(plots_dir))
    pages: list[Path] = []
    if samples_pages is not None:
        if len(samples_dirs) != len(metrics) or manifest is None:
            raise ValueError("the samples pages need --manifest and one --samples-dirs entry per --metrics file, in the same order")
        by_step = {load(m)["step"]: Path(d) for m, d in zip(metrics, samples_dirs)}
        pages = write_samples_pages(checkpoints, [by_step[cp["step"]] for cp in checkpoints], manifest, samples_pages,
                                    f"{verdict['experiment']}: samples")
    reporting.write_verdict_report(verdict, checkpoints, control, pngs, Path(report), samples_pages=pages,
                                   control_checkpoints=control_cps)
    if report_html is not None:
        write_markdown_page(Path(report), report_html, f"{verdict['experiment']}: {verdict['class']}")
    write_json(output, verdict)
    print(f"{verdict['experiment']}: {verdict['class'].upper()} ({verdict['branch']}) -> {verdict['next_action']}")
    return verdict


def _verdict_plots(checkpoints: list[dict], scalars: dict | None, reference: dict | None, verdict: dict,
                   larger_checkpoints: list[dict] | None, plots_dir: Path) -> dict[str, Path]:
    """The verdict report's plots, by caption: codebook, pre-RVQ std, losses; the two scales when
    the fidelity run is given; conversion quality and "does it convert" when outputs were measured."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    pngs = {
        "Codebook perplexity and usage per stage": plots.plot_codebook(checkpoints, scalars, plots_dir / "codebook.png"),
        "Pre-RVQ standard deviation": plots.plot_pre_rvq_std(checkpoints, scalars, plots_dir / "pre_rvq_std.png"),
        "Losses": plots.plot_losses(checkpoints, scalars, plots_dir / "losses.png"),
    }
    if larger_checkpoints is not None:
        pngs["The two protocol scales in protocol time"] = plots.plot_fidelity(
            checkpoints, larger_checkpoints, verdict["fidelity"], plots_dir / "fidelity.png")
    if any((cp.get("outputs") or {}).get("quality") for cp in checkpoints):
        pngs["Conversion quality against the corpus's levels"] = plots.plot_quality(
            checkpoints, reference, plots_dir / "quality.png")
        pngs["Does it convert? Speaker, pitch level and content per checkpoint"] = plots.plot_conversion(
            checkpoints, plots_dir / "conversion.png")
    return pngs


def write_ab(
    name: str, *, arms: Sequence[str], verdicts: Sequence[Path], metrics: Sequence[Path], output: Path,
    report: Path, plots_dir: Path,
) -> dict:
    """Group the runs by arm and seed, compare them, write JSON, plot and report."""
    runs: dict[str, dict[int, list[dict]]] = {arm: {} for arm in arms}
    seed_of: dict[str, int] = {}
    for m in load_checkpoints(metrics):
        seed_of[m["experiment"]] = int(m["seed"])
        runs[arm_of(m["experiment"], arms)].setdefault(int(m["seed"]), []).append(m)
    run_verdicts: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for path in verdicts:
        v = load(path)
        run_verdicts[arm_of(v["experiment"], arms)][seed_of[v["experiment"]]] = v
    comparison = compare_arms(runs, run_verdicts)
    comparison["name"] = name
    comparison["decision"] = candidate_decision(comparison)
    comparison["advice"] = decision_advice(comparison["decision"])
    plots_dir = Path(plots_dir)
    pngs = {"Perplexity per arm": plots.plot_ab(comparison, plots_dir / "perplexity.png")}
    reporting.write_ab_report(comparison, Path(report), pngs)
    write_json(output, comparison)
    return comparison


def write_phase2_overlay(path: Path, ladder: dict, configs: Mapping[str, dict], generator: Mapping) -> None:
    """``phase2.yaml``: the ladder's winner in the Phase 2 generator (GAN losses, decoder), with how
    sure the ranking is as comments."""
    import yaml

    overlay = phase2_overlay(ladder, configs, generator)
    if overlay is None:
        raise ValueError("the ladder ranked no arm: no Phase 2 overlay to write")
    top = ladder["ranking"][0]["arm"]
    header = [f"# Phase 2 (the design note's GAN stage) with the remedy ladder's first arm, {top}.",
              f"# {ladder['certainty']['text']}.",
              "# Use it after the ladder's config files, the target first:",
              f"#   snakemake --cores all <results>/{PHASE2_EXPERIMENT}/verdict.json --configfile <the ladder's files> {path.name}"]
    text = "\n".join(header) + "\n" + yaml.safe_dump(overlay, sort_keys=False)
    atomic_write_bytes(path, text.encode())


def write_ladder(
    *, arms: Sequence[str], verdicts: Sequence[Path], metrics: Sequence[Path], output: Path, report: Path,
    plots_dir: Path, reference_levels: Path | None = None, skipped: Mapping[str, str] | None = None,
    scalars: Sequence[Sequence[Path]] = (), experiments_table: Path | None = None,
    phase2: Path | None = None, generator: Mapping | None = None,
) -> dict:
    """Group the runs by arm and seed, rank the arms, write JSON, plots and report, and
    ``phase2``: the config overlay running the winner in ``generator`` (an experiment's config change).

    ``arms[0]`` is the reference arm; ``scalars``: each run's training scalars files, the
    first seed of each arm drawn as training curves."""
    runs: dict[str, dict[int, list[dict]]] = {arm: {} for arm in arms}
    configs: dict[str, dict] = {}
    seed_of: dict[str, int] = {}
    for m in load_checkpoints(metrics):
        arm = arm_of(m["experiment"], arms)
        seed_of[m["experiment"]] = int(m["seed"])
        runs[arm].setdefault(int(m["seed"]), []).append(m)
        configs.setdefault(arm, training_config(m))
    by_arm: dict[str, dict[int, tuple[dict, list[dict]]]] = {arm: {} for arm in arms}
    for path in verdicts:
        v = load(path)
        arm, seed = arm_of(v["experiment"], arms), seed_of.get(v["experiment"])
        if seed is None:
            raise ValueError(f"{path}: verdict of {v['experiment']!r}, whose metrics were not given")
        by_arm[arm][seed] = (v, runs[arm][seed])
    curves = {}
    for files in scalars:
        arm = arm_of(segment_experiment(files[0]), arms)
        if arm not in curves:
            curves[arm] = read_segment_scalars(files)
    ladder = rank_ladder(by_arm, configs, reference=arms[0], skipped=skipped, scalars=curves)
    reference = load(reference_levels) if reference_levels else None
    plots_dir = Path(plots_dir)
    pngs = {
        "Perplexity per stage, every arm": plot_stage_metric(runs, "perplexity", plots_dir / "perplexity.png",
                                                             reference=arms[0], scalars_by_arm=curves),
        "Usage per stage, every arm": plot_stage_metric(runs, "usage", plots_dir / "usage.png", reference=arms[0],
                                                        scalars_by_arm=curves),
    }
    if any((cp.get("outputs") or {}).get("quality") for seeds in runs.values() for cps in seeds.values() for cp in cps):
        pngs["Conversion quality, every arm"] = plot_ladder_quality(runs, reference, plots_dir / "quality.png",
                                                                    reference=arms[0])
    write_ladder_report(ladder, Path(report), pngs, experiments_table=experiments_table)
    write_json(output, ladder)
    if phase2 is not None:
        write_phase2_overlay(Path(phase2), ladder, configs, generator or {})
    print(ladder["statement"])
    return ladder
