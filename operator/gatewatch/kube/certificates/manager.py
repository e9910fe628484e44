"""Self-managed TLS (``certificates.mode: self-managed``): a CA and a serving
certificate kept in a Secret in gatewatch's namespace, so every replica serves the
same one, renewed before expiry.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import kubernetes.client

from gatewatch.errors import CertificateError, KubernetesApiError
from gatewatch.kube import rest
from gatewatch.kube.certificates.material import Clock, RenewalPolicy, TlsState, utc_now
from gatewatch.kube.certificates.renewal import plan_renewal
from gatewatch.kube.certificates.secret import build_secret, state_from_secret
from gatewatch.kube.certificates.serving import ChangeCallback, ServingFiles, announce_change
from gatewatch.kube.client import REQUEST_TIMEOUT_SECONDS, api_error

logger = logging.getLogger(__name__)


class CertificateManager:
    """CA + serving certificate in a Secret, shared by every replica, renewed before expiry.

    ``ensure()`` makes the material exist and be current, writes the PEM files
    under ``work_dir`` and returns them. The operator's supervisor calls it every
    ``interval`` seconds (gatewatch.background); when the material changed (own renewal or another
    replica's), ``on_change`` is awaited with the new files: reload the server's
    SSLContext and update the webhook configuration's caBundle there.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        secret_name: str,
        names: Sequence[str],
        work_dir: Path,
        policy: RenewalPolicy = RenewalPolicy(),
        clock: Clock = utc_now,
        on_change: ChangeCallback | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._api_client = api_client
        self._timeout = request_timeout  # a blackholed API server must not hold a thread for good
        self.namespace = namespace
        self.secret_name = secret_name
        self.names = list(names)
        self.work_dir = Path(work_dir)
        self.policy = policy
        self._clock = clock
        self.on_change = on_change
        self._delivered: ServingFiles | None = None
        self._delivered_fingerprint: str | None = None

    @property
    def current(self) -> ServingFiles | None:
        """What ``ensure`` last returned."""
        return self._delivered

    @property
    def source(self) -> str:
        return f"secret {self.namespace}/{self.secret_name}"

    async def ensure(self) -> ServingFiles:
        """Current material, from the Secret (created or renewed if needed), written to ``work_dir``.

        ``on_change`` is awaited when the material differs from what the previous
        call returned (never on the first call: its caller uses the return value).
        Raises KubernetesApiError or CertificateError.
        """
        state = await self._converge()
        files = await asyncio.to_thread(self._write_files, state)
        fingerprint = files.fingerprint
        previous = self._delivered_fingerprint
        self._delivered, self._delivered_fingerprint = files, fingerprint
        if previous is not None and previous != fingerprint:
            await announce_change(self.on_change, files, what=f"serving certificate in {self.source}")
        return files

    async def read_ca_bundle(self) -> bytes:
        """The bundle in the Secret now, without writing or calling back.

        For ``WebhookConfigurationReconciler(refresh_ca_bundle=...)``: another
        replica may have rotated the CA before this one's next ``run`` round.
        """
        secret = await self._read()
        if secret is not None:
            try:
                return state_from_secret(secret, source=self.source).ca_bundle
            except CertificateError:
                pass  # ensure() replaces it and says why
        if self._delivered is None:
            raise CertificateError("no certificate yet: call ensure() first", source=self.source)
        return self._delivered.ca_bundle

    async def _converge(self, attempts: int = 5) -> TlsState:
        # Each round: read, decide, write with the read resourceVersion as precondition.
        # A 409 means another replica wrote first: read theirs and decide again.
        for _ in range(attempts):
            secret = await self._read()
            state: TlsState | None = None
            if secret is not None:
                try:
                    state = state_from_secret(secret, source=self.source)
                except CertificateError as error:
                    logger.error("unusable TLS material, issuing new: %s", error)
            new_state = plan_renewal(state, names=self.names, now=self._clock(), policy=self.policy)
            if new_state is None:
                assert state is not None
                return state
            written = await self._write(new_state, live=secret)
            if written:
                self._log_transition(state, new_state)
                return new_state
        raise KubernetesApiError("kept conflicting with other writers", operation="update",
                                 kind="secret", name=self.secret_name, namespace=self.namespace, status=409)

    async def _read(self) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return rest.read_namespaced_secret(self._api_client, self.secret_name, self.namespace,
                                                   timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return None
                raise api_error(error, operation="read", kind="secret", name=self.secret_name,
                                namespace=self.namespace) from None

        return await asyncio.to_thread(call)

    async def _write(self, state: TlsState, *, live: Mapping[str, Any] | None) -> bool:
        """Creates (no ``live``) or replaces the Secret. True if written; False on 409 Conflict."""
        body = build_secret(state, name=self.secret_name, namespace=self.namespace, live=live)
        create = live is None

        def call() -> bool:
            try:
                if create:
                    rest.create_namespaced_secret(self._api_client, self.namespace, body, timeout=self._timeout)
                else:
                    rest.replace_namespaced_secret(self._api_client, self.secret_name, self.namespace, body,
                                                   timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status == 409:
                    return False
                raise api_error(error, operation="create" if create else "update", kind="secret",
                                name=self.secret_name, namespace=self.namespace) from None
            return True

        return await asyncio.to_thread(call)

    def _log_transition(self, old: TlsState | None, new: TlsState) -> None:
        if old is None:
            logger.info("issued a CA and a serving certificate for %s into %s", ", ".join(self.names), self.source)
            return
        if new.next_ca is not None and old.next_ca is None:
            logger.info("published a new CA in the bundle (%s); it signs after %s", self.source,
                        self.policy.ca_publish_delay)
        if new.ca != old.ca:
            logger.info("the new CA signs from now on (%s)", self.source)
        if new.serving != old.serving:
            logger.info("renewed the serving certificate (%s), valid until %s", self.source,
                        new.serving.certificate.not_valid_after_utc.isoformat())

    def _write_files(self, state: TlsState) -> ServingFiles:
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise CertificateError(f"cannot create the directory: {error.strerror or error}",
                                   source=str(self.work_dir)) from None
        files = ServingFiles(
            cert_file=self.work_dir / "tls.crt",
            key_file=self.work_dir / "tls.key",
            ca_file=self.work_dir / "ca.crt",
            ca_bundle=state.ca_bundle,
            not_after=state.serving.certificate.not_valid_after_utc,
        )
        # Key first: a reader that sees the new certificate then also finds its key.
        _write_atomically(files.key_file, state.serving.key_pem, mode=0o600)
        _write_atomically(files.cert_file, state.serving.cert_pem, mode=0o644)
        _write_atomically(files.ca_file, state.ca_bundle, mode=0o644)
        return files


def _write_atomically(path: Path, content: bytes, *, mode: int) -> None:
    # Same directory, then rename: a reader sees the old file or the new one, never half of one.
    try:
        if path.exists() and path.read_bytes() == content:
            return
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise CertificateError(f"cannot write: {error.strerror or error}", source=str(path)) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CertificateError(f"cannot write: {error.strerror or error}", source=str(path)) from None
