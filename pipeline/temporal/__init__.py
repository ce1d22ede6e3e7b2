"""The temporal model and its scores: MoTE, cached-feature batches, evaluation, metrics."""
