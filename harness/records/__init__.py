"""The append-only results store: a folder per cell, a file per stage, each written atomically, with provenance.

``store`` writes and checks a cell's files (status.json last, with the checksum of every other file) and records
the environment; ``load`` reads a run's complete cells back for the report, the gate and the trackers. Imports
only core.
"""
