"""The CLIP side: factory (names to architectures), weights (and download), encoder, build_clip."""
