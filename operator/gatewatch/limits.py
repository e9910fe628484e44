"""Bounds on settings that more than one place states, kept here once.

config.py validates with them, the CLI's ``--help`` shows them (this module
imports nothing, so the offline commands start without pydantic), and the
chart's values.schema.json repeats them (tests/test_docs_names.py keeps it equal).
"""
from __future__ import annotations

# The API server allows 1..30 s. Below 3 s a review that waits for its two lookups
# (namespace labels, target pod; podLookup.timeoutSeconds each, 1 s by default)
# plus the call's own TLS and network time would hit the API server's timeout,
# and failurePolicy would decide instead of gatewatch.
MIN_WEBHOOK_TIMEOUT_SECONDS = 3
MAX_WEBHOOK_TIMEOUT_SECONDS = 30
