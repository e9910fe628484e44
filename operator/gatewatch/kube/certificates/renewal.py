"""When to renew, and CA rotation without a failed request: one pure decision.

The manager reads the Secret, asks ``plan_renewal`` what to store next, and
writes that back. A new CA is first *published* (added to the bundle, the
serving certificate still signed by the old one); only after
``RenewalPolicy.ca_publish_delay`` (longer than every replica's poll interval,
so every replica has put the two-CA bundle into the webhook configuration) does
it start signing. The old CA stays in the bundle until it expires.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Sequence

from gatewatch.kube.certificates.material import (
    RenewalPolicy,
    TlsState,
    covers_names,
    generate_ca,
    is_signed_by,
    issue_serving_certificate,
    needs_renewal,
    valid_at,
)


def plan_renewal(
    state: TlsState | None,
    *,
    names: Sequence[str],
    now: dt.datetime,
    policy: RenewalPolicy = RenewalPolicy(),
) -> TlsState | None:
    """The state to store next, or None when ``state`` is fine as it is.

    Pure: the manager reads the Secret, asks this, and writes the answer back.
    """
    if state is None or now >= state.ca.certificate.not_valid_after_utc:
        # Nothing usable (first start, or a CA already expired: every request fails anyway).
        return _fresh_state(names=names, now=now, policy=policy)
    new = state
    trusted = tuple(pem for pem in state.trusted_cas if valid_at(pem, now))
    if state.ca.cert_pem not in trusted:
        trusted = (state.ca.cert_pem, *trusted)
    if trusted != state.trusted_cas:
        new = replace(new, trusted_cas=trusted)

    if new.next_ca is not None and new.next_ca_since is not None and now - new.next_ca_since >= policy.ca_publish_delay:
        # Published long enough: every replica trusts it; it signs from now on.
        new = replace(new, ca=new.next_ca, next_ca=None, next_ca_since=None)
        new = replace(new, serving=issue_serving_certificate(
            ca=new.ca, names=names, now=now, lifetime=policy.serving_lifetime))
    elif new.next_ca is None and needs_renewal(new.ca.cert_pem, now, renew_fraction=policy.renew_fraction):
        next_ca = generate_ca(now=now, lifetime=policy.ca_lifetime)
        new = replace(new, next_ca=next_ca, next_ca_since=now,
                      trusted_cas=(*new.trusted_cas, next_ca.cert_pem))

    serving = new.serving.cert_pem
    if (
        not is_signed_by(serving, new.ca.cert_pem)
        or needs_renewal(serving, now, renew_fraction=policy.renew_fraction)
        or not covers_names(serving, names)
    ):
        new = replace(new, serving=issue_serving_certificate(
            ca=new.ca, names=names, now=now, lifetime=policy.serving_lifetime))
    return None if new == state else new


def _fresh_state(*, names: Sequence[str], now: dt.datetime, policy: RenewalPolicy) -> TlsState:
    ca = generate_ca(now=now, lifetime=policy.ca_lifetime)
    serving = issue_serving_certificate(ca=ca, names=names, now=now, lifetime=policy.serving_lifetime)
    return TlsState(ca=ca, serving=serving, trusted_cas=(ca.cert_pem,))
