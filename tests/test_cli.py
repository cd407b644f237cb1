"""The command line: one convention for shared options, one-line errors, argument shapes."""

from __future__ import annotations

import errno
import os

import pytest

from streamvc_rvq.cli import DEFAULT_EXPERIMENT, build_parser, main, os_error_line

SUBCOMMANDS_WITH_THREADS = ("prepare-data", "labels", "reference-levels", "train", "evaluate", "infer")


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_threads_option_defaults_to_zero_meaning_the_default():
    choices = _subparsers()
    for name in SUBCOMMANDS_WITH_THREADS:
        threads = next(a for a in choices[name]._actions if a.dest == "threads")
        assert threads.default == 0 and "default 0" in threads.help, name


def test_the_default_experiment_has_one_home():
    choices = _subparsers()
    for name in ("train", "evaluate", "verdict", "model-summary"):
        experiment = next(a for a in choices[name]._actions if a.dest == "experiment")
        assert experiment.default == DEFAULT_EXPERIMENT, name
    # infer's checkpoint carries its config: --experiment applies only with --config (then the default)
    assert choices["infer"].get_default("experiment") is None


def test_ladder_takes_one_scalars_group_per_run_and_ab_needs_its_name(tmp_path):
    common = ["--arms", "a", "b", "--verdicts", "v1", "--metrics", "m1", "--output", "o", "--report", "r",
              "--plots-dir", "p"]
    args = build_parser().parse_args(["ladder", *common, "--scalars", "a/2.json", "a/4.json", "--scalars", "b/2.json"])
    assert [[str(p) for p in group] for group in args.scalars] == [["a/2.json", "a/4.json"], ["b/2.json"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ab", *common])  # --name is required
    assert build_parser().parse_args(["ab", *common, "--name", "beta"]).name == "beta"


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: fast}\n")
    assert main(["model-summary", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train.lr" in err


def test_os_errors_name_the_path_and_the_cause():
    assert os_error_line(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/x/m.csv")) == \
        f"/x/m.csv: {os.strerror(errno.ENOENT)}"
    assert os_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == \
        f"{os.strerror(errno.ENOSPC)} (the operating system named no file)"


def test_an_unknown_quality_measure_is_one_line_before_any_file_is_read(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--config", "config/micro.yaml", "--manifest", str(tmp_path / "none.csv"),
                 "--checkpoint", str(tmp_path / "none.pt"), "--samples-dir", str(tmp_path / "s"), "--output", str(out),
                 "--quality-measures", "dnsmos", "mos"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'mos'" in err
    assert not out.exists()


def test_threads_bound_the_native_pools_numpy_and_scipy_load(tmp_path):
    """``--threads 1`` holds the BLAS/OpenMP pools to one thread as well as torch (left alone they take every
    core); the control, the same process without it, gets the machine's count where it has more than one."""
    import json
    import subprocess
    import sys

    probe = ("import json, sys\nfrom streamvc_rvq.cli import main\n"
             "if sys.argv[1] == 'threads': main(['reference-levels', '--manifest', sys.argv[2], '--threads', '1', "
             "'--output', sys.argv[2] + '.json'])\n"
             "import numpy, scipy.linalg, threadpoolctl\n"
             "print(json.dumps(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info()})))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

    def pools(mode: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", probe, mode, str(tmp_path / "missing.csv")], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert pools("threads") == [1]
    if (os.cpu_count() or 1) > 1:
        assert max(pools("none")) > 1
