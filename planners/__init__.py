"""The planning stage: dataset and hardware fingerprints, the rules and the choice of a SAM set-up, the nnU-Net
planner that writes it into the plans, and preprocessing."""
