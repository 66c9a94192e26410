"""What a run is made of, and the layer task plugins build on.

The run's settings (``config``, resolved from defaults, YAML and flags in ``resolve``), the methods (``methods``),
the model catalogue and resolution (``models``), devices and numerics (``precision``), the task base class with its
Context and generation-backend interface (``task``), prompt rendering (``prompts``), the metric registry
(``metrics``), data sources (``data``), and one cell of the matrix as a typed, frozen spec (``cell``). Imports only
harness/core; task packages import this layer and core, nothing else.
"""
