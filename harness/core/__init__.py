"""The ground floor: what every stage uses and nothing here knows of a run.

User-facing errors (``errors``), atomic record files and checksums (``files``), the console and progress lines
(``console``), name registries (``registry``), sizes, durations and budgets (``units``), and the statistics behind
every CI (``stats``: aggregations, the bootstrap, the paired and the cluster bootstrap over seeds). Modules here
import nothing else of the harness.
"""
