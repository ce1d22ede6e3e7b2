"""Video in: decoding (decord, PyAV fallback), frame sampling, crops, the decode worker pool."""
