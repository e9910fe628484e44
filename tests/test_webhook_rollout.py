"""Replicas that want different webhook configurations at the same time do not fight.

Rolling upgrades (old and new replicas, told apart by their generation), a
replica starting during a CA rotation, and cert-manager mode (mounted Secrets
that reach each replica at its own time). Against kube_emulator, several
reconcilers on one API, as several replicas would be.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
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

from gatewatch.kube.ca_bundles import unite_ca_bundles
from gatewatch.kube.certificates import RenewalPolicy, generate_ca
from gatewatch.kube.webhook_configuration import (
    GENERATION_ANNOTATION,
    STAND_BACK_SECONDS,
    POD_IMAGES_CHANGED,
    ReconcileOutcome,
    ServiceTarget,
    WebhookConfigurationReconciler,
    WebhookHandler,
    WebhookRegistration,
)
from gatewatch.decision import Mode
from gatewatch.namespace_modes import ModePolicy

NAMESPACE_CLASSES = ModePolicy(default=Mode.WARN, excluded=("gatewatch", "kube-system")).namespace_classes()

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
OLD_CA = generate_ca(now=NOW - dt.timedelta(days=300)).cert_pem
NEW_CA = generate_ca(now=NOW).cert_pem
ATTACKER_CA = generate_ca(now=NOW, common_name="not gatewatch").cert_pem
EXPIRED_CA = generate_ca(now=NOW - dt.timedelta(days=30), lifetime=dt.timedelta(days=1)).cert_pem

PREVIOUS_RELEASE = WebhookRegistration(  # before this release: no pods-update, a longer timeout
    name="gatewatch",
    handlers=(WebhookHandler("pods", "pods", ("CREATE",)), WebhookHandler("pods-exec", "pods/exec", ("CONNECT",))),
    namespace_classes=NAMESPACE_CLASSES,
    service=ServiceTarget(name="gatewatch", namespace="gatewatch"),
    timeout_seconds=10,
)
THIS_RELEASE = WebhookRegistration(
    name="gatewatch",
    handlers=(*PREVIOUS_RELEASE.handlers,
              WebhookHandler("pods-update", "pods", ("UPDATE",), match_conditions=(POD_IMAGES_CHANGED,))),
    namespace_classes=NAMESPACE_CLASSES,
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


def security_events(caplog) -> list[tuple[str, str]]:
    return [(record.levelname, json.loads(record.getMessage())["event"])
            for record in caplog.records if record.name == "gatewatch.security"]


def fingerprint(pem: bytes) -> str:
    return "sha256:" + hashlib.sha256(pem).hexdigest()[:16]


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
    assert ("pods-update.enforce.gatewatch.io", "<entry>") in {(c["webhook"], c["field"]) for c in drift["changes"]}


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
    edited["webhooks"][0]["failurePolicy"] = "Ignore"  # the enforce entry fails open
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    (record,) = security_records(caplog)
    assert record["event"] == "webhook_configuration_newer_generation"
    assert (record["generation"], record["live_generation"]) == (4, 99999)
    assert record["changes"] == [
        {"webhook": None, "field": f"annotations[{GENERATION_ANNOTATION}]", "expected": "4", "found": "99999"},
        {"webhook": "pods.enforce.gatewatch.io", "field": "failurePolicy", "expected": "Fail", "found": "Ignore"},
    ]
    assert [r.levelname for r in caplog.records if r.name == "gatewatch.security"] == ["WARNING"]
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
    assert len(security_records(caplog)) == 1  # the same generation: not logged again
    clock.seconds += 600
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"] == THIS_RELEASE.build(NEW_CA)["webhooks"]
    assert live(kube_emulator)["metadata"]["annotations"][GENERATION_ANNOTATION] == "4"
    (drift,) = drift_records(caplog)
    assert drift["changes"] == [{"webhook": "pods.enforce.gatewatch.io", "field": "failurePolicy",
                                 "expected": "Fail", "found": "Ignore"}]


async def test_lowering_the_generation_does_not_hide_a_bypass(kube_emulator, kube_api_client, caplog):
    ours = replica(kube_api_client, generation=4)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    edited["metadata"]["annotations"] = {}
    edited["webhooks"][0]["timeoutSeconds"] = 1
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    (drift,) = drift_records(caplog)
    assert drift["changes"] == [{"webhook": "pods.enforce.gatewatch.io", "field": "timeoutSeconds",
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
    # Each replica warns once about the other's CA (it cannot tell a rotation from an addition); one trim.
    assert security_events(caplog) == [("WARNING", "webhook_configuration_foreign_ca"),
                                       ("WARNING", "webhook_configuration_foreign_ca"),
                                       ("INFO", "webhook_configuration_ca_trimmed")]


async def test_a_mount_lagging_longer_than_the_grace_does_not_start_a_fight(kube_emulator, kube_api_client, caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    lagging = files_replica(kube_api_client, ca_bundle=OLD_CA, clock=clock)  # its kubelet never catches up here
    rotated = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await lagging.reconcile_once()
    await rotated.reconcile_once()

    outcomes = []
    for _ in range(70):  # 700 s, more than twice the grace
        outcomes.append(((await lagging.reconcile_once()).outcome, (await rotated.reconcile_once()).outcome))
        assert NEW_CA in live_bundle(kube_emulator)  # the lagging replica never drops the newer CA
        clock.seconds += 10

    assert live_bundle(kube_emulator) == NEW_CA + OLD_CA
    # The rotated replica trims the old CA once after the grace; the lagging one puts it back once
    # (its own CA removed: drift); from then on the old CA stays, as long as someone serves with it.
    assert [pair for pair in outcomes if pair != (ReconcileOutcome.IN_SYNC, ReconcileOutcome.IN_SYNC)] == [
        (ReconcileOutcome.IN_SYNC, ReconcileOutcome.UPDATED), (ReconcileOutcome.RESTORED, ReconcileOutcome.IN_SYNC)]
    assert outcomes[-20:] == [(ReconcileOutcome.IN_SYNC, ReconcileOutcome.IN_SYNC)] * 20
    assert len(drift_records(caplog)) == 1
    assert security_events(caplog).count(("INFO", "webhook_configuration_ca_trimmed")) == 1

    lagging.set_ca_bundle(NEW_CA)  # caught up at last: the old CA goes, once, after the grace
    for _ in range(35):
        await lagging.reconcile_once()
        await rotated.reconcile_once()
        clock.seconds += 10
    assert live_bundle(kube_emulator) == NEW_CA
    assert len(drift_records(caplog)) == 1


async def test_an_older_ca_put_back_after_the_trim_is_kept_until_it_disappears(kube_emulator, kube_api_client,
                                                                               caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    lagging = files_replica(kube_api_client, ca_bundle=OLD_CA, clock=clock)
    rotated = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await lagging.reconcile_once()
    await rotated.reconcile_once()
    clock.seconds += 300
    assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.UPDATED  # trimmed after the grace
    assert live_bundle(kube_emulator) == NEW_CA
    assert (await lagging.reconcile_once()).outcome is ReconcileOutcome.RESTORED  # still serves with it

    for _ in range(10):  # kept: the rotated replica does not trim it again
        clock.seconds += 300
        assert (await rotated.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert live_bundle(kube_emulator) == NEW_CA + OLD_CA
    readmitted = [r for r in security_records(caplog, "webhook_configuration_foreign_ca") if r["readmitted"]]
    assert [r["fingerprint"] for r in readmitted] == [fingerprint(OLD_CA)]


async def test_an_expired_newer_ca_is_not_kept(kube_emulator, kube_api_client):
    clock = FakeClock()
    newer_but_expired = generate_ca(now=NOW - dt.timedelta(days=2), lifetime=dt.timedelta(days=1)).cert_pem
    await files_replica(kube_api_client, ca_bundle=newer_but_expired + OLD_CA, clock=clock).reconcile_once()
    ours = files_replica(kube_api_client, ca_bundle=OLD_CA, clock=clock)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live_bundle(kube_emulator) == OLD_CA


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


async def test_a_ca_added_to_one_entry_is_drift_and_not_copied_to_the_others(kube_emulator, kube_api_client,
                                                                              caplog):
    clock = FakeClock()
    ours = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    edited["webhooks"][1]["clientConfig"]["caBundle"] = base64.b64encode(NEW_CA + ATTACKER_CA).decode()
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live_bundle(kube_emulator) == NEW_CA  # every entry, the edited one included
    (drift,) = drift_records(caplog)
    assert [(c["webhook"], c["field"]) for c in drift["changes"]] == [("pods.warn.gatewatch.io", "clientConfig")]
    assert security_records(caplog, "webhook_configuration_foreign_ca") == []


async def test_a_ca_added_to_every_entry_is_reported_and_trimmed_after_the_grace(kube_emulator, kube_api_client,
                                                                                  caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    ours = files_replica(kube_api_client, ca_bundle=NEW_CA, clock=clock)
    await ours.reconcile_once()
    edited = live(kube_emulator)
    for webhook in edited["webhooks"]:
        webhook["clientConfig"]["caBundle"] = base64.b64encode(NEW_CA + ATTACKER_CA).decode()
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    # Indistinguishable from another replica's rotated CA: accepted, but with a WARNING at once.
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    (record,) = security_records(caplog)
    assert record["event"] == "webhook_configuration_foreign_ca"
    assert record["fingerprint"] == fingerprint(ATTACKER_CA)
    assert "CN=not gatewatch" in record["subject"]
    assert record["not_before"].startswith("2026-11-21") and record["not_after"]
    assert security_events(caplog) == [("WARNING", "webhook_configuration_foreign_ca")]
    clock.seconds += 290
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC  # not warned again

    clock.seconds += 10  # not newer than ours: nobody rotates to it; trimmed after the grace
    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live_bundle(kube_emulator) == NEW_CA
    assert security_events(caplog) == [("WARNING", "webhook_configuration_foreign_ca"),
                                       ("INFO", "webhook_configuration_ca_trimmed")]
    assert security_records(caplog)[1]["certificates"] == [fingerprint(ATTACKER_CA)]


async def test_a_trim_is_logged_only_once_written(kube_emulator, kube_api_client, caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    newer = replica(kube_api_client, ca_bundle=OLD_CA + NEW_CA, ca_bundle_union=True, clock=clock,
                    now=lambda: NOW, generation=8)
    older = replica(kube_api_client, registration=PREVIOUS_RELEASE, ca_bundle=NEW_CA, ca_bundle_union=True,
                    foreign_ca_grace_seconds=300, stand_back_seconds=600, clock=clock, now=lambda: NOW, generation=7)
    await newer.reconcile_once()

    for _ in range(59):  # OLD_CA is past the grace for the older replica, but it stands back: nothing trimmed
        assert (await older.reconcile_once()).outcome is ReconcileOutcome.STOOD_BACK
        clock.seconds += 10
    assert security_records(caplog, "webhook_configuration_ca_trimmed") == []
    clock.seconds += 10
    assert (await older.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live_bundle(kube_emulator) == NEW_CA
    assert len(security_records(caplog, "webhook_configuration_ca_trimmed")) == 1


@pytest.mark.parametrize("older_registration", [THIS_RELEASE, PREVIOUS_RELEASE])
async def test_an_older_generation_registers_its_new_ca_at_once(kube_emulator, kube_api_client, caplog,
                                                                older_registration):
    clock = FakeClock()
    newer = replica(kube_api_client, ca_bundle=OLD_CA, ca_bundle_union=True, clock=clock, now=lambda: NOW,
                    generation=8)
    older = replica(kube_api_client, registration=older_registration, ca_bundle=OLD_CA, ca_bundle_union=True,
                    clock=clock, now=lambda: NOW, generation=7)
    await newer.reconcile_once()
    await older.reconcile_once()
    older.set_ca_bundle(NEW_CA)  # its kubelet mounted the rotated Secret first: it serves a NEW_CA certificate

    assert (await older.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    configuration = live(kube_emulator)
    assert live_bundle(kube_emulator) == OLD_CA + NEW_CA  # only its CA added: the rest is still generation 8's
    assert configuration["webhooks"] == THIS_RELEASE.build(OLD_CA + NEW_CA)["webhooks"]
    assert configuration["metadata"]["annotations"][GENERATION_ANNOTATION] == "8"
    assert (await newer.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC  # newer than its CA: kept
    for _ in range(25):  # within the stand-back bound
        clock.seconds += 10
        await newer.reconcile_once()
        await older.reconcile_once()
    assert NEW_CA in live_bundle(kube_emulator)
    assert drift_records(caplog) == []


def test_standing_back_ends_well_before_a_self_managed_ca_signs_anything():
    assert STAND_BACK_SECONDS == 300
    assert STAND_BACK_SECONDS * 2 <= RenewalPolicy().ca_publish_delay.total_seconds()


def test_an_accepted_ca_stays_while_any_entry_carries_it_a_new_one_only_from_every_entry():
    def unite(live_bundles, accepted_before):
        return unite_ca_bundles(own=[OLD_CA], live_bundles=live_bundles, accepted_before=accepted_before,
                                dropped_before=(), clock_now=1000.0, now=NOW, grace_seconds=300)

    # Someone removed the accepted (newer) CA from one entry: restored everywhere, not forgotten.
    restored = unite([[OLD_CA, NEW_CA], [OLD_CA]], {NEW_CA: 0.0})
    assert (restored.bundle, restored.accepted, restored.trimmed) == (OLD_CA + NEW_CA, (NEW_CA,), ())
    # A CA not accepted before and missing from one entry: left out, whatever its dates.
    assert unite([[OLD_CA, NEW_CA], [OLD_CA]], {}).bundle == OLD_CA
