"""An evaluation-first benchmarking harness for fine-tuning Llama-class models.

The engine lives here; tasks live in the top-level ``tasks`` package and register themselves on import.
Heavy libraries (torch, transformers, peft, trl) are imported lazily, so ``--help``, ``report`` and ``gate``
start fast and never load a model.
"""

__version__ = "0.1.0"
