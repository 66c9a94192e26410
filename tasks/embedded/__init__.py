"""Deterministic generators for the embedded default datasets (no download needed).

Each generator writes rows in the public dataset's schema from a fixed seed, so every machine builds the
same rows, and a content hash of the rows identifies them in the records.
"""
