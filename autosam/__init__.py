"""autosam: nnU-Net-style auto-configured fine-tuning of the Segment Anything Model (SAM).

The Python API (``autosam.plan``, ``autosam.run``, ...; see ``autosam.api``) resolves on first use, so that
``import autosam`` loads neither torch nor nnU-Net."""

from autosam.paths import configure_defaults

configure_defaults()  # before any autosam module imports nnunetv2, which reads nnUNet_def_n_proc at import

__version__ = "0.1.0"
API = ("plan", "plan_and_preprocess", "predict", "run", "status", "validate")


def __getattr__(name: str):
    if name in API:
        from autosam import api

        return getattr(api, name)
    raise AttributeError(f"module 'autosam' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
