"""The training loop both training commands share: schedule, sampler, step, checkpoints, sync."""
