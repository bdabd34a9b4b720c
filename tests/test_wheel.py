"""A non-editable install carries the configs: build the wheel offline, install it into a plain directory and run
``python -m failfast_bench --help`` from elsewhere; every config group lists its options."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "conf", tree / "conf", ignore=ignore)
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = dist.glob("failfast_bench-*.whl")
    return built


def test_wheel_carries_configs_code_and_shipped_drafters(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"failfast_bench/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    expected |= {f"failfast_bench/{p.relative_to(ROOT / 'src' / 'failfast_bench')}" for p in (ROOT / "src" / "failfast_bench").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert expected - names == set()
    assert "failfast_bench/conf/target/qwen2.5-7b.yaml" in names and "failfast_bench/shipped/smollm2-135m/dllm/model.safetensors" in names


def test_installed_wheel_finds_its_configs_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FAILFAST_BENCH_CONF"}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)

    where = run("-c", "import failfast_bench.paths as p; print(p.conf_dir())")
    assert where.stdout.strip() == str(site / "failfast_bench" / "conf"), where.stderr
    help_text = run("-m", "failfast_bench", "--help")
    assert help_text.returncode == 0, help_text.stderr
    groups = dict(re.findall(r"^(\w+): (.+)$", help_text.stdout.split("== Config ==")[0], flags=re.M))
    for group, option in (("target", "qwen2.5-7b"), ("drafter", "failfast"), ("dataset", "gsm8k"), ("hardware", "a6000_paper"),
                          ("logger", "none"), ("experiment", "micro_tau")):
        assert option in groups.get(group, ""), (group, help_text.stdout[:1500])
    unknown = run("-m", "failfast_bench", "target=nope")
    assert unknown.returncode == 2 and "valid: qwen2.5-14b, qwen2.5-32b, qwen2.5-7b" in unknown.stderr
    assert list(elsewhere.iterdir()) == []


def test_source_checkout_uses_the_repository_conf():
    from failfast_bench import paths

    assert paths.conf_dir() == ROOT / "conf"
