"""autosam: nnU-Net-style auto-configured fine-tuning of the Segment Anything Model (SAM)."""

from autosam.paths import configure_defaults

configure_defaults()  # before any autosam module imports nnunetv2, which reads nnUNet_def_n_proc at import

__version__ = "0.1.0"
