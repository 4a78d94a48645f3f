"""autosam: nnU-Net-style auto-configured fine-tuning of the Segment Anything Model (SAM)."""

__version__ = "0.1.0"
