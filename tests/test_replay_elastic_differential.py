"""`gatewatch replay --every-event` against Elastic's own KQL evaluator, per (auditID, rule).

Elastic's Kubernetes KQL query rules (../shared/corpus/elastic-kubernetes-rules,
imported with `gatewatch rules import-elastic`) over audit events written as
an API server writes them: the example log, the benchmark's realistic log, and
events built here for each rule (matching and near misses), including a
spec.containers given as one object, requests authorization refused, exempt
namespaces and every stage of a request.

Elastic's side: each event becomes the document Elastic's Kubernetes
integration indexes (its ingest pipeline, followed below field by field,
independently of gatewatch.documents), and Elastic's evaluator (lib/kql of
github.com/elastic/detection-rules) runs each rule's query on it. A request
(auditID) matches a rule when any of its events does, as Elastic alerts on
any document. The checkout is given by DETECTION_RULES_CHECKOUT (tests/shared_corpus.py;
its lib/kql needs the `eql` package, a gatewatch dependency); without it the
test is skipped, saying so.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from shared_corpus import DETECTION_RULES_CHECKOUT, ELASTIC_RULES, elastic_lib_kql

REPO = Path(__file__).resolve().parents[1]
CORPUS = ELASTIC_RULES
sys.path.insert(0, str(REPO / "benchmarks"))
from audit_log import audit_lines  # noqa: E402  (the benchmark's realistic log)


def elastic_kql():
    folder = elastic_lib_kql()
    if folder is None:
        pytest.skip(f"{DETECTION_RULES_CHECKOUT} is not set: give it a checkout of github.com/elastic/detection-rules "
                    "(its lib/kql is Elastic's KQL evaluator)")
    sys.path.insert(0, str(folder))
    try:
        import kql  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(folder))
    return kql


def kql_query_rules() -> list[Path]:
    index = CORPUS / "INDEX.tsv"
    if not index.exists():
        pytest.skip(f"{CORPUS} not found (Elastic's rule files are read at test time, never copied)")
    rows = [line.split("\t") for line in index.read_text().splitlines()[1:]]
    return [CORPUS / name for name, rule_type, language in rows if rule_type == "query" and language == "kuery"]


# --- events as the API server writes them ---------------------------------------------

KUBECTL = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
_ids = iter(range(1, 1_000_000))


def event(
    verb: str,
    resource: str | None,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
    group: str | None = None,
    user: str | None = "alice@example.com",
    groups: tuple[str, ...] = ("platform", "system:authenticated"),
    impersonated: dict[str, Any] | None = None,
    uri: str | None = None,
    agent: str = KUBECTL,
    ip: str = "203.0.113.7",
    decision: str | None = "allow",
    code: int = 200,
    level: str = "RequestResponse",
    stage: str = "ResponseComplete",
    request_object: Any = None,
    response_object: Any = None,
    audit_id: str | None = None,
) -> dict[str, Any]:
    """One audit event in Go's field order; RequestReceived has no decision and no response."""
    if uri is None:
        uri = ("/api/v1" if not group else f"/apis/{group}/v1") + (f"/namespaces/{namespace}" if namespace else "")
        uri += f"/{resource}" + (f"/{name}" if name and verb != "create" else "") + (f"/{subresource}" if subresource else "")
    written: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
        "auditID": audit_id or f"00000000-0000-4000-8000-{next(_ids):012d}", "stage": stage,
        "requestURI": uri, "verb": verb,
    }
    if user is not None:
        written["user"] = {"username": user, "groups": list(groups)}
    if impersonated is not None:
        written["impersonatedUser"] = impersonated
    written["sourceIPs"] = [ip]
    written["userAgent"] = agent
    if resource is not None:
        ref: dict[str, Any] = {"resource": resource}
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if group:
            ref["apiGroup"] = group
        ref["apiVersion"] = "v1"
        if subresource:
            ref["subresource"] = subresource
        written["objectRef"] = ref
    if stage != "RequestReceived":
        written["responseStatus"] = {"metadata": {}, "code": code}
    if request_object is not None:
        written["requestObject"] = request_object
    if response_object is not None and stage != "RequestReceived":
        written["responseObject"] = response_object
    written["requestReceivedTimestamp"] = "2026-11-22T05:10:01.112233Z"
    written["stageTimestamp"] = "2026-11-22T05:10:01.118540Z"
    if decision is not None and stage != "RequestReceived":
        written["annotations"] = {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""}
    return written


def stages(built: dict[str, Any]) -> list[dict[str, Any]]:
    """The request at RequestReceived and ResponseComplete, one auditID."""
    early = {key: value for key, value in built.items() if key not in ("responseStatus", "responseObject", "annotations")}
    return [{**early, "stage": "RequestReceived"}, built]


def pod(*, containers: Any, namespace: str = "payments", **spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"containers": containers, **spec}}


def sa(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def constructed_events() -> list[dict[str, Any]]:
    """Events for each of Elastic's Kubernetes KQL query rules, matching and near misses."""
    privileged = {"name": "app", "image": "nicolaka/netshoot:v0.13", "securityContext": {"privileged": True}}
    agent_image = {"name": "agent", "image": "docker.elastic.co/beats/elastic-agent:8.4.0",
                   "securityContext": {"privileged": True}}
    events: list[dict[str, Any]] = []
    add = events.append
    # Secrets: read by scripts, service accounts, nodes; listed across the cluster; tokens created.
    for agent in ("curl/8.5.0", "python-requests/2.31.0", "Go-http-client/2.0", KUBECTL, "kali-amd64 thing"):
        add(event("get", "secrets", namespace="payments", name="db", agent=agent, level="Metadata"))
    add(event("list", "secrets", namespace="kube-system", user=sa("ci", "deployer"), level="Metadata",
              uri="/api/v1/namespaces/kube-system/secrets?limit=500"))
    add(event("list", "secrets", user="system:node:ip-10-0-0-1", level="Metadata", uri="/api/v1/secrets"))
    add(event("list", "secrets", level="Metadata", uri="/api/v1/secrets", ip="127.0.0.1"))
    add(event("list", "secrets", level="Metadata", uri="/api/v1/secrets?limit=500", user="system:kube-controller-manager"))
    events += stages(event("create", "secrets", namespace="payments", request_object={
        "kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "tok", "annotations": {"kubernetes.io/service-account.name": "default"}}}))
    add(event("create", "serviceaccounts", namespace="payments", name="default", subresource="token"))
    add(event("create", "serviceaccounts", namespace="payments", name="default", subresource="token",
              user="system:kube-controller-manager"))
    # Impersonation.
    add(event("get", "pods", namespace="payments", impersonated={"username": "system:admin"}))
    add(event("list", "nodes", impersonated={"username": "bob", "groups": ["system:masters"]}))
    add(event("get", "pods", namespace="payments", impersonated={"username": "eks:node-manager"}))
    add(event("delete", "pods", namespace="kube-system", name="x", user="system:node:n1",
              impersonated={"username": sa("kube-system", "coredns")}))
    # Workload patches (sidecars, Argo CD drift), RBAC writes.
    add(event("patch", "deployments", namespace="payments", name="api", group="apps",
              request_object={"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "evil"}]}}}}))
    add(event("patch", "daemonsets", namespace="argocd", name="x", group="apps",
              user=sa("argocd", "argocd-application-controller")))
    add(event("update", "configmaps", namespace="argocd", name="argocd-cm"))
    add(event("delete", "secrets", namespace="payments", name="db"))
    add(event("create", "clusterroles", name="all", group="rbac.authorization.k8s.io", user=sa("ci", "deployer")))
    add(event("delete", "roles", namespace="x", name="r", group="rbac.authorization.k8s.io",
              user=sa("kube-system", "generic-garbage-collector")))
    # Requests authorization refused.
    add(event("get", "secrets", namespace="kube-system", name="x", user=sa("payments", "default"), decision="forbid",
              code=403, level="Metadata"))
    add(event("list", "pods", user="mallory", decision="forbid", code=403, level="Metadata"))
    events += stages(event("create", "pods", namespace="payments", decision="forbid", code=403,
                           request_object=pod(containers=[privileged])))
    # Access reviews.
    add(event("create", "selfsubjectrulesreviews", group="authorization.k8s.io", user=sa("payments", "default")))
    add(event("create", "selfsubjectaccessreviews", group="authorization.k8s.io"))
    add(event("create", "selfsubjectaccessreviews", group="authorization.k8s.io",
              impersonated={"username": "system:node:n1"}))
    # Exec with addresses in the command, over SPDY (create) and websocket (get).
    for verb, command in (("create", "command=curl&command=203.0.113.9"), ("create", "command=10.0.0.4"),
                          ("get", "command=sh"), ("create", "command=sh&command=-c&command=nc+198.51.100.1+4444")):
        events += stages(event(verb, "pods", namespace="payments", name="api-0", subresource="exec", code=101,
                               level="Request", uri=f"/api/v1/namespaces/payments/pods/api-0/exec?{command}&container=app"))
    # Pods: kube-system (exempt for the webhook), privileged (a list, one object), excluded images, host namespaces.
    add(event("create", "pods", namespace="kube-system", request_object=pod(containers=[{"name": "c", "image": "busybox"}],
                                                                              namespace="kube-system")))
    add(event("create", "deployments", namespace="kube-public", name="d", group="apps"))
    events += stages(event("create", "pods", namespace="payments", request_object=pod(containers=[privileged])))
    events += stages(event("create", "pods", namespace="payments", request_object=pod(containers=privileged)))
    add(event("create", "pods", namespace="payments", request_object=pod(containers=agent_image)))
    add(event("create", "pods", namespace="payments", request_object=pod(containers=[privileged, agent_image])))
    add(event("update", "pods", namespace="payments", name="web", request_object=pod(containers=privileged)))
    add(event("create", "pods", namespace="kube-system", request_object=pod(
        containers=[{"name": "c", "image": "busybox"}], namespace="kube-system", serviceAccountName="job-controller")))
    add(event("create", "pods", namespace="kube-system", request_object=pod(
        containers={"name": "c", "image": "registry.k8s.io/sig-storage/csi-attacher:v4"}, namespace="kube-system",
        serviceAccountName="attach-controller")))
    for field in ("hostIPC", "hostNetwork", "hostPID"):
        add(event("create", "pods", namespace="web", request_object=pod(containers={"name": "c", "image": "nginx"},
                                                                        **{field: True})))
        add(event("patch", "pods", namespace="web", name="web", request_object={"spec": {field: True}}))
    for path in ("/", "/var/run/docker.sock", "/etc/kubernetes/pki", "/data"):
        add(event("create", "pods", namespace="web", request_object=pod(
            containers=[{"name": "c", "image": "nginx"}], volumes=[{"name": "v", "hostPath": {"path": path}}])))
    add(event("create", "pods", namespace="web", request_object=pod(
        containers={"name": "c", "image": "nginx", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}})))
    add(event("create", "pods", namespace="web", request_object=pod(
        containers=[{"name": "c", "image": "nginx", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}])))
    add(event("patch", "pods", namespace="web", name="web", request_object={"spec": {"securityContext": {"runAsUser": 0}}}))
    add(event("patch", "pods", namespace="web", name="web", request_object={
        "spec": {"containers": {"name": "c", "securityContext": {"allowPrivilegeEscalation": True}}}}))
    add(event("patch", "pods", namespace="web", name="web", subresource="ephemeralcontainers", request_object={
        "spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox", "targetContainerName": "c"}]}}))
    add(event("patch", "pods", namespace="web", name="web", subresource="ephemeralcontainers", user="system:node:n1"))
    # ConfigMaps of the control plane.
    add(event("update", "configmaps", namespace="kube-system", name="coredns"))
    add(event("patch", "configmaps", namespace="kube-system", name="coredns", user=sa("kube-system", "coredns")))
    add(event("update", "configmaps", namespace="kube-system", name="aws-auth"))
    add(event("delete", "configmaps", namespace="kube-system", name="aws-auth", user="eks:kms-storage-migrator"))
    # Anonymous requests.
    add(event("get", None, user="system:anonymous", uri="/api", groups=("system:unauthenticated",), level="Metadata"))
    add(event("get", None, user="system:anonymous", uri="/healthz", groups=("system:unauthenticated",), level="Metadata"))
    add(event("get", "namespaces", user=None, level="Metadata"))
    # Bindings.
    binding = {"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"kind": "User", "name": "system:anonymous"}]}
    events += stages(event("create", "clusterrolebindings", name="anon", group="rbac.authorization.k8s.io",
                           request_object=binding, response_object=binding))
    add(event("create", "rolebindings", namespace="web", name="rb", group="rbac.authorization.k8s.io", request_object={
        "roleRef": {"name": "cluster-admin"}, "subjects": {"kind": "User", "name": "system:unauthenticated"}}))
    add(event("create", "rolebindings", namespace="web", name="rb2", group="rbac.authorization.k8s.io",
              level="Request", request_object={"roleRef": {"name": "cluster-admin"}}))
    add(event("create", "clusterrolebindings", name="sa", group="rbac.authorization.k8s.io",
              request_object={"spec": {"serviceAccountName": "builder"}}))
    # Services, webhooks, CSRs, jobs, node proxy.
    add(event("create", "services", namespace="web", request_object={"spec": {"type": "NodePort"}}))
    add(event("update", "services", namespace="web", name="s", request_object={"spec": {"type": "ClusterIP"}}))
    add(event("create", "validatingwebhookconfigurations", name="my-hook", group="admissionregistration.k8s.io"))
    add(event("patch", "mutatingwebhookconfigurations", name="eks-pod-identity", group="admissionregistration.k8s.io"))
    add(event("update", "validatingwebhookconfigurations", name="policy", group="admissionregistration.k8s.io",
              user=sa("kyverno", "kyverno-admission-controller")))
    add(event("create", "certificatesigningrequests", name="csr-1", group="certificates.k8s.io"))
    add(event("create", "certificatesigningrequests", name="csr-2", group="certificates.k8s.io", user="system:node:n1"))
    add(event("create", "cronjobs", namespace="ci", name="cj", group="batch"))
    add(event("create", "jobs", namespace="ci", name="j", group="batch", decision="forbid", code=403))
    add(event("get", "nodes", name="n1", subresource="proxy", uri="/api/v1/nodes/n1/proxy/run/default/web/c?cmd=id"))
    add(event("get", "nodes", name="n1", subresource="proxy", uri="/api/v1/nodes/n1/proxy/metrics"))
    add(event("get", "nodes", name="n1", subresource="proxy", uri="/api/v1/nodes/n1/proxy/configz"))
    return events


def audit_log_events() -> list[dict[str, Any]]:
    lines = (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines()
    lines += list(audit_lines(3_000, seed=10))
    return [json.loads(line) for line in lines] + constructed_events()


# --- Elastic's side ----------------------------------------------------------------------


def elastic_document(event: dict[str, Any]) -> dict[str, Any]:
    """The document Elastic's Kubernetes integration indexes for ``event`` (packages/kubernetes/
    data_stream/audit_logs/elasticsearch/ingest_pipeline/default.yml, processor by processor)."""
    audit = copy.deepcopy(event)
    document: dict[str, Any] = {
        "kubernetes": {"audit": audit},
        "data_stream": {"dataset": "kubernetes.audit_logs"},  # the data stream's own fields
        "event": {"dataset": "kubernetes.audit_logs", "kind": "event"},
    }
    for key in ("responseObject", "requestObject"):  # remove: *.metadata
        if isinstance(audit.get(key), dict):
            audit[key].pop("metadata", None)
    if audit.get("verb") is not None:
        document["event"]["action"] = audit["verb"]
    annotations = audit.get("annotations")
    if annotations is not None:  # script: dots -> underscores, decision -> outcome
        outcome = {"allow": "success", "forbid": "failure"}.get(annotations.get("authorization.k8s.io/decision"))
        if outcome:
            document["event"]["outcome"] = outcome
        audit["annotations"] = {key.replace(".", "_"): value for key, value in annotations.items()}
    user = audit.get("user") or {}
    names = {key: user[key] for key, target in (("username", "name"), ("uid", "id")) if user.get(key)}
    if names:
        document["user"] = {{"username": "name", "uid": "id"}[key]: value for key, value in names.items()}
    if audit.get("userAgent"):
        document["user_agent"] = {"original": audit["userAgent"]}
    ips = audit.get("sourceIPs")
    if ips is not None:  # convert to ip, ignore_failure: one bad entry fails the whole conversion
        try:
            document["source"] = {"ip": [str(ipaddress.ip_address(ip)) for ip in ips]}
            document["client"] = {"ip": document["source"]["ip"]}
        except ValueError:
            pass
    containers = ((audit.get("requestObject") or {}).get("spec") or {}).get("containers")
    images = [c.get("image") for c in (containers if isinstance(containers, list) else [containers])
              if isinstance(c, dict) and c.get("image")]
    if images:
        document["container"] = {"image": {"name": images}}
    return document


def request_key(event: dict[str, Any], line_no: int) -> str:
    return event.get("auditID") or f"line {line_no}"


def test_every_event_verdicts_equal_elastics_evaluator(tmp_path: Path) -> None:
    kql = elastic_kql()
    rule_files = kql_query_rules()

    # Import as a user would, one file per rule id (the corpus holds several versions of some rules).
    runner = CliRunner()
    imported: dict[str, Path] = {}
    refused: dict[str, str] = {}
    for path in sorted(rule_files):
        rule_id = tomllib.loads(path.read_text())["rule"]["rule_id"]
        if rule_id in imported:
            continue
        result = runner.invoke(main, ["rules", "import-elastic", str(path), "-o", str(tmp_path / "one.yaml")])
        if result.exit_code == 0:
            imported[rule_id] = path
        else:
            refused[path.name] = result.stderr
    assert refused == {}, "every KQL query rule of Elastic's imports"
    rules_yaml = tmp_path / "elastic.yaml"
    result = runner.invoke(main, ["rules", "import-elastic", *map(str, imported.values()), "-o", str(rules_yaml)])
    assert result.exit_code == 0, result.output

    events = audit_log_events()
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    result = runner.invoke(main, ["replay", "--every-event", "--format", "json", "--rules", str(rules_yaml), str(log)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 malformed line(s)" in result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    gatewatch = {(a["gatewatch"]["replay"].get("audit_id") or f"line {a['gatewatch']['replay']['line']}", a["rule"]["id"])
                 for a in alerts}

    queries = {rule_id: tomllib.loads(path.read_text())["rule"]["query"] for rule_id, path in imported.items()}
    evaluators = {rule_id: kql.get_evaluator(kql.parse(query)) for rule_id, query in queries.items()}
    elastic: set[tuple[str, str]] = set()
    requests: set[str] = set()
    for line_no, built in enumerate(events, start=1):
        key = request_key(built, line_no)
        requests.add(key)
        document = elastic_document(built)
        for rule_id, matches in evaluators.items():
            if matches(document):
                elastic.add((key, rule_id))

    pairs = len(requests) * len(evaluators)
    disagreements = sorted(gatewatch ^ elastic)
    agreement = 1 - len(disagreements) / pairs
    print(f"\n{len(evaluators)} rules x {len(requests)} requests ({len(events)} events): {pairs} (auditID, rule) pairs, "
          f"{len(elastic)} matches in Elastic's evaluator, {len(gatewatch)} in gatewatch's, agreement {agreement:.4%}")
    assert len(elastic) >= 60, "the events exercise the rules"
    assert len({rule for _, rule in elastic}) >= 25, "most rules match some event"
    assert disagreements == [], disagreements[:20]

    # The default question (what would the webhook have done?) leaves out what the webhook never
    # sees or never evaluates: it can only find fewer of Elastic's matches, never others.
    result = runner.invoke(main, ["replay", "--format", "json", "--rules", str(rules_yaml), str(log)],
                           catch_exceptions=False)
    webhook = {(a["gatewatch"]["replay"].get("audit_id") or f"line {a['gatewatch']['replay']['line']}", a["rule"]["id"])
               for a in map(json.loads, result.stdout.splitlines())}
    print(f"without --every-event: {len(webhook)} matches, agreement {1 - len(webhook ^ elastic) / pairs:.4%}")
    assert webhook < elastic
