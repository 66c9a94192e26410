"""Running the planned cells: the runner, the checks before it, and the executors that launch each cell.

``runner`` plans, checks (``preflight``), writes each cell's config.json, hands the cells to an executor
(``executors``: inline, process, Ray in ``ray``) and reads every outcome back from disk; ``child`` runs a cell as a
watched child process and records a death. Imports the cell stage (for the inline executor and the checks) and
everything below it; nothing imports this stage but the CLI.
"""
