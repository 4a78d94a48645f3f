"""Runs at the start of every Python process the tests start (tests/conftest.py puts this folder on PYTHONPATH):
nnU-Net's command-line tools, DDP ranks, Ray workers and `python -m autosam` children know the test-size
backbones too. Importing autosam's registry only when autosam is installed keeps other children (pip) light."""

import importlib.util

if importlib.util.find_spec("autosam") is not None:
    import autosam_test_backbones

    autosam_test_backbones.register()
