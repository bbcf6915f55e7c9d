"""No deploy file holds a real-looking secret; templates hold only unusable placeholders."""

from __future__ import annotations

import re
from typing import Any

import pytest

from servers.mesh.envoy import load_api_keys
from tests.unit.deploy.helpers import (
    COMPOSE,
    DOCKER,
    DOCKERFILES,
    KUBE,
    SECRET_NAME,
    deploy_files,
    dockerfile_instructions,
    load_docs,
    rel,
    shannon_entropy,
)


def test_secret_templates_hold_only_unusable_placeholders(yaml: Any) -> None:
    secrets = load_docs(yaml, KUBE / "secrets.example.yaml")
    assert {doc["metadata"]["name"] for doc in secrets} == {"genmesh-api-keys", "genmesh-minio"}
    for doc in secrets:
        assert "data" not in doc
        for key, value in doc["stringData"].items():
            assert "REPLACE_ME" in value, f"{key}: a template holds placeholders only"
    # The API key placeholder cannot become a working key: the gateway's renderer rejects it.
    api_keys = next(doc for doc in secrets if doc["metadata"]["name"] == "genmesh-api-keys")
    with pytest.raises(ValueError):
        load_api_keys(api_keys["stringData"])
    # secrets.example.yaml is not part of any kustomization; the real one is git-ignored.
    for kustomization in KUBE.rglob("kustomization.yaml"):
        assert "secrets" not in kustomization.read_text().split("resources:")[-1]
    assert "secrets.yaml" in (KUBE / ".gitignore").read_text().split()
    # The MinIO container refuses the placeholder password.
    assert "*REPLACE_ME*" in (KUBE / "base" / "minio.yaml").read_text()


# ------------------------------------------------------------------------------------------------
# No secrets, no default keys


def test_no_file_holds_a_real_looking_secret() -> None:
    forbidden = {
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        "genmesh key": re.compile(r"\bgm_[A-Za-z0-9_-]{16,}"),
        "MinIO default credentials": re.compile(r"minioadmin", re.IGNORECASE),
        "credentials in a URL": re.compile(r"[a-z]+://[^/\s:@]+:[^/\s@]+@"),
    }
    for path in deploy_files():
        text = path.read_text(encoding="utf-8")
        for what, pattern in forbidden.items():
            assert not pattern.search(text), f"{rel(path)} contains what looks like {what}"
        for token in re.findall(r"[A-Za-z0-9+/=_-]{24,}", text):
            # Long random-looking strings: letters and digits mixed, high entropy.
            if re.search(r"\d", token) and re.search(r"[A-Za-z]", token) and shannon_entropy(token) > 4.2:
                pytest.fail(f"{rel(path)}: {token[:6]}... looks like a key or token")


def test_env_example_leaves_every_secret_empty() -> None:
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if SECRET_NAME.search(name):
            assert value.strip() == "", f".env.example must not hold a value for {name}"
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()


def test_dockerfiles_bake_in_no_secret() -> None:
    for name in DOCKERFILES:
        for instruction, args in dockerfile_instructions(DOCKER / name):
            if instruction in ("ENV", "ARG"):
                for assignment in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                    assert not SECRET_NAME.search(assignment), (
                        f"{name}: {instruction} {assignment} would bake a secret into the image"
                    )
            assert "GENMESH_API_KEYS=" not in args, f"{name}: never a key in the image"
