"""Start-up: the CLI, planning and the renderer import no heavy module (torch, pandas, scipy,
submitit, matplotlib) until a command needs it, so `--help` answers at once; planning imports no
training code."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "scipy", "submitit", "matplotlib")


def imported_after(code: str) -> set[str]:
    """The modules in sys.modules after running `code` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_cli_and_help_import_nothing_heavy():
    loaded = imported_after("import contextlib, io\nfrom benchmark.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()), "
                            "contextlib.suppress(SystemExit):\n    main(['--help'])")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_plan_imports_no_training_code_and_no_torch():
    loaded = imported_after("import benchmark.plan, benchmark.keys, methods.registry")
    assert "benchmark.run" not in loaded and "benchmark.train" not in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_renderer_imports_nothing_heavy():
    loaded = imported_after("import benchmark.render, benchmark.index_page")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_cli_launcher_names_are_launchs():
    from benchmark import cli, launch

    assert cli.LAUNCHERS == launch.LAUNCHERS
