"""Datasets: shipped annotation lists, Kinetics CSVs, and the generated demo videos."""
