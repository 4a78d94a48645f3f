"""The training stage: nnU-Net trainers that train SAM inside nnU-Net's loop, their fixed variants, one fold's
training, fold jobs, DDP, the embedding cache and seeding."""
