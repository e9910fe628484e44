"""Image reference normalization: one image, however it is spelled, is one repository."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.images import ImageReference, normalize_image

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "reference",
    [
        "busybox",
        "busybox:1.36",
        "docker.io/library/busybox:1.36",
        "docker.io/busybox",
        "index.docker.io/busybox:latest",
        "registry-1.docker.io/library/busybox",
        "DOCKER.IO/library/busybox",
        f"busybox@{DIGEST}",
        f"docker.io/library/busybox:1.36@{DIGEST}",
    ],
)
def test_docker_hub_spellings_of_busybox_are_one_repository(reference: str) -> None:
    image = normalize_image(reference)
    assert (image.registry, image.repository) == ("docker.io", "library/busybox")
    assert image.reference == reference


def test_default_tag_is_latest_only_without_a_digest() -> None:
    assert normalize_image("busybox").tag == "latest"
    pinned = normalize_image(f"busybox@{DIGEST}")
    assert (pinned.tag, pinned.digest) == (None, DIGEST)
    both = normalize_image(f"busybox:1.36@{DIGEST}")
    assert (both.tag, both.digest) == ("1.36", DIGEST)


@pytest.mark.parametrize(
    ("reference", "registry", "repository", "tag"),
    [
        ("nicolaka/netshoot:v0.13", "docker.io", "nicolaka/netshoot", "v0.13"),
        ("ghcr.io/nicolaka/netshoot:v0.13", "ghcr.io", "nicolaka/netshoot", "v0.13"),
        ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1"),
        ("localhost/app", "localhost", "app", "latest"),
        ("registry.example.com:8443/a/b/c", "registry.example.com:8443", "a/b/c", "latest"),
        ("[2001:db8::1]:5000/tools/curl:8.5.0", "[2001:db8::1]:5000", "tools/curl", "8.5.0"),
        ("quay.io/prometheus/busybox", "quay.io", "prometheus/busybox", "latest"),
        ("mirror.gcr.io/library/alpine:3.20", "mirror.gcr.io", "library/alpine", "3.20"),
        # The first element is a registry only with a '.' or ':' or as localhost.
        ("team/app:1.0", "docker.io", "team/app", "1.0"),
        ("my-registry.local/app", "my-registry.local", "app", "latest"),
        # A port is not a tag; a tag after a port is.
        ("registry:5000/app", "registry:5000", "app", "latest"),
        ("Registry.Example.com/app", "registry.example.com", "app", "latest"),
        ("a__b/c-d.e/f---g:Tag_1.x", "docker.io", "a__b/c-d.e/f---g", "Tag_1.x"),
    ],
)
def test_registry_repository_and_tag(reference: str, registry: str, repository: str, tag: str) -> None:
    image = normalize_image(reference)
    assert (image.registry, image.repository, image.tag) == (registry, repository, tag)


def test_non_docker_hub_single_name_gets_no_library_prefix() -> None:
    assert normalize_image("localhost:5000/busybox").repository == "busybox"


def test_canonical_and_name() -> None:
    image = normalize_image("busybox")
    assert image.canonical == "docker.io/library/busybox:latest"
    assert image.name == "docker.io/library/busybox"
    assert normalize_image(f"busybox@{DIGEST}").canonical == f"docker.io/library/busybox@{DIGEST}"


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "Busybox",  # repositories are lower-case
        "busybox:1.36:extra",
        "busybox@sha256:abc",  # digest too short
        "busybox@md5",
        "busy box",
        " busybox",
        "busybox:",
        "-busybox",
        "busybox/",
        "a//b",
        "busybox:" + "x" * 129,  # tag longer than 128
        "0123456789abcdef" * 4,  # an image ID, not a name
        "r.io/" + "a" * 260,
    ],
)
def test_unparseable_reference_keeps_raw_string_as_repository(reference: str) -> None:
    image = normalize_image(reference)
    assert image == ImageReference(reference=reference, registry=None, repository=reference, tag=None, digest=None)
    assert not image.parsed
    assert image.canonical == reference


def test_non_string_input_does_not_raise() -> None:
    assert normalize_image(None).repository == "None"  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_never_raises(reference: str) -> None:
    image = normalize_image(reference)
    assert image.reference == reference
    assert image.parsed or image.repository == reference


_component = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,5})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    registry=st.sampled_from(["", "docker.io/", "index.docker.io/", "ghcr.io/", "localhost:5000/", "r.example:443/"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)),
    digest=st.one_of(st.none(), st.just(DIGEST)),
)
def test_canonical_form_normalizes_to_itself(registry: str, path: list[str], tag: str | None, digest: str | None) -> None:
    reference = registry + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    image = normalize_image(reference)
    assert image.parsed, reference
    again = normalize_image(image.canonical)
    assert (again.registry, again.repository, again.tag, again.digest) == (
        image.registry,
        image.repository,
        image.tag,
        image.digest,
    )


@pytest.mark.parametrize(
    ("reference", "short_name"),
    [
        ("busybox", "busybox"),
        ("docker.io/library/busybox:1.36", "busybox"),
        ("localhost:5000/busybox", "busybox"),
        ("harbor.corp/dockerhub/busybox", "busybox"),
        ("quay.io/prometheus/busybox:latest", "busybox"),
        ("registry.k8s.io/e2e-test-images/busybox:1.36.1-1", "busybox"),
        ("ghcr.io/x/netshoot", "netshoot"),
        (f"nicolaka/netshoot@{DIGEST}", "netshoot"),
        ("mycorp/busybox-exporter:1.0", "busybox-exporter"),  # another image, not busybox
        # Not a valid reference: the raw string's last component, without tag or digest.
        ("Registry.example/Team/BusyBox:1.36", "BusyBox"),
    ],
)
def test_short_name_is_the_last_component_of_the_repository(reference: str, short_name: str) -> None:
    assert normalize_image(reference).short_name == short_name
