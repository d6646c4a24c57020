"""The methods under study: LRP composites, pruning criteria and score files, pruning, training
and distillation, fine-tuning schedules, quantization."""
