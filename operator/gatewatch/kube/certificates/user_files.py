"""User-supplied TLS (``certificates.mode: files``): certificate, key and CA files
that cert-manager (or anyone) mounts, polled for changes.
"""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from cryptography import x509

from gatewatch.errors import CertificateError
from gatewatch.kube.certificates.material import check_key_pair
from gatewatch.kube.certificates.serving import ChangeCallback, ServingFiles, announce_change


class FileCertificateSource:
    """Certificate, key and CA files the user provides, polled for changes.

    A change that does not load (e.g. a key and certificate from different
    rotations, caught mid-update) is logged and the old material kept until
    the next poll.
    """

    def __init__(
        self,
        *,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.cert_file, self.key_file, self.ca_file = Path(cert_file), Path(key_file), Path(ca_file)
        self.on_change = on_change
        self._digest: str | None = None

    async def ensure(self) -> ServingFiles:
        """Reads and checks the files; raises CertificateError naming the file that is wrong."""
        files, digest = await asyncio.to_thread(self._load)
        previous, self._digest = self._digest, digest
        if previous is not None and previous != digest:
            await announce_change(self.on_change, files, what=f"certificate files {self.cert_file}")
        return files

    def _load(self) -> tuple[ServingFiles, str]:
        contents = {path: _read(path) for path in (self.cert_file, self.key_file, self.ca_file)}
        cert_pem, key_pem, bundle = contents[self.cert_file], contents[self.key_file], contents[self.ca_file]
        check_key_pair(cert_pem, key_pem, source=f"{self.cert_file} + {self.key_file}")
        try:
            x509.load_pem_x509_certificates(bundle)
        except ValueError as error:
            raise CertificateError(f"not a PEM CA bundle: {error}", source=str(self.ca_file)) from None
        digest = hashlib.sha256(cert_pem + key_pem + bundle).hexdigest()
        not_after = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
        files = ServingFiles(cert_file=self.cert_file, key_file=self.key_file, ca_file=self.ca_file,
                             ca_bundle=bundle, not_after=not_after)
        return files, digest


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertificateError(f"cannot read: {error.strerror or error}", source=str(path)) from None
