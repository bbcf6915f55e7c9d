"""Generates the Python stubs (client/genmesh/**/v1/*_pb2*.py), Envoy's descriptor set and the OpenAPI
document (servers/web/openapi.json) from protos/.

One command: ``python protos/generate.py`` (``make protos``). ``--out DIR`` writes into another
folder instead; the staleness test uses it to compare against what is committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from google.api import annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
GOOGLE_API_ROOT = Path(annotations_pb2.__file__).resolve().parents[2]  # holds google/api/*.proto
GRPC_TOOLS_INCLUDE = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
DESCRIPTOR = Path("deploy/envoy/genmesh.pb")
OPENAPI = Path("servers/web/openapi.json")  # served by the web front door at /openapi.json
BUF_DEPS = ROOT / ".build" / "proto-deps" / "google" / "api"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("genmesh/*/v1/*.proto"))


def run_protoc(*args: str) -> None:
    argv = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{GOOGLE_API_ROOT}", f"-I{GRPC_TOOLS_INCLUDE}", *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def generate(out: Path) -> None:
    files = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    python_out = out / "client"
    python_out.mkdir(parents=True, exist_ok=True)
    run_protoc(f"--python_out={python_out}", f"--pyi_out={python_out}", f"--grpc_python_out={python_out}", *files)
    # Packages need __init__.py to be found by setuptools; protoc does not write them.
    for package in {Path(name).parent for name in files}:
        for part in (package, *package.parents):
            if part != Path("."):
                (python_out / part / "__init__.py").touch()
    descriptor = out / DESCRIPTOR
    descriptor.parent.mkdir(parents=True, exist_ok=True)
    # google.rpc.BadRequest rides in error details; the transcoder must know it to render REST error bodies.
    run_protoc("--include_imports", f"--descriptor_set_out={descriptor}", *files, "google/rpc/error_details.proto")
    write_openapi(out / OPENAPI, files)


def write_openapi(path: Path, files: list[str]) -> None:
    """The REST contract, from the same protos plus their comments (source info), and the web front
    door's routes."""
    # This script's folder comes first on sys.path and holds protos/genmesh/: it would shadow the
    # client's genmesh package (grpc_tools even imports *_pb2 modules from .proto files there).
    sys.path[:] = [str(ROOT), *(entry for entry in sys.path if Path(entry or ".").resolve() != PROTO_ROOT)]
    from servers.mesh.openapi import build_openapi

    with tempfile.TemporaryDirectory() as folder:
        described = Path(folder) / "described.pb"
        run_protoc(
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={described}",
            *files,
            "google/rpc/error_details.proto",
            "google/rpc/status.proto",  # REST error bodies
        )
        data = described.read_bytes()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    document = build_openapi(data, version)
    # The web front door's routes (OpenAI's, GET /v1/jobs) from its route table and request specs.
    from servers.web.app import OPERATIONS, ROUTES
    from servers.web.contract import merge_into, web_paths

    merge_into(document, web_paths(ROUTES, OPERATIONS, served=lambda path: path.startswith("/v1/")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n")


def copy_buf_deps() -> None:
    """buf cannot reach its registry here; give it google/api from googleapis-common-protos."""
    BUF_DEPS.mkdir(parents=True, exist_ok=True)
    for name in ("annotations.proto", "http.proto", "httpbody.proto"):
        shutil.copyfile(GOOGLE_API_ROOT / "google" / "api" / name, BUF_DEPS / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write client/ and deploy/ under")
    parser.add_argument("--buf-deps-only", action="store_true", help="only prepare google/api for `buf lint`")
    args = parser.parse_args()
    if args.buf_deps_only:
        copy_buf_deps()
        return
    for stale in (args.out / "client" / "genmesh").glob("*/v1/*_pb2*.py*"):
        stale.unlink()
    generate(args.out)
    copy_buf_deps()
    print(f"generated {len(proto_files())} protos into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
