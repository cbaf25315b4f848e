"""Start-up: the CLI, planning and the renderer import no heavy module (torch, pandas, scipy,
submitit, matplotlib) until a command needs it, so `--help` answers at once; planning imports no
training code. Plugin metadata (--list, a spec's rows, config hashes) is read from the plugins'
source, and that reading agrees with the imported registry."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# ------------------------------------------------------------------ plugin metadata without import


def test_list_and_a_dry_run_import_no_plugin():
    """--list and a spec's rows (their labels and config hashes) read the plugins' source: no
    plugin module is imported, nor torch (a dry run still imports torch elsewhere: for
    --device auto and through benchmark.launch)."""
    loaded = imported_after("import contextlib, io\nfrom benchmark.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            "    assert main(['--list']) == 0")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not {m for m in loaded if m.startswith("methods.")} - {"methods.registry",
                                                                   "methods.metadata"}
    loaded = imported_after(
        "from benchmark.specs import load_table_spec\nfrom benchmark.profiles import load_profile\n"
        "from benchmark.plan import make_plan\n"
        "plan = make_plan(load_table_spec('1'), load_profile('paper'), data_root='/nowhere', "
        "results_dir='/nowhere')\n"
        "assert len({t.config_hash() for t in plan.tasks}) == len(plan.tasks) == 3960\n"
        "assert {row.label for row in load_table_spec('1').rows} >= {'SA(4)', 'GPVAE'}")
    assert "torch" not in loaded and "methods.sa" not in loaded


def builtin_plugin_files() -> dict[str, Path]:
    from methods import registry

    return {f"methods.{p.stem}": p for p in sorted((REPO / "methods").glob("*.py"))
            if p.stem not in registry._INFRASTRUCTURE and not p.stem.startswith("_")}


def test_metadata_read_from_source_equals_the_imported_registry(monkeypatch):
    """Every built-in plugin (and the tests' probe plugin) reads statically, and what it reads is
    what importing it registers: names, labels, variants, settings and their defaults, summary."""
    from methods import registry
    from methods.metadata import read_plugin_source
    from methods.registry import registered_methods

    read = {}
    for module, path in builtin_plugin_files().items():
        found = read_plugin_source(path.read_text(), module)
        assert found is not None, f"{path.name} cannot be read without importing it"
        read.update((spec.name, spec) for spec in found)
    # the built-in plugins' methods (other tests may have registered their own plugins already)
    imported = {name: info for name, info in registered_methods().items()
                if info.cls.__module__.startswith("methods.")}
    assert sorted(read) == sorted(imported)
    for name, info in imported.items():
        assert read[name] == info.spec(), name
        for params in info.variants:  # what goes into a config hash
            assert read[name].settings(params) == info.settings(params)
    probe_file = REPO / "tests" / "probe_plugin.py"
    [probe] = read_plugin_source(probe_file.read_text(), "probe_plugin", "")
    monkeypatch.syspath_prepend(str(probe_file.parent))
    assert registry.import_plugin("probe_plugin")
    assert probe == registry._REGISTRY["probe"].spec()


def test_config_hashes_are_the_same_with_and_without_reading_the_source(monkeypatch):
    """The paper's Table 1 (3,960 runs): every config hash, from the plugins' source and from the
    imported classes' signatures, is the same."""
    from benchmark import keys
    from benchmark.plan import make_plan
    from benchmark.profiles import load_profile
    from benchmark.specs import load_table_spec
    from methods import registry

    def hashes():
        keys._config_parts.cache_clear()
        plan = make_plan(load_table_spec("1"), load_profile("paper"), data_root="/nowhere",
                         results_dir="/nowhere")
        return [task.config_hash() for task in plan.tasks]

    fast = hashes()
    monkeypatch.setattr(registry, "method_spec", registry.get_method)  # MethodInfo: the class
    slow = hashes()
    keys._config_parts.cache_clear()
    assert len(fast) == 3960 and fast == slow


@pytest.mark.parametrize("source", [
    "from methods.registry import register\nK = 3\n"  # a default that is not a literal
    "@register('x', label='X')\nclass X:\n    def __init__(self, net, k=K): pass\n",
    "from methods.registry import register\nfrom methods.vae import VAE\n"  # an inherited __init__
    "@register('x', label='X')\nclass X(VAE):\n    pass\n",
    "from methods.registry import register\nimport functools\n"  # another decorator
    "@functools.total_ordering\n@register('x', label='X')\nclass X:\n    def __init__(self): pass\n",
    "from methods.registry import register\nV = [{'k': 1}]\n"  # non-literal variants
    "@register('x', label='X', variants=V)\nclass X:\n    def __init__(self, k=1): pass\n",
    "from methods.registry import register\nclass X:\n    def __init__(self): pass\n"
    "register('x', label='X')(X)\n",  # registered by a call
    "from methods import registry\n@registry.register('x', label='X')\n"  # through the module
    "class X:\n    def __init__(self): pass\n",
    "from methods.registry import register\nfor n in 'ab':\n"  # in a loop
    "    @register(n, label=n)\n    class X:\n        def __init__(self): pass\n",
    "import torch\nraise RuntimeError('no registration at all')\n",
    "this is not Python\n",
])
def test_what_the_reader_cannot_be_sure_of_is_imported_instead(source):
    from methods.metadata import read_plugin_source

    assert read_plugin_source(source, "plugin", "") is None


def test_reads_relative_and_aliased_imports_and_keyword_only_defaults():
    from methods.metadata import read_plugin_source

    [spec] = read_plugin_source(
        '"""Mine: a method.\n\nMore."""\nfrom .registry import register as reg\n'
        "@reg('mine', label='Mine', variants=[{'k': 2}])\nclass Mine:\n"
        "    def __init__(self, net, latent_dim, likelihood, num_train, k: int = 1, *,\n"
        "                 lr: float = -1e-3, scale=None, req, **extra): pass\n",
        "methods.mine")
    assert (spec.name, spec.label, spec.variants, spec.summary) == ("mine", "Mine", ({"k": 2},),
                                                                    "Mine: a method.")
    assert spec.parameters == ("k", "lr", "scale", "req")
    assert spec.defaults == {"k": 1, "lr": -1e-3, "scale": None}


PLUGIN_NOT_LITERAL = ("from methods.registry import register\nfrom methods.vae import VAE\n"
                      "STEP = 2.0 ** -3\n\n\n@register('later', label='LATER')\nclass Later(VAE):\n"
                      "    def __init__(self, net, latent_dim, likelihood, num_train, step=STEP):\n"
                      "        super().__init__(net, latent_dim, likelihood, num_train)\n")
PLUGIN_LITERAL = ("from methods.registry import register\nfrom methods.vae import VAE\n\n\n"
                  "@register('quick', label='QUICK', variants=[{'c': 1}])\nclass Quick(VAE):\n"
                  "    def __init__(self, net, latent_dim, likelihood, num_train, c: int = 0):\n"
                  "        super().__init__(net, latent_dim, likelihood, num_train)\n")


def test_environment_plugins_are_read_or_imported(tmp_path):
    """$GPVAE_BENCH_PLUGINS modules: one with literal metadata is read (not imported), one
    without is imported; either way `method_specs` has them as the registry does."""
    (tmp_path / "quickplugin.py").write_text(PLUGIN_LITERAL)
    (tmp_path / "laterplugin.py").write_text(PLUGIN_NOT_LITERAL)
    code = ("import sys\nfrom methods.registry import method_specs, method_spec\n"
            "specs = method_specs()\n"
            "assert specs['quick'].settings({'c': 1}) == {'c': 1}, specs['quick']\n"
            "assert specs['later'].settings({}) == {'step': 0.125}, specs['later']\n"
            "assert 'quickplugin' not in sys.modules and 'laterplugin' in sys.modules\n"
            "assert method_spec('quick').label == 'QUICK'\n"
            "from methods import registered_methods\n"
            "assert {n: i.spec() for n, i in registered_methods().items()} == method_specs()\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}",
                                           "GPVAE_BENCH_PLUGINS": "quickplugin, laterplugin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_plugin_read_from_source_that_fails_to_import_stops_a_run_in_one_line(tmp_path):
    """Reading cannot see an error in a module's body: --list and a dry run list its method, and
    a run that would build it imports it first and fails in one line naming the module."""
    shutil.copytree(REPO / "methods", tmp_path / "methods",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "methods" / "fails.py").write_text(
        PLUGIN_LITERAL.replace("quick", "fails").replace("QUICK", "FAILS")
        .replace("\n\n\n@", "\nraise OSError('gone')\n@"))
    spec = tmp_path / "mine.yaml"
    spec.write_text("title: t\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\nrows: [vae, fails]\n")

    def cli(*args):
        code = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(REPO)!r}]; "
                "from benchmark.cli import main; sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    listing = cli("--list")
    assert "  fails: FAILS(1) = fails-c1" in listing.stdout, listing.stdout + listing.stderr
    dry = cli("--table", str(spec), "--profile", "smoke", "--dry-run")
    assert dry.returncode == 0 and "4 to run" in dry.stderr, dry.stderr  # both rows
    run = cli("--table", str(spec), "--profile", "smoke", "--results-dir", str(tmp_path / "r"),
              "--data-root", str(tmp_path / "nodata"), "--device", "cpu")
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and "Traceback" not in run.stderr and len(errors) == 1, run.stderr
    assert "needs method 'fails', which is not registered" in errors[0]
    assert "methods.fails (OSError: gone)" in errors[0]
    assert not (tmp_path / "r" / "runs").exists()
