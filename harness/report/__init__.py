"""From records to decisions: tables, comparisons, recommendation and the gate, in every format.

``table`` is the one table model (columns with directions, values with CIs) and ``render`` draws it as plain text,
a terminal table, markdown, HTML or CSV. ``tables`` builds a run's tables, ``seeds`` collapses several seeds,
``compare`` runs the paired bootstrap between methods, ``cross_task`` and ``lm_eval`` tabulate what training cost
elsewhere, ``recommend`` names a method per task, ``document`` builds the report once and writes it
(``html`` and ``plots`` make the page), and ``gate`` checks a run against a baseline. Imports spec, records and
core: a report never loads a model.
"""
