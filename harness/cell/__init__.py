"""What one cell does: its config.json in, its record folder out (``python -m harness.cell CELL_DIR``).

``job`` is the recipe, top to bottom: load the model (``load``), train with trl (``training``, with what the harness
changes in trl's path: ``trl_changes`` over ``padding_free``, ``lm_head`` and ``lora_dropout``; on several
processes, ``distributed``), keep and check the trained weights (``weights``; ``export`` makes a deployable model
of them later), generate through a backend (``generate`` for transformers, ``vllm``), score, and record, with
``measure`` timing and measuring it. Imports evaluate, integrations, spec, records and core.
"""
