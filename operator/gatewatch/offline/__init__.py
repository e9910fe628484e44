"""Offline runs: `gatewatch check` over manifests and `gatewatch replay` over audit logs.

Both go through the operator's path: input -> document -> engine -> decision
-> ECS alert, so what they report is what the admission controller would
have done (or, with ``replay --every-event``, what Elastic's detection engine
would have alerted on).

- ``check``: manifests and AdmissionReviews on disk;
- ``replay``: audit-log lines, one pass (``lines``: reading, parsing,
  skimming; ``candidates``: the rule index's answers remembered;
  ``parallel``: blocks on worker processes);
- ``report``: exit codes, tables, summaries, JSON alert lines.

Input is untrusted: its shape is judged once, by gatewatch.shapes; bad input
is reported with its file and line and the run carries on.
"""
from gatewatch.offline.check import run_check
from gatewatch.offline.replay import run_replay
from gatewatch.offline.report import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK

__all__ = ["EXIT_BAD_INPUT", "EXIT_FINDINGS", "EXIT_OK", "run_check", "run_replay"]
