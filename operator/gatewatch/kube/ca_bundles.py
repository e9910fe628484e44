"""Which CAs to register in the caBundle when replicas serve with different ones (files mode).

With certificate files from a mounted Secret (cert-manager), kubelets update
each replica's mount at their own time: during a CA rotation some replicas
serve with the old CA and some with the new one, and the API server must
trust both or it cannot call some of them. ``unite_ca_bundles`` decides,
purely, which of the CAs found in the live configuration to keep beside our
own; the reconciler (``webhook_configuration``) holds the state it needs.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from cryptography import x509

# How long a live CA older than this replica's own (rotated out, or added by someone)
# is kept; newer ones are kept while valid (another replica is ahead in a rotation).
FOREIGN_CA_GRACE_SECONDS = 300.0
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class UnitedCaBundle:
    """What ``unite_ca_bundles`` decided."""

    bundle: bytes  # to register in every webhook entry
    accepted: tuple[bytes, ...]  # foreign CAs registered along with ours
    trimmed: tuple[bytes, ...]  # foreign CAs left out: expired, or older than ours and past the grace


def unite_ca_bundles(
    *,
    own: Sequence[bytes],
    live_bundles: Sequence[Sequence[bytes]],
    accepted_before: Mapping[bytes, float],
    dropped_before: Collection[bytes],
    clock_now: float,
    now: dt.datetime,
    grace_seconds: float,
) -> UnitedCaBundle:
    """The caBundle to register: our CAs (PEM) plus the live foreign ones another replica may serve with.

    ``live_bundles``: the PEM certificates of each webhook entry. ``accepted_before``:
    foreign CAs accepted earlier, with when (``clock_now``'s clock). ``dropped_before``:
    foreign CAs this replica trimmed (and wrote) earlier. Pure.

    - A new foreign CA is accepted only when every entry carries it: gatewatch writes
      one bundle everywhere, so a CA in some entries only is drift, restored without it.
      An accepted one stays while any entry carries it.
    - Expired: trimmed at once.
    - Newer than our newest (later notBefore): kept while valid; that replica is ahead in
      a rotation and our mount catches up later.
    - Otherwise (rotated out, or added by someone): kept for ``grace_seconds`` after it
      was accepted, then trimmed; but one we trimmed that came back was put back by a
      replica still serving with it: kept until it expires or disappears.

    In the live bundle's order, so a live bundle that already holds all of it compares equal.
    """
    live_order = list(dict.fromkeys(pem for bundle in live_bundles for pem in bundle))
    in_every_entry = set(live_bundles[0]).intersection(*live_bundles[1:]) if live_bundles else set()
    own_not_before = [moment for moment in map(_not_before, own) if moment is not None]
    newest_own = max(own_not_before, default=None)
    accepted: list[bytes] = []
    trimmed: list[bytes] = []
    for pem in live_order:
        if pem in own or (pem not in accepted_before and pem not in in_every_entry):
            continue
        if is_expired(pem, now):
            trimmed.append(pem)
            continue
        not_before = _not_before(pem)
        ahead_of_us = newest_own is not None and not_before is not None and not_before > newest_own
        within_grace = clock_now - accepted_before.get(pem, clock_now) < grace_seconds
        (accepted if ahead_of_us or within_grace or pem in dropped_before else trimmed).append(pem)
    kept = {*own, *accepted}
    united = [pem for pem in live_order if pem in kept] + [pem for pem in own if pem not in live_order]
    return UnitedCaBundle(bundle=b"".join(united), accepted=tuple(accepted), trimmed=tuple(trimmed))



# --- certificates in a bundle ------------------------------------------------------------------


def pem_certificates(bundle: bytes) -> list[bytes]:
    """The PEM certificates of a bundle, each normalized to end in one newline, without duplicates."""
    return list(dict.fromkeys(match.group(0) + b"\n" for match in _PEM_CERTIFICATE.finditer(bundle)))


def load_certificate(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def is_expired(pem: bytes, now: dt.datetime) -> bool:
    certificate = load_certificate(pem)
    return certificate is None or certificate.not_valid_after_utc <= now  # not a certificate: nobody serves with it


def _not_before(pem: bytes) -> dt.datetime | None:
    certificate = load_certificate(pem)
    return certificate.not_valid_before_utc if certificate is not None else None


def certificate_fingerprint(pem: bytes) -> str:
    return f"sha256:{hashlib.sha256(pem).hexdigest()[:16]}"
