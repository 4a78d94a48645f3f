"""SAM, the network only: backbones, the promptless segmenter, fine-tuning set-ups, prompts, costs and memory."""
