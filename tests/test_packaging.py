"""A wheel built from the repository holds what a user needs: run from another folder, it loads
the table specs, profiles (candidates too), the paper's numbers and claims, and the cluster
profiles. Built from the tracked files only (a clean copy), with the environment's setuptools."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_GLOBS = ("benchmark/specs/*.yaml", "benchmark/profiles/*.yaml",
              "benchmark/profiles/candidates/*.yaml", "benchmark/paper/*.yaml", "slurm/*.yaml")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in _tracked():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "-w", str(out),
                            "--no-deps", "--no-build-isolation", "-q"],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    return next(out.glob("*.whl"))


def test_wheel_holds_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = sorted({str(p.relative_to(REPO)) for pattern in DATA_GLOBS for p in REPO.glob(pattern)}
                      & set(_tracked()))
    assert any(n.startswith("benchmark/paper/") for n in expected)
    where = {name: name.replace("slurm/", "benchmark/slurm/", 1) if name.startswith("slurm/")
             else name for name in expected}
    missing = [name for name, inside in where.items() if inside not in names]
    assert not missing, f"left out of the wheel: {missing}"


def test_installed_wheel_loads_its_data_from_another_folder(wheel, tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere.mkdir()
    code = (
        "import benchmark, pathlib\n"
        f"assert pathlib.Path(benchmark.__file__).is_relative_to({str(site)!r}), benchmark.__file__\n"
        "from benchmark.specs import load_table_spec, table_names\n"
        "from benchmark.profiles import load_profile, profile_names\n"
        "from benchmark.paper_tables import load_paper_table\n"
        "from benchmark.analyses.claims import load_claims\n"
        "from benchmark.cluster import cluster_profile_names, load_cluster_profile\n"
        "assert {'1', '2', '3', '4'} <= set(table_names()), table_names()\n"
        "[load_table_spec(t) for t in table_names()]\n"
        "[load_profile(p) for p in profile_names()]\n"
        "load_profile(str(pathlib.Path(benchmark.__file__).parent / 'profiles' / 'candidates'"
        " / 'claims-b64.yaml'))\n"
        "[load_paper_table(f'table{n}') for n in (1, 2, 3, 4)]\n"
        "load_claims('table1')\n"
        "assert 'example' in cluster_profile_names(), cluster_profile_names()\n"
        "[load_cluster_profile(c) for c in cluster_profile_names()]\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
