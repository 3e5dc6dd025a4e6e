"""What a training run reports: a progress bar, metrics.jsonl and TensorBoard events."""
