"""Container image reference normalization.

Rules must not be evadable by spelling the same image differently:
``busybox``, ``docker.io/library/busybox:1.36``, ``index.docker.io/busybox``
and ``busybox@sha256:...`` all name the repository ``library/busybox`` on
Docker Hub. ``normalize_image`` splits a reference the way the container
runtime does (github.com/distribution/reference: ``ParseNormalizedNamed``)
into registry, repository, tag and digest.

Grammar (distribution/reference, reference.go)::

    reference    := name [ ":" tag ] [ "@" digest ]
    name         := [domain '/'] remote-name
    domain       := host [':' port-number]
    host         := domain-name | IPv4address | '[' IPv6address ']'
    remote-name  := path-component ['/' path-component]*
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*
    separator    := [_.] | '__' | [-]+
    tag          := [\\w][\\w.-]{0,127}
    digest       := algorithm ":" hex
    algorithm    := [A-Za-z][A-Za-z0-9]* ([-_+.] [A-Za-z][A-Za-z0-9]*)*
    hex          := [0-9a-fA-F]{32,}

Docker Hub rules (normalize.go): the first path element is a registry only
when it contains ``.`` or ``:`` or is ``localhost``; otherwise the registry is
``docker.io`` and a single-element repository gets the ``library/`` prefix.
``index.docker.io`` and ``registry-1.docker.io`` are the same registry as
``docker.io``. The tag defaults to ``latest`` only when there is no digest.

``short_name`` is the last path component of the repository (``busybox`` for
``localhost:5000/busybox``, ``harbor.corp/dockerhub/busybox`` and
``quay.io/prometheus/busybox`` alike): well-known images are mirrored under
any registry and project path, so a rule about busybox matches on it.

``normalize_image`` never raises: a reference that does not follow the
grammar keeps the raw string as its repository (registry, tag and digest
None), so a rule can still match it literally.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DOCKER_HUB = "docker.io"
# Names Docker Hub is reached by; all normalize to DOCKER_HUB.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
OFFICIAL_IMAGES_NAMESPACE = "library"
# distribution/reference NameTotalLengthMax
_NAME_MAX_LENGTH = 255

# Compiled once: normalize_image runs for every container of every document.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMOTE_NAME = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
# ParseNormalizedNamed refuses a bare 64-hex name: it is an image ID, not a name.
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class ImageReference:
    """One container image reference, split and normalized.

    ``reference`` is the string as written in the Pod spec; the other fields
    are normalized (registry lower-case, Docker Hub aliases folded into
    ``docker.io``, ``library/`` added for official images). ``tag`` is None
    when the reference pins only a digest; every field but ``reference`` and
    ``repository`` is None for a reference that does not parse.
    """

    reference: str
    registry: str | None
    repository: str
    tag: str | None
    digest: str | None

    @property
    def parsed(self) -> bool:
        """False when the reference did not follow the grammar."""
        return self.registry is not None

    @property
    def name(self) -> str:
        """``registry/repository`` (the fully qualified name), or the raw reference."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def short_name(self) -> str:
        """The last path component of the repository: ``busybox`` for ``quay.io/prometheus/busybox``.

        What rules about well-known images match on, whatever registry, mirror
        or project path serves them. For a reference that does not parse, the
        last ``/`` component of the raw string without tag or digest.
        """
        if self.registry is not None:
            return self.repository.rpartition("/")[2]
        last = self.repository.partition("@")[0].rpartition("/")[2]
        return last.partition(":")[0]

    @property
    def canonical(self) -> str:
        """The fully qualified reference: ``docker.io/library/busybox:latest``."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _unparsed(reference: str) -> ImageReference:
    return ImageReference(reference=reference, registry=None, repository=reference, tag=None, digest=None)


def _split_registry(name: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: (registry, remote name), registry normalized."""
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        registry, remote = DOCKER_HUB, name
    else:
        registry, remote = first.lower(), rest
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in remote:
            remote = f"{OFFICIAL_IMAGES_NAMESPACE}/{remote}"
    return registry, remote


@lru_cache(maxsize=4096)
def normalize_image(reference: str) -> ImageReference:
    """Split ``reference`` into registry, repository, tag and digest (never raises).

    >>> normalize_image("busybox").canonical
    'docker.io/library/busybox:latest'
    >>> normalize_image("localhost:5000/team/app@sha256:" + "a" * 64).tag is None
    True
    """
    if not isinstance(reference, str):  # defensive: callers pass Pod spec values
        return _unparsed(str(reference))

    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return _unparsed(reference)

    # The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return _unparsed(reference)

    if not name or len(name) > _NAME_MAX_LENGTH or _IMAGE_ID.fullmatch(name):
        return _unparsed(reference)
    registry, repository = _split_registry(name)
    if not _DOMAIN.fullmatch(registry) or not _REMOTE_NAME.fullmatch(repository):
        return _unparsed(reference)

    if tag is None and not at:
        tag = DEFAULT_TAG
    return ImageReference(
        reference=reference,
        registry=registry,
        repository=repository,
        tag=tag,
        digest=digest if at else None,
    )
