"""The bare command, `python reproduce.py --table 1`: with no --profile or --jobs, the profile and
the concurrency are chosen for the machine (benchmark.machine: claims and one run per core on a
CPU, paper with a CUDA device or under Slurm) and said in the first line with the estimate;
explicit options keep their meaning; a long sweep is said before training, with ways to shorten
it, and asked about only when a person is at the console. Nothing here trains: dry runs, the
resolving functions called directly, and a launcher that fails the test if it is reached."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixtures_datasets as fx  # noqa: E402

from benchmark import machine, pipeline  # noqa: E402
from benchmark.cli import build_parser, main, request_from  # noqa: E402
from benchmark.pipeline import Request  # noqa: E402

CPU_LINE = ("table1: profile claims and 2 runs at a time, 1 thread each, chosen for this machine "
            "(2 CPU cores, no CUDA device; --profile and --jobs choose otherwise): estimate ")


@pytest.fixture
def cpu_machine(monkeypatch):
    """A 2-core machine without CUDA, whatever this one is."""
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def gpu_machine(monkeypatch):
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def data(tmp_path):
    """MNIST's files in place (a dry run looks for them, it does not load them); no OMNIGLOT."""
    root = tmp_path / "data"
    fx.write_idx_mnist_raw(root)
    return root


def test_the_command_line_leaves_profile_and_jobs_to_the_machine():
    args = build_parser().parse_args(["--table", "1"])
    assert args.profile is None and args.jobs is None
    request = request_from(args)
    assert request.profile is None and request.jobs is None
    assert Request(table="1").profile is None and Request(table="1").jobs is None  # the API too


def test_a_cpu_gets_claims_and_one_run_per_core(cpu_machine):
    resolved, choice = machine.choose(Request(table="1"))
    assert (resolved.profile, resolved.jobs) == ("claims", 2)
    assert choice == machine.Choice("claims", 2, "2 CPU cores, no CUDA device")
    # --device cpu on any machine is a CPU sweep
    assert machine.choose(Request(table="1", device="cpu"))[0].profile == "claims"


def test_cuda_or_slurm_gets_the_paper_profile(gpu_machine):
    resolved, choice = machine.choose(Request(table="1"))
    assert (resolved.profile, resolved.jobs, choice.why) == ("paper", 1, "a CUDA device")
    # the same machine asked for a CPU sweep
    resolved, choice = machine.choose(Request(table="1", device="cpu"))
    assert (resolved.profile, resolved.jobs) == ("claims", 16)
    # Slurm: the nodes' devices decide, the cluster profile the concurrency (jobs: not a choice)
    resolved, choice = machine.choose(Request(table="1", launcher="slurm", device="cpu"))
    assert (resolved.profile, resolved.jobs) == ("paper", 1)
    assert choice == machine.Choice("paper", None, "--launcher slurm")


def test_explicit_options_win(cpu_machine):
    request = Request(table="1", profile="quick", jobs=1)
    assert machine.choose(request) == (request, None)
    resolved, choice = machine.choose(Request(table="1", profile="smoke"))
    assert (resolved.profile, resolved.jobs, choice.profile, choice.jobs) == ("smoke", 2, None, 2)
    resolved, choice = machine.choose(Request(table="1", jobs=1))
    assert (resolved.profile, resolved.jobs, choice.profile, choice.jobs) == ("claims", 1, "claims", None)
    # the debug launcher runs one at a time in this process: jobs are not a choice there
    resolved, choice = machine.choose(Request(table="1", profile="smoke", launcher="debug"))
    assert resolved.jobs == 1 and choice is None


def cli(capsys, *args):
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.splitlines()


def test_the_bare_dry_run_says_the_choice_and_estimate_first(cpu_machine, data, tmp_path, capsys):
    rc, out, err = cli(capsys, "--table", "1", "--dry-run", "--data-root", str(data),
                       "--results-dir", str(tmp_path / "results"))
    assert rc == 0 and err[0].startswith(CPU_LINE), err[:2]
    assert err[0].endswith("for 198 runs here; 198 more lack their data")  # OMNIGLOT is not here
    assert err[1].startswith("table1, profile claims: 396 runs")
    assert "2 at once" in out  # the report's estimate runs at the chosen concurrency
    # explicit options: no choice to say, the plan's line first
    rc, out, err = cli(capsys, "--table", "1", "--profile", "smoke", "--jobs", "1", "--dry-run",
                       "--data-root", str(data), "--results-dir", str(tmp_path / "results"))
    assert rc == 0 and err[0].startswith("table1, profile smoke: ") and "1 at once" in out
    # only --profile given: the concurrency is still chosen, and said
    rc, out, err = cli(capsys, "--table", "1", "--profile", "smoke", "--dry-run",
                       "--data-root", str(data), "--results-dir", str(tmp_path / "results"))
    assert rc == 0 and err[0].startswith("table1: 2 runs at a time, 1 thread each, chosen for this "
                                         "machine (2 CPU cores, no CUDA device; --jobs chooses")


def test_a_timing_table_says_its_profile(cpu_machine, tmp_path, capsys):
    rc, _, err = cli(capsys, "--table", "3", "--dry-run", "--results-dir", str(tmp_path))
    assert rc == 0 and err[0] == ("table3: profile claims, chosen for this machine (2 CPU cores, "
                                  "no CUDA device; --profile chooses otherwise)")


def sweep_for(data, results, **request):
    """A resolved sweep as a training command has it (resolved as a dry run: no plugin imports)."""
    sweep = pipeline.resolve(Request(table="1", data_root=str(data), results_dir=str(results),
                                     dry_run=True, **request))
    return dataclasses.replace(sweep, request=dataclasses.replace(sweep.request, dry_run=False))


def no_input(prompt=""):
    raise AssertionError(f"prompted without a terminal: {prompt!r}")


def test_a_long_sweep_is_said_and_asked_about_only_at_a_terminal(cpu_machine, data, tmp_path,
                                                                 monkeypatch, capsys):
    sweep = sweep_for(data, tmp_path / "results")
    plan = sweep.plan()
    monkeypatch.setattr(machine, "LONG_SECONDS", 60.0)
    monkeypatch.setattr("builtins.input", no_input)
    monkeypatch.setattr(machine, "interactive", lambda: False)
    assert machine.announce(sweep, plan, {})  # not interactive: said, never asked
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(CPU_LINE)

    monkeypatch.setattr(machine, "interactive", lambda: True)
    for answer, go in (("", False), ("n", False), ("y", True)):
        monkeypatch.setattr("builtins.input", lambda prompt="", a=answer: a)
        assert machine.announce(sweep, plan, {}) is go
        err = capsys.readouterr().err
        assert ("that is long: shorten it with --methods vae,gpvae (" in err
                and "--dims 10 (" in err and "--methods vae,gpvae --dims 10 (" in err)
        assert ("nothing trained" in err) is not go
        if "budget" in Request.__dataclass_fields__:  # Table 1's claims: a budget sizes the sweep
            assert "--claims --budget 3h" in err

    monkeypatch.setattr("builtins.input", no_input)
    dry = dataclasses.replace(sweep, request=dataclasses.replace(sweep.request, dry_run=True))
    assert machine.announce(dry, plan, {})  # a dry run: said, not asked
    assert "that is long" in capsys.readouterr().err
    # an explicit profile is what was meant: said (the jobs were chosen), not asked
    explicit = sweep_for(data, tmp_path / "results", profile="claims")
    assert machine.announce(explicit, explicit.plan(), {})
    err = capsys.readouterr().err
    assert "that is long" not in err and "--jobs chooses otherwise" in err


def test_saying_no_at_the_terminal_trains_nothing(cpu_machine, data, tmp_path, monkeypatch, capsys):
    def launch_runs(*args, **kwargs):
        raise AssertionError("trained after the person said no")

    monkeypatch.setattr(pipeline, "launch_runs", launch_runs)
    monkeypatch.setattr(machine, "LONG_SECONDS", 60.0)
    monkeypatch.setattr(machine, "interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    outcome = pipeline.run(Request(table="1", methods="vae,gpvae", data_root=str(data),
                                   results_dir=str(tmp_path / "results")))
    err = capsys.readouterr().err.splitlines()
    assert outcome.exit_code == 0 and outcome.records == [] and err[0].startswith(CPU_LINE)
    assert "shorten it with --dims 10 (" in err[1] and err[2].startswith("nothing trained")


def test_the_first_line_prices_the_sweep_as_the_dry_run_does(cpu_machine, data, tmp_path, capsys,
                                                             monkeypatch):
    """On a CPU 3x slower than the reference VM (the speed probe's reading, no records yet) the
    first line's estimate is the dry run's scaled one, not the reference VM's figure."""
    from benchmark import estimate, speed_probe

    args = ("--table", "1", "--dry-run", "--data-root", str(data),
            "--results-dir", str(tmp_path / "results"))
    _, _, reference = cli(capsys, *args)
    monkeypatch.setattr(speed_probe, "vae_ms_per_image", lambda: 3 * estimate.FALLBACK_TRAIN_MS["vae"])
    rc, out, err = cli(capsys, *args)
    assert rc == 0 and "scaled x3.00 to this machine by" in out
    said = err[0].split(": estimate ")[1].split(" for ")[0]
    assert said != reference[0].split(": estimate ")[1].split(" for ")[0]
    assert f"estimate: {said} for 198 runs" in out, (said, out[-600:])
