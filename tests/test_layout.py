"""The seam between stages and the runtime: imports point one way, and validating a config imports no Ray."""

import ast
import subprocess
import sys

import pytest

from conftest import REPO

# package folder -> the winnow packages (and third-party modules) it must never import, at any depth
FORBIDDEN = {
    "gpu": {"winnow.scorers", "winnow.stages", "winnow.runtime", "winnow.flows", "ray", "prefect", "fasttext"},
    "scorers": {"winnow.stages", "winnow.runtime", "winnow.flows", "ray", "prefect"},
    "stages": {"winnow.runtime", "winnow.flows", "ray", "prefect"},
    "runtime": {"winnow.flows", "prefect"},
    "schemas": {"winnow.stages", "winnow.runtime", "winnow.flows", "winnow.scorers", "ray", "prefect"},
    "storage": {"winnow.stages", "winnow.runtime", "winnow.flows", "winnow.scorers", "ray", "prefect"},
}


def imported_modules(path):
    """Every module a file imports, wherever the import statement is (functions included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    """flows -> runtime -> stages -> scorers -> gpu; schemas and storage below them all."""
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    wrong = [(f.relative_to(REPO).as_posix(), module) for f in files for module in imported_modules(f)
             if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[package])]
    assert wrong == []


def test_validating_a_config_imports_no_ray_and_no_heavy_stage_dependency():
    code = ("import sys; from winnow.schemas.config import parse_config, stage_configs; stage_configs(); "
            "print(sorted(m for m in ('ray', 'scipy', 'datasketch', 'fastwarc', 'resiliparse', 'torch', "
            "'transformers', 'winnow.runtime') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
