"""Base weights and fine-tuned folds: the catalogue, locating and safe loading, identity checks, downloads."""
