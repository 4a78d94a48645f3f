"""nnU-Net trainers that train SAM inside nnU-Net's loop."""
