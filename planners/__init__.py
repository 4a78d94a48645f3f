"""nnU-Net experiment planners that add a SAM configuration to nnU-Net's plans."""
