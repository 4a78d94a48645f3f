"""Whole studies: run (SAM against nnU-Net), ablation, few-shot, the demo, and fold jobs on Ray."""
