"""Runs at the start of every Python process the tests start (tests/conftest.py puts this folder on PYTHONPATH):
nnU-Net's command-line tools, DDP ranks, Ray workers and `python -m autosam` children know the test-size
backbones too. They are added when autosam's backbone registry is first imported, so that processes which never
build SAM (pip, Ray's own services) do not load torch for them."""

import importlib.abc
import importlib.util
import sys

REGISTRY = "autosam.sam.registry"


class _AddTestBackbones(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != REGISTRY:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            import autosam_test_backbones  # noqa: F401 (registers them; a no-op while it is being imported)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AddTestBackbones())
