"""Replicas that want different webhook configurations at the same time do not fight.

Rolling upgrades (old and new replicas, told apart by their generation), a
replica starting during a CA rotation, and cert-manager mode (mounted Secrets
that reach each replica at its own time). Against kube_emulator, several
reconcilers on one API, as several replicas would be.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging

import pytest
from kube_emulator import (  # noqa: F401  (fixtures)
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    kube_api_client,
    kube_emulator,
    put_object,
    read_object,
)

from gatewatch.kube.certificates import generate_ca
from gatewatch.kube.webhook_configuration import (
    GENERATION_ANNOTATION,
    POD_IMAGES_CHANGED,
    ReconcileOutcome,
    ServiceTarget,
    WebhookConfigurationReconciler,
    WebhookHandler,
    WebhookRegistration,
)

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
OLD_CA = generate_ca(now=NOW - dt.timedelta(days=300)).cert_pem
NEW_CA = generate_ca(now=NOW).cert_pem
ATTACKER_CA = generate_ca(now=NOW, common_name="not gatewatch").cert_pem
EXPIRED_CA = generate_ca(now=NOW - dt.timedelta(days=30), lifetime=dt.timedelta(days=1)).cert_pem

PREVIOUS_RELEASE = WebhookRegistration(  # before this release: no pods-update, a longer timeout
    name="gatewatch",
    handlers=(WebhookHandler("pods", "pods", ("CREATE",)), WebhookHandler("pods-exec", "pods/exec", ("CONNECT",))),
    own_namespace="gatewatch",
    service=ServiceTarget(name="gatewatch", namespace="gatewatch"),
    timeout_seconds=10,
)
THIS_RELEASE = WebhookRegistration(
    name="gatewatch",
    handlers=(*PREVIOUS_RELEASE.handlers,
              WebhookHandler("pods-update", "pods", ("UPDATE",), match_conditions=(POD_IMAGES_CHANGED,))),
    own_namespace="gatewatch",
    service=ServiceTarget(name="gatewatch", namespace="gatewatch"),
    timeout_seconds=5,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def live(emulator) -> dict:
    return read_object(emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")


def security_records(caplog, event: str | None = None) -> list[dict]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gatewatch.security"]
    return [record for record in records if event is None or record["event"] == event]


def drift_records(caplog) -> list[dict]:
    return security_records(caplog, "webhook_configuration_drift")


def live_bundle(emulator) -> bytes:
    bundles = {webhook["clientConfig"]["caBundle"] for webhook in live(emulator)["webhooks"]}
    assert len(bundles) == 1, "every webhook entry registers the same bundle"
    return base64.b64decode(bundles.pop())


def replica(api_client, *, registration=THIS_RELEASE, ca_bundle=NEW_CA, **kwargs) -> WebhookConfigurationReconciler:
    return WebhookConfigurationReconciler(api_client, registration=registration, ca_bundle=ca_bundle, **kwargs)


# --- A: rolling upgrades -------------------------------------------------------------------------


@pytest.mark.parametrize("old_replica_starts_first", [True, False])  # False: an old Pod restarted mid-rollout
async def test_old_and_new_replicas_converge_on_the_new_configuration_without_drift(
        kube_emulator, kube_api_client, caplog, old_replica_starts_first):
    caplog.set_level(logging.INFO)
    old = replica(kube_api_client, registration=PREVIOUS_RELEASE, generation=1)
    new = replica(kube_api_client, generation=2)
    first, second = (old, new) if old_replica_starts_first else (new, old)
    await first.reconcile_once()
    await second.reconcile_once()

    outcomes = []
    for _ in range(5):  # the periodic loops of both, interleaved
        outcomes.append(((await old.reconcile_once()).outcome, (await new.reconcile_once()).outcome))

    assert outcomes == [(ReconcileOutcome.STOOD_BACK, ReconcileOutcome.IN_SYNC)] * 5
    configuration = live(kube_emulator)
    assert configuration["webhooks"] == THIS_RELEASE.build(NEW_CA)["webhooks"]
    assert configuration["metadata"]["annotations"][GENERATION_ANNOTATION] == "2"
    assert drift_records(caplog) == []
    standing_back = [r.getMessage() for r in caplog.records if "standing back" in r.getMessage()]
    assert standing_back == ["ValidatingWebhookConfiguration gatewatch: standing back for generation 2 (mine: 1)"]


async def test_a_configuration_from_before_generations_is_stamped_as_an_update(kube_emulator, kube_api_client,
                                                                              caplog):
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, {
        **THIS_RELEASE.build(NEW_CA), "metadata": {"name": "gatewatch"}})  # same webhooks, no annotation
    new = replica(kube_api_client, generation=3)

    assert (await new.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live(kube_emulator)["metadata"]["annotations"][GENERATION_ANNOTATION] == "3"
    assert (await new.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert security_records(caplog) == []


async def test_an_old_replica_left_running_restores_its_configuration_after_the_bound_as_drift(
        kube_emulator, kube_api_client, caplog):
    clock = FakeClock()
    old = replica(kube_api_client, registration=PREVIOUS_RELEASE, generation=1, stand_back_seconds=600, clock=clock)
    new = replica(kube_api_client, generation=2)
    await new.reconcile_once()

    assert (await old.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    clock.seconds += 599
    assert (await old.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    assert drift_records(caplog) == []
    clock.seconds += 1
    assert (await old.reconcile_once()).outcome is ReconcileOutcome.RESTORED

    assert live(kube_emulator)["webhooks"] == PREVIOUS_RELEASE.build(NEW_CA)["webhooks"]
    (drift,) = drift_records(caplog)
    assert drift["live_generation"] == 2
    assert ("pods-update.gatewatch.io", "<entry>") in {(c["webhook"], c["field"]) for c in drift["changes"]}


async def test_a_raised_generation_annotation_buys_a_bypass_at_most_the_bound_and_is_logged(
        kube_emulator, kube_api_client, caplog):
    clock = FakeClock()
    ours = replica(kube_api_client, generation=4, clock=clock)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    edited["metadata"]["annotations"][GENERATION_ANNOTATION] = "99999"
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)
    # The same webhooks under a higher generation (also: a replica restarted after a rules-only
    # upgrade read the new revision): nothing to fight over, nothing to report.
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert security_records(caplog) == []

    # Then the bypass itself: reported at once, left alone only until the stand-back bound runs out.
    edited = live(kube_emulator)
    edited["webhooks"][0]["failurePolicy"] = "Fail"
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    (record,) = security_records(caplog)
    assert record["event"] == "webhook_configuration_newer_generation"
    assert (record["generation"], record["live_generation"]) == (4, 99999)
    assert record["changes"] == [
        {"webhook": None, "field": f"annotations[{GENERATION_ANNOTATION}]", "expected": "4", "found": "99999"},
        {"webhook": "pods.gatewatch.io", "field": "failurePolicy", "expected": "Ignore", "found": "Fail"},
    ]
    assert [r.levelname for r in caplog.records if r.name == "gatewatch.security"] == ["WARNING"]
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    assert len(security_records(caplog)) == 1  # the same generation: not logged again
    clock.seconds += 600
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"] == THIS_RELEASE.build(NEW_CA)["webhooks"]
    assert live(kube_emulator)["metadata"]["annotations"][GENERATION_ANNOTATION] == "4"
    (drift,) = drift_records(caplog)
    assert drift["changes"] == [{"webhook": "pods.gatewatch.io", "field": "failurePolicy",
                                 "expected": "Ignore", "found": "Fail"}]


async def test_lowering_the_generation_does_not_hide_a_bypass(kube_emulator, kube_api_client, caplog):
    ours = replica(kube_api_client, generation=4)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    edited["metadata"]["annotations"] = {}
    edited["webhooks"][0]["timeoutSeconds"] = 1
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    (drift,) = drift_records(caplog)
    assert drift["changes"] == [{"webhook": "pods.gatewatch.io", "field": "timeoutSeconds",
                                 "expected": 5, "found": 1}]


# --- B: a replica starting during a CA rotation --------------------------------------------------


async def test_a_starting_replica_adopts_a_rotated_bundle_instead_of_reverting_it(kube_emulator, kube_api_client,
                                                                                  caplog):
    secret_bundle = NEW_CA + OLD_CA  # what the shared certificate Secret holds after the rotation

    async def read_secret() -> bytes:
        return secret_bundle

    rotated = replica(kube_api_client, ca_bundle=secret_bundle, refresh_ca_bundle=read_secret)
    await rotated.reconcile_once()
    starting = replica(kube_api_client, ca_bundle=OLD_CA, refresh_ca_bundle=read_secret)  # read before the rotation

    assert (await starting.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert live_bundle(kube_emulator) == secret_bundle
    assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert security_records(caplog) == []


# --- C: cert-manager mode, mounted Secrets updated node by node ----------------------------------


def files_replica(api_client, *, ca_bundle: bytes, clock: FakeClock) -> WebhookConfigurationReconciler:
    return replica(api_client, ca_bundle=ca_bundle, ca_bundle_union=True, foreign_ca_grace_seconds=300,
                   clock=clock, now=lambda: NOW)


async def test_replicas_on_either_side_of_a_ca_rotation_keep_both_cas_registered(kube_emulator, kube_api_client,
                                                                                 caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    lagging = files_replica(kube_api_client, ca_bundle=OLD_CA, clock=clock)  # kubelet not synced yet
    rotated = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await lagging.reconcile_once()

    assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live_bundle(kube_emulator) == OLD_CA + NEW_CA  # both replicas' certificates verify
    for _ in range(3):
        assert (await lagging.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
        assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC

    lagging.set_ca_bundle(NEW_CA)  # its kubelet caught up
    assert (await lagging.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    clock.seconds += 300  # nobody serves with the old CA any more: it does not stay forever
    assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live_bundle(kube_emulator) == NEW_CA
    assert (await lagging.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert drift_records(caplog) == []
    assert {r.levelname for r in caplog.records if r.name == "gatewatch.security"} == {"INFO"}  # the trim


async def test_an_expired_ca_in_the_live_bundle_is_dropped_at_once(kube_emulator, kube_api_client):
    clock = FakeClock()
    await files_replica(kube_api_client, ca_bundle=EXPIRED_CA + NEW_CA, clock=clock).reconcile_once()
    ours = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live_bundle(kube_emulator) == NEW_CA


async def test_a_replaced_bundle_is_drift_and_the_foreign_ca_does_not_stay(kube_emulator, kube_api_client, caplog):
    clock = FakeClock()
    ours = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    for webhook in edited["webhooks"]:
        webhook["clientConfig"]["caBundle"] = base64.b64encode(ATTACKER_CA).decode()
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert NEW_CA in live_bundle(kube_emulator)
    (drift,) = drift_records(caplog)
    assert {change["field"] for change in drift["changes"]} == {"clientConfig"}
    clock.seconds += 300
    await ours.reconcile_once()
    assert live_bundle(kube_emulator) == NEW_CA
