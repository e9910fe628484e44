"""AdmissionReview / audit event / Pod -> the document the rules query.

Along the data flow, one module per step:

- ``types``: the typed shapes (AdmissionRequest, AuditEvent, ImageEntry, Document);
- ``admission``: an AdmissionReview, validated, -> the audit event the API
  server would write -> document;
- ``audit``: an audit log line or event -> document;
- ``manifests``: a manifest Pod -> document, as the Pod CREATE it would cause;
- ``mapping``: the one table, audit event -> document (its docstring lists
  every field and where it comes from);
- ``container_images``: the images a request sets (``gatewatch.images``).

Field types follow the one input-shape policy, gatewatch.shapes: an
admission review with a field of the wrong type raises InputError naming it
(the API server would never send one); an audit event is refused only when
it is not an audit event at all (``check_audit_event``), and is otherwise
mapped as Elastic would index it: a single value where a list is expected is
a list of one, a field of the wrong type is absent (``audit_event_view``
says which, for replay's warnings).

Hot path: this runs for every admission review and every replayed audit line.
Documents share sub-objects with their input (no deep copies): treat both as
read-only.
"""
from gatewatch.documents.admission import (
    ADMISSION_API_VERSIONS,
    ADMISSION_UNAVAILABLE_FIELDS,
    AUDIT_API_VERSION,
    PROXY_SUBRESOURCES,
    audit_event_from_admission_request,
    document_from_admission_request,
    document_from_admission_review,
    format_timestamp,
    parse_admission_request,
)
from gatewatch.documents.audit import check_audit_event, document_from_audit_event, document_from_audit_line
from gatewatch.documents.container_images import ContainerKey, image_entry
from gatewatch.documents.manifests import DEFAULT_NAMESPACE, document_from_pod
from gatewatch.documents.mapping import (
    DATASET,
    DECISION_ANNOTATION,
    DOCUMENT_FIELDS,
    INTERACTIVE_SUBRESOURCES,
    OUTCOME_BY_DECISION,
    WHOLE_POD_SUBRESOURCES,
)
from gatewatch.documents.types import (
    OPERATIONS,
    AdmissionRequest,
    AuditEvent,
    Document,
    GroupVersionKind,
    GroupVersionResource,
    ImageEntry,
    ObjectReference,
    Operation,
    Source,
    UserInfo,
)

# gatewatch.shapes' names, which gatewatch.documents has always exported too.
from gatewatch.shapes import AUDIT_API_VERSIONS, CONTAINER_KINDS

__all__ = [
    "ADMISSION_API_VERSIONS",
    "ADMISSION_UNAVAILABLE_FIELDS",
    "AUDIT_API_VERSION",
    "AUDIT_API_VERSIONS",
    "AdmissionRequest",
    "AuditEvent",
    "CONTAINER_KINDS",
    "ContainerKey",
    "DATASET",
    "DECISION_ANNOTATION",
    "DEFAULT_NAMESPACE",
    "DOCUMENT_FIELDS",
    "Document",
    "GroupVersionKind",
    "GroupVersionResource",
    "INTERACTIVE_SUBRESOURCES",
    "ImageEntry",
    "OPERATIONS",
    "OUTCOME_BY_DECISION",
    "ObjectReference",
    "Operation",
    "PROXY_SUBRESOURCES",
    "Source",
    "UserInfo",
    "WHOLE_POD_SUBRESOURCES",
    "audit_event_from_admission_request",
    "check_audit_event",
    "document_from_admission_request",
    "document_from_admission_review",
    "document_from_audit_event",
    "document_from_audit_line",
    "document_from_pod",
    "format_timestamp",
    "image_entry",
    "parse_admission_request",
]
