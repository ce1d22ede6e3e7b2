"""The CLIP side: building open_clip models and weights, frame and text encoding."""
