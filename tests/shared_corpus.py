"""Where the shared corpus of Elastic's public rules is: ``shared/corpus`` beside the
repository (a clone) or beside the worktrees' folder (a worktree), or where an
environment variable says. It is read at test time and never copied into the
project; tests that need it skip when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def corpus_path(name: str, *, environment: str) -> Path:
    """``name`` inside shared/corpus (``$environment`` overrides); the first candidate when none exists."""
    if os.environ.get(environment):
        return Path(os.environ[environment])
    candidates = [root / "shared" / "corpus" / name for root in REPO_ROOT.parents[:2]]
    return next((path for path in candidates if path.exists()), candidates[0])


ELASTIC_RULES = corpus_path("elastic-kubernetes-rules", environment="GATEWATCH_ELASTIC_RULES")
KQL_QUERIES = corpus_path("elastic-kql-queries.jsonl", environment="GATEWATCH_KQL_CORPUS")


# Elastic's own implementation, for differential tests: a checkout of
# github.com/elastic/detection-rules (only its lib/kql is used). One variable
# for every test that needs it; without it those tests skip, saying so.
DETECTION_RULES_CHECKOUT = "DETECTION_RULES_CHECKOUT"


def elastic_lib_kql() -> Path | None:
    """lib/kql of the detection-rules checkout $DETECTION_RULES_CHECKOUT (the folder holding
    ``kql/kql.g``), or None when the variable is unset; a checkout without it raises."""
    checkout = os.environ.get(DETECTION_RULES_CHECKOUT)
    if not checkout:
        return None
    folder = Path(checkout) / "lib" / "kql"
    if not (folder / "kql" / "kql.g").is_file():
        raise FileNotFoundError(f"{DETECTION_RULES_CHECKOUT}={checkout} holds no lib/kql/kql/kql.g "
                                "(give it a checkout of github.com/elastic/detection-rules)")
    return folder
