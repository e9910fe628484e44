"""AdmissionReview / audit event / Pod -> the document the rules query (see mapping.py)."""
from gatewatch.documents.mapping import *  # noqa: F401,F403
from gatewatch.documents.mapping import CONTAINER_KINDS, DOCUMENT_FIELDS  # noqa: F401
