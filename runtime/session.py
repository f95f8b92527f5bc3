"""The Ray session a run executes in: the running one, a cluster (with the driver's winnow and the
config's plugin modules shipped to its workers), or a local one started for the run."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import ray

# pyproject's package-dir map
SUBPACKAGES = ("schemas", "storage", "stages", "runtime", "scorers", "gpu", "flows", "evaluate")


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                plugins: tuple[str, ...] = ()) -> Iterator[None]:
    """Use the running Ray if any; else join `address` (or RAY_ADDRESS), else start a local one. A
    cluster gets the driver's winnow and the `plugins` modules shipped to its workers."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"include_dashboard": False, "log_to_driver": True}
    with tempfile.TemporaryDirectory(prefix="winnow-code-") as tmp:
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:  # a cluster runs the driver's winnow, whatever its nodes have installed
            kwargs["runtime_env"] = {"py_modules": [package_snapshot(tmp), *map(module_source, plugins)]}
        ray.init(address=address, **kwargs)
        try:
            yield
        finally:
            ray.shutdown()


def module_source(name: str) -> str:
    """What Ray ships for a module: its top-level package's directory, or its .py file."""
    module = importlib.import_module(name.split(".")[0])
    return module.__path__[0] if hasattr(module, "__path__") else module.__file__


def package_snapshot(directory: str) -> str:
    """A copy of the imported `winnow` package (its sub-packages live in separate source folders in
    a checkout), for Ray's runtime environment to ship to cluster workers."""
    import winnow

    root = os.path.join(directory, "winnow")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(winnow.__path__[0], root, ignore=ignore)
    for name in SUBPACKAGES:
        source = importlib.import_module(f"winnow.{name}").__path__[0]
        target = os.path.join(root, name)
        if not os.path.exists(target):
            shutil.copytree(source, target, ignore=ignore)
    return root
