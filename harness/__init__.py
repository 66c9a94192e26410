"""An evaluation-first benchmarking harness for fine-tuning Llama-class models.

Start reading at harness/cli/run.py (the command) and harness/cell/job.py (what one cell does). The folders are
the stages of a run, in the order data flows through them:

    cli -> plan -> execute -> cell (train, generate, score) -> records -> report and gate

with spec (what a run is made of) and core (errors, files, console, units, statistics) under all of them, and the
task plugins in the top-level ``tasks`` package. README.md, "Map of the code", says what each folder holds and
what it may import; tests/unit/test_architecture.py holds the code to it. Heavy libraries (torch, transformers,
peft, trl) are imported inside the functions that need them, so ``--help``, ``plan``, ``report`` and ``gate``
start fast and never load a model.
"""

__version__ = "0.1.0"
