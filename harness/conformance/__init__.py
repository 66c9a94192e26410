"""The conformance matrix: the harness's training path held against plain peft + trl on tiny random models of every
family it covers, and the models themselves. A verification library, not a stage of a run: the test suite asserts its
checks (tests/integration/test_conformance.py) and benchmarks/conformance.py prints what they measured
(docs/conformance.md); nothing in a run imports it.

* ``families``: the tiny (and small) random models of Llama, Mistral, Mixtral, Qwen2, Qwen3, Gemma 2, Gemma 3,
  Phi-3 and GPT-NeoX, built from transformers' own config classes;
* ``checks``: training against the plain libraries, and the changes each row must have applied;
* ``forward``: the checks of one forward pass: the fused dropout against peft's under the same masks, for every
  method it applies to, and batched generation against one by one;
* ``compare``: how the deviations are measured, the tolerances they are held to, and ``ConformanceError``.
"""
