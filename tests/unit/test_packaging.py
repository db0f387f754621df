"""Packaging tells the truth: what the code imports is what pyproject.toml declares, the extras
cover the tests, versions are capped where CI tested them, and every package ships py.typed."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "events", "choreography", "projections", "shop")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _distributions_imported(files: list[Path]) -> dict[str, str]:
    """Distribution -> one file that imports it, for every third-party import in `files`."""
    by_module = md.packages_distributions()
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]  # maybe submodules
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in (*PACKAGES, "tests", "bench"):
                    continue
                for dist in _providers(module, by_module.get(top, [f"<no distribution provides '{top}'>"])):
                    found.setdefault(dist.lower().replace("_", "-"), str(path.relative_to(ROOT)))
    return found


def _providers(module: str, dists: list[str]) -> list[str]:
    """The distributions of `module`: of a namespace package several install parts (opentelemetry's
    api, sdk, exporters...), so the one whose files hold the module itself."""
    if len(dists) <= 1:
        return dists
    parts = module.split(".")
    for n in range(len(parts), 1, -1):  # the longest prefix of the name that some part holds
        path = "/".join(parts[:n])
        owners = [d for d in dists if any(str(f).startswith((f"{path}/", f"{path}.py")) for f in md.files(d) or ())]
        if owners:
            return owners
    return dists


def _sources(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in (ROOT / d).rglob("*.py")]


CORE = {_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {extra: {_name(r) for r in reqs} for extra, reqs in PYPROJECT["optional-dependencies"].items()}


def test_the_package_imports_only_core_dependencies() -> None:
    missing = {d: f for d, f in _distributions_imported(_sources(*PACKAGES)).items() if d not in CORE}
    assert not missing, f"imported by the package but not in [project.dependencies]: {missing}"


def test_the_dev_extra_covers_the_tests() -> None:
    missing = {d: f for d, f in _distributions_imported(_sources("tests")).items() if d not in CORE | EXTRAS["dev"]}
    assert not missing, f"imported by the tests but in neither the dependencies nor the dev extra: {missing}"


def test_the_bench_extra_covers_the_benchmarks() -> None:
    allowed = CORE | EXTRAS["bench"]
    missing = {d: f for d, f in _distributions_imported(_sources("bench")).items() if d not in allowed}
    assert not missing, f"imported by bench/ but in neither the dependencies nor the bench extra: {missing}"


@pytest.mark.parametrize("dist", ["ray", "confluent-kafka", "clickhouse-connect"])
def test_majors_are_capped_at_the_tested_version(dist: str) -> None:
    (req,) = [r for r in PYPROJECT["dependencies"] if _name(r) == dist]
    cap = re.search(r"<(\d+)", req)
    assert cap, f"{req}: no upper bound"
    assert int(md.version(dist).split(".")[0]) < int(cap.group(1))


def test_constraints_pin_every_dependency_ci_installs() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pins = {_name(k): v for k, v in pins.items()}
    for dist in CORE | EXTRAS["dev"] | EXTRAS["bench"]:
        assert dist in pins, f"{dist} is not pinned in constraints.txt"
        assert pins[dist] == md.version(dist), (
            f"{dist}: constraints.txt pins {pins[dist]}, installed {md.version(dist)}"
        )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_typed(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data[package]


def test_ray_up_setup_commands_install_the_mounted_project() -> None:
    """`ray up cluster.yaml` mounts the project on every node and its setup commands install it."""
    import shlex

    import yaml

    doc = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    mounts = {remote: (ROOT / local).resolve() for remote, local in doc["file_mounts"].items()}
    installed = []
    for command in doc["setup_commands"]:
        words = shlex.split(command)
        if "pip" in words and "install" in words:
            installed += [mounts[w] for w in words if w in mounts]
    assert ROOT in installed, f"no setup command installs the mounted project: {doc['setup_commands']}"
