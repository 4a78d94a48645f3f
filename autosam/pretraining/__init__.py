"""Continued pretraining of SAM before fine-tuning: masked-autoencoder and prompt-based objectives."""
