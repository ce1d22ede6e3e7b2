"""Run folders: the files a run owns, the CLIP a run encodes with, reference import, plots."""
