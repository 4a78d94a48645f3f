"""Trained models in use: which one a command means, prediction, prompts files, export."""
