"""Before anything runs: the matrix of cells, and what each will cost.

``matrix`` turns a run config into planned cells with their folders; ``shape``, ``estimate`` and ``memory_rules``
estimate a cell's peak memory from a config.json alone (no torch); ``budget`` skips the cells that do not fit;
``speed`` gives the largest batch and the tokens/s to expect. Imports spec, records and core.
"""
