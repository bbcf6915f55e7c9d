"""Model pull (servers/models): references, detection, and the staging / verify / rename logic
against a real HTTP server on loopback (tests/support/model_server.py) with Range, ETag, If-Range,
which also fakes the hub APIs (HF_ENDPOINT) for hf: files and diffusers folders."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genmesh.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from servers.models.engine import Folders, ModelPuller, PullRequest, readable_name
from servers.models.kinds import Format, Kind, sniff
from servers.models.refs import AllowedHosts, Resolver, parse_reference
from servers.runtime import egress
from tests.support.certificates import make_certificates
from tests.support.model_server import MOTION_KEYS, SD15_KEYS, FileServer, checkpoint_bytes, folder_files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Reporter:
    """Records phases; cancels after ``cancel_after`` cancellation checks in the download phase, or
    once ``cancel`` is set."""

    def __init__(self, cancel_after: int | None = None, cancel: threading.Event | None = None) -> None:
        self.phases: list[str] = []
        self.ticks = []
        self.cancel_after = cancel_after
        self.cancel = cancel
        self.checks = 0

    def check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancel requested")
        if self.cancel_after is not None and self.phases[-1:] == ["download"]:
            self.checks += 1
            if self.checks > self.cancel_after:
                raise Cancelled("cancel requested")

    def report(self, phase: str, file_name: str, tick=None) -> None:
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)
        if tick is not None:
            self.ticks.append(tick)


GGUF = b"GGUF" + os.urandom(3_000_000)


@pytest.fixture
def server():
    served = FileServer(files={"/tiny.gguf": GGUF}).start()
    yield served
    served.stop()


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path / "text", tmp_path / "image", tmp_path / "motion", tmp_path / "staging")


def puller(folders: Folders, server: FileServer, **options) -> ModelPuller:
    resolver = Resolver(AllowedHosts.parse("http://127.0.0.1"), civitai_url=server.url(""), hf_endpoint=server.url(""),
                        dialer=options.pop("dialer", egress.DIALER))  # fmt: skip
    return ModelPuller(folders, resolver, stall_seconds=options.pop("stall_seconds", 5.0), **options)


def listed(folders: Folders) -> list[str]:
    return sorted(path.name for folder in (folders.text, folders.image, folders.motion) if folder.is_dir()
                  for path in folder.iterdir())  # fmt: skip


# -- references --------------------------------------------------------------------------------
def test_references_parse_and_bad_ones_name_the_field() -> None:
    digest = "ab" * 32
    url = parse_reference(f"https://example.com/m/tiny.gguf#sha256={digest.upper()}")
    assert (url.scheme, url.url, url.sha256) == ("url", "https://example.com/m/tiny.gguf", digest)
    hf = parse_reference("hf:org/repo/sub/model.safetensors@v1.0")
    assert (hf.repo, hf.path, hf.revision) == ("org/repo", "sub/model.safetensors", "v1.0")
    assert parse_reference("hf:org/repo/model.gguf").revision == "main"
    assert parse_reference("civitai:12345").version_id == 12345
    folder = parse_reference("hf:org/repo@v2")  # a repo (or a folder in one): a diffusers folder
    assert (folder.repo, folder.path, folder.revision) == ("org/repo", "", "v2")
    for bad in ("", "ftp://x/y.gguf", "https://x/", "https://x/y.gguf#md5=1", "hf:model.gguf", "civitai:x",
                "hf:org/repo/../x.gguf", "hf:org//x.gguf"):  # fmt: skip
        with pytest.raises(InvalidArgument) as refused:
            parse_reference(bad)
        assert refused.value.field == "ref" and refused.value.message.startswith("ref: ")


def test_source_file_names_become_readable_model_names() -> None:
    assert readable_name("Juggernaut XL v9.safetensors") == "Juggernaut_XL_v9"
    assert readable_name("qwen2.5-0.5b-instruct-q4_k_m.gguf") == "qwen2.5-0.5b-instruct-q4_k_m"
    assert readable_name(".hidden.gguf") == "hidden" and readable_name("???.gguf") == "model"


def test_allowed_hosts_take_subdomains_and_schemes() -> None:
    allowed = AllowedHosts.parse("huggingface.co, http://127.0.0.1, http://[::1]")
    assert allowed.allows("https://cdn-lfs.huggingface.co/x") and allowed.allows("http://127.0.0.1:9/x")
    assert allowed.allows("http://[::1]:8080/x") and not allowed.allows("https://[::1]/x")
    assert not allowed.allows("http://huggingface.co/x") and not allowed.allows("https://evilhuggingface.co/x")
    with pytest.raises(InvalidArgument, match="GENMESH_PULL_ALLOWED_HOSTS"):
        allowed.check("https://10.0.0.1/x.gguf")
    with pytest.raises(ValueError, match="bad entry"):
        AllowedHosts.parse("ftp://x")


# -- detection ---------------------------------------------------------------------------------
def test_sniff_tells_formats_and_refuses_html_and_pickles() -> None:
    assert sniff(GGUF[:16], allow_pickle=False, file_name="f") is Format.GGUF
    assert sniff(checkpoint_bytes(SD15_KEYS)[:16], allow_pickle=False, file_name="f") is Format.SAFETENSORS
    assert sniff(b"PK\x03\x04" + bytes(12), allow_pickle=True, file_name="f") is Format.PICKLE
    with pytest.raises(InvalidArgument, match=r"pickled checkpoint.*allow_pickle"):
        sniff(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19", allow_pickle=False, file_name="f")
    with pytest.raises(InvalidArgument, match="HTML page"):
        sniff(b"  <!DOCTYPE html><html>", allow_pickle=False, file_name="f")


# -- pulls against the real HTTP server -----------------------------------------------------------
def test_clean_pulls_land_by_kind_and_keep_readable_names(server, folders) -> None:
    sd15, motion = checkpoint_bytes(SD15_KEYS), checkpoint_bytes(MOTION_KEYS)
    server.files.update({"/dreamy.safetensors": sd15, "/mm_sd_v15_v2.safetensors": motion})
    pulls = puller(folders, server)
    text = pulls.pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), reporter := Reporter())
    assert (text.kind, text.path, text.verified, text.sha256) == (
        Kind.TEXT,
        folders.text / "tiny.gguf",
        True,
        sha(GGUF),
    )
    assert reporter.phases == ["resolve", "download", "verify", "install"]
    assert reporter.ticks[-1].bytes_done == reporter.ticks[-1].bytes_total == len(GGUF)
    image = pulls.pull(PullRequest(server.url(f"/dreamy.safetensors#sha256={sha(sd15)}")), Reporter())
    assert (image.kind, image.family, image.path.name) == (Kind.IMAGE, "sd15", "dreamy.safetensors")
    adapter = pulls.pull(PullRequest(server.url(f"/mm_sd_v15_v2.safetensors#sha256={sha(motion)}")), Reporter())
    assert (adapter.kind, adapter.family, adapter.path.parent) == (Kind.MOTION, "v2", folders.motion)
    assert list(folders.staging.iterdir()) == []
    again = pulls.pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter())
    assert again.already_present and len(server.log) == 3  # nothing fetched again


def test_a_dropped_connection_resumes_with_range_and_if_range(server, folders) -> None:
    server.drop_after["/tiny.gguf"] = 1_000_000
    pulled = puller(folders, server).pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter())
    assert pulled.sha256 == sha(GGUF)
    (resumed,) = server.ranged()
    assert (resumed.range, resumed.if_range, resumed.status) == ("bytes=1000000-", FileServer.etag(GGUF), 206)


def test_a_stalled_connection_is_retried(server, folders) -> None:
    server.stall_after["/tiny.gguf"] = 500_000
    reporter = Reporter()
    pulled = puller(folders, server, stall_seconds=0.5).pull(
        PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), reporter
    )
    assert pulled.sha256 == sha(GGUF) and reporter.ticks[-1].retries == 1
    assert server.ranged()[0].range == "bytes=500000-"


def test_a_cancel_installs_nothing_and_a_restarted_server_resumes_the_partial(server, folders) -> None:
    ref = server.url(f"/tiny.gguf#sha256={sha(GGUF)}")
    with pytest.raises(Cancelled):
        puller(folders, server).pull(PullRequest(ref), Reporter(cancel_after=2))
    assert listed(folders) == []
    (partial,) = folders.staging.glob("*.part")
    kept = partial.stat().st_size
    assert 0 < kept < len(GGUF)
    pulled = puller(folders, server).pull(PullRequest(ref), Reporter())  # a new process: only the disk remains
    assert pulled.resumed_bytes == kept and server.ranged()[0].range == f"bytes={kept}-"
    assert listed(folders) == ["tiny.gguf"]


def test_a_cancel_ends_a_stalled_download_at_once(server, folders) -> None:
    """A cancel does not wait for the stall timeout: the connection is cut."""
    server.stall_after["/tiny.gguf"] = 500_000
    cancel = threading.Event()
    reporter = Reporter(cancel=cancel)
    pulls = puller(folders, server, stall_seconds=60)
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        pulls.pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), reporter)
    assert time.monotonic() - started < 5 and listed(folders) == []


def test_a_changed_source_file_starts_over(server, folders) -> None:
    ref = server.url("/tiny.gguf")
    with pytest.raises(Cancelled):
        puller(folders, server).pull(PullRequest(ref, no_verify=True), Reporter(cancel_after=2))
    server.files["/tiny.gguf"] = changed = b"GGUF" + os.urandom(2_000_000)
    pulled = puller(folders, server).pull(PullRequest(ref, no_verify=True), Reporter())
    assert server.ranged()[0].status == 200 and pulled.sha256 == sha(changed) and not pulled.verified


def test_a_flipped_byte_is_refused_with_both_digests_and_nothing_is_left(server, folders) -> None:
    flipped = bytearray(GGUF)
    flipped[len(flipped) // 2] ^= 0xFF
    server.files["/tiny.gguf"] = bytes(flipped)
    with pytest.raises(InvalidArgument) as refused:
        puller(folders, server).pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter())
    assert sha(GGUF) in refused.value.message and sha(bytes(flipped)) in refused.value.message
    assert listed(folders) == [] and list(folders.staging.iterdir()) == []


def test_html_pages_pickles_unknown_digests_and_other_hosts_are_refused(server, folders, tmp_path) -> None:
    import torch

    server.files["/model.safetensors"] = b"<!doctype html><html><body>Please log in</body></html>"
    pickle_path = tmp_path / "mm.ckpt"
    torch.save({key: torch.zeros(shape) for key, shape in MOTION_KEYS.items()}, pickle_path)
    server.files["/mm.ckpt"] = pickled = pickle_path.read_bytes()
    pulls = puller(folders, server)
    with pytest.raises(InvalidArgument, match="HTML page"):
        pulls.pull(PullRequest(server.url("/model.safetensors"), no_verify=True), Reporter())
    with pytest.raises(InvalidArgument, match="pickled checkpoint"):
        pulls.pull(PullRequest(server.url(f"/mm.ckpt#sha256={sha(pickled)}")), Reporter())
    assert listed(folders) == [] and list(folders.staging.iterdir()) == []
    with pytest.raises(InvalidArgument, match=r"no sha256 is known.*no_verify"):
        pulls.pull(PullRequest(server.url("/tiny.gguf")), Reporter())
    with pytest.raises(InvalidArgument, match="not a source this server may fetch from"):
        pulls.pull(PullRequest(f"http://localhost:{server.port}/tiny.gguf", no_verify=True), Reporter())
    allowed = pulls.pull(PullRequest(server.url(f"/mm.ckpt#sha256={sha(pickled)}"), allow_pickle=True), Reporter())
    assert (allowed.kind, allowed.path.name) == (Kind.MOTION, "mm.ckpt")


def test_hub_references_take_the_hubs_digests(server, folders, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # tests run offline otherwise
    sd15 = checkpoint_bytes(SD15_KEYS)
    server.hf_repos["org/tiny"] = {"unet/tiny-sd.safetensors": sd15}
    server.files["/files/dl/42"] = GGUF
    server.civitai_versions[42] = {
        "files": [{"name": "civ.gguf", "primary": True, "downloadUrl": server.url("/files/dl/42"),
                   "hashes": {"SHA256": sha(GGUF).upper()}}]
    }  # fmt: skip
    pulls = puller(folders, server)
    hub = pulls.pull(PullRequest("hf:org/tiny/unet/tiny-sd.safetensors"), Reporter())
    assert (hub.digest_source, hub.sha256, hub.path.name) == ("huggingface", sha(sd15), "tiny-sd.safetensors")
    civitai = pulls.pull(PullRequest("civitai:42"), Reporter())
    assert (civitai.digest_source, civitai.path.name, civitai.kind) == ("civitai", "civ.gguf", Kind.TEXT)
    with pytest.raises(NotFound):
        pulls.pull(PullRequest("hf:org/tiny/missing.safetensors"), Reporter())
    with pytest.raises(NotFound):
        pulls.pull(PullRequest("civitai:7"), Reporter())


def test_delete_and_prune(server, folders) -> None:
    pulls = puller(folders, server)
    pulls.pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter())
    with pytest.raises(FailedPrecondition, match=r"different model tiny.gguf"):
        server.files["/other/tiny.gguf"] = other = b"GGUF" + bytes(100)
        pulls.pull(PullRequest(server.url(f"/other/tiny.gguf#sha256={sha(other)}")), Reporter())
    deleted = pulls.delete("tiny")
    assert (deleted.kind, deleted.size_bytes) == (Kind.TEXT, len(GGUF)) and listed(folders) == []
    with pytest.raises(NotFound):
        pulls.delete("tiny")
    with pytest.raises(InvalidArgument):
        pulls.delete("../etc/passwd")
    with pytest.raises(Cancelled):
        pulls.pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter(cancel_after=2))
    removed, freed = pulls.prune()
    assert removed == 1 and freed > 0 and list(folders.staging.iterdir()) == []


class StoreStandIn:
    """In place of ``storage.pulled.PulledModels`` (the real one runs against S3 in the integration test)."""

    def __init__(self, stored: dict[str, list], data: dict[str, bytes]) -> None:
        self.stored, self.data, self.fetched = stored, data, []

    def entries(self, kind: str) -> list:
        return self.stored.get(kind, [])

    def fetch(self, model, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / model.file_name).write_bytes(self.data[model.sha256])
        self.fetched.append(model.name)
        return folder / model.file_name


def test_catalogs_list_stored_models_and_fetch_them_on_first_use(tmp_path) -> None:
    from servers.diffusion.catalog import MOTION_ADAPTERS
    from servers.diffusion.catalog import ModelCatalog as DiffusionCatalog
    from servers.text.models import ModelCatalog as TextCatalog
    from storage.pulled import StoredModel

    sd15, motion = checkpoint_bytes(SD15_KEYS), checkpoint_bytes(MOTION_KEYS)
    stored = {
        "text": [StoredModel("tiny", "text", "tiny.gguf", sha(GGUF), len(GGUF))],
        "image": [StoredModel("dreamy", "image", "dreamy.safetensors", sha(sd15), len(sd15), "sd15")],
        "motion": [StoredModel("mm", "motion", "mm.safetensors", sha(motion), len(motion), "v2")],
    }
    store = StoreStandIn(stored, {sha(GGUF): GGUF, sha(sd15): sd15, sha(motion): motion})
    text = TextCatalog(tmp_path / "text", pulled=store)
    spec = text.resolve("tiny")
    assert (spec.location, spec.source, spec.size_bytes) == ("store", f"store:sha256:{sha(GGUF)}", len(GGUF))
    assert text.ensure_file(spec).read_bytes() == GGUF and text.resolve("tiny").location == "local"
    images = DiffusionCatalog(tmp_path / "image", pulled=store)
    entry = images.resolve("dreamy")
    assert (entry.location, entry.source.family) == ("store", "sd15")  # no file needed before loading
    assert images.local(entry).location == "local" and [e.name for e in images.entries()][:1] == ["dreamy"]
    adapters = DiffusionCatalog(tmp_path / "motion", kind=MOTION_ADAPTERS, pulled=store)
    assert adapters.local(adapters.resolve("mm")).location == "local"
    assert store.fetched == ["tiny", "dreamy", "mm"]


def test_too_little_disk_space_is_refused_before_downloading(server, folders, monkeypatch) -> None:
    from collections import namedtuple

    from genmesh.errors import ResourceExhausted
    from servers.models import download

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ResourceExhausted) as refused:
        puller(folders, server).pull(PullRequest(server.url(f"/tiny.gguf#sha256={sha(GGUF)}")), Reporter())
    assert f"{len(GGUF)} bytes needed" in refused.value.message and "1000 free" in refused.value.message
    assert listed(folders) == []


class CancelOnceBytesArrive(Reporter):
    """Cancels at the first check after the pull's progress passed ``after`` bytes."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def check_cancelled(self) -> None:
        if self.ticks and self.ticks[-1].bytes_done > self.after:
            raise Cancelled("cancel requested")


# -- hf: diffusers folders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A hub repo holding the built-in tiny pipeline as a diffusers folder, its motion adapter as a
    folder in it, and what real SD repos hold besides (a single file at the root, an fp16 variant, a
    safety checker, Flax weights, a README): only the pipeline's own files may be fetched."""
    from servers.compute.devices import configure_threads
    from servers.diffusion.builtin import tiny_motion_adapter_folder, tiny_sd15_folder

    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    cache = tmp_path_factory.mktemp("diffusion-cache")
    pipeline = folder_files(tiny_sd15_folder(cache))
    extra = {
        "README.md": b"# tiny",
        "v1-5-pruned.safetensors": checkpoint_bytes(SD15_KEYS),
        "unet/diffusion_pytorch_model.fp16.safetensors": checkpoint_bytes(SD15_KEYS),
        "safety_checker/model.safetensors": checkpoint_bytes(SD15_KEYS),
        "text_encoder/flax_model.msgpack": b"flax",
    }
    return cache, {**pipeline, **folder_files(tiny_motion_adapter_folder(cache), "motion/"), **extra}


def fetched(server: FileServer) -> set[str]:
    return {entry.path.split("/resolve/main/", 1)[1] for entry in server.log if "/resolve/main/" in entry.path}


def test_hf_folders_fetch_what_loaders_read_verified_and_generate_at_once(server, folders, tiny_repo, monkeypatch):
    import huggingface_hub.constants

    from servers.diffusion.animate import VideoParams, animate
    from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
    from servers.diffusion.loading import load_model
    from servers.runtime.events import NULL_REPORTER

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # tests run offline otherwise
    cache, repo = tiny_repo
    server.hf_repos["org/tiny-sd"] = repo
    pulls = puller(folders, server)
    image = pulls.pull(PullRequest("hf:org/tiny-sd"), reporter := Reporter())
    assert (image.kind, image.family, image.path, image.verified) == (
        Kind.IMAGE,
        "sd15",
        folders.image / "tiny-sd",
        True,
    )
    components = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what its model_index.json names
    pipeline_files = {"model_index.json"} | {
        name
        for name in repo
        if name.split("/")[0] in components and not name.endswith((".fp16.safetensors", ".msgpack"))
    }
    assert fetched(server) == pipeline_files
    assert {
        path.relative_to(image.path).as_posix() for path in image.path.rglob("*") if path.is_file()
    } == pipeline_files
    assert image.size_bytes == sum(len(repo[name]) for name in pipeline_files) == reporter.ticks[-1].bytes_done
    assert (reporter.phases[0], reporter.phases[-1]) == ("resolve", "install") and "verify" in reporter.phases
    motion = pulls.pull(PullRequest("hf:org/tiny-sd/motion", name="tiny-motion"), Reporter())
    assert (motion.kind, motion.family, motion.path) == (Kind.MOTION, "v2", folders.motion / "tiny-motion")
    assert sorted(path.name for path in motion.path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    before = len(server.log)
    again = pulls.pull(PullRequest("hf:org/tiny-sd"), Reporter())
    assert again.already_present and again.sha256 == image.sha256
    assert not [entry for entry in server.log[before:] if entry.path.endswith(".safetensors")]  # only the index
    assert list(folders.staging.iterdir()) == []

    # Usable at once, as the Video server loads catalog entries: the pulled pipeline folder as the base
    # model and the pulled MotionAdapter folder (one generation exercises both).
    base = ModelCatalog(folders.image).resolve("tiny-sd").source
    adapter = ModelCatalog(folders.motion, kind=MOTION_ADAPTERS).resolve("tiny-motion").source
    video = load_model(base, cache_dir=cache, device="cpu", motion_adapter=adapter)
    clip = animate(video, VideoParams("a cat", width=64, height=64, num_frames=2, steps=2), NULL_REPORTER)
    assert len(clip.frames) == 2 and clip.frames[0].size == (64, 64)


def test_hf_folder_pulls_refuse_bad_files_and_resume_after_a_cancel(server, folders, tiny_repo, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    _, repo = tiny_repo
    motion = {name.removeprefix("motion/"): data for name, data in repo.items() if name.startswith("motion/")}
    server.hf_repos["org/mm"] = motion
    pulls = puller(folders, server)
    # A changed byte in a plain git file (no LFS sha256): its git blob id gives it away.
    server.files["/org/mm/resolve/main/config.json"] = motion["config.json"].replace(b"32", b"33", 1)
    with pytest.raises(InvalidArgument, match=r"git blob id mismatch for config.json"):
        pulls.pull(PullRequest("hf:org/mm"), Reporter())
    assert listed(folders) == []
    del server.files["/org/mm/resolve/main/config.json"]
    # Cancelled in the weights (after a dropped connection): nothing listed; the next pull fetches
    # only what is missing, resuming the weights with a Range request.
    weights = "/org/mm/resolve/main/diffusion_pytorch_model.safetensors"
    server.drop_after[weights] = 100_000
    with pytest.raises(Cancelled):
        pulls.pull(PullRequest("hf:org/mm"), CancelOnceBytesArrive(after=len(motion["config.json"])))
    assert listed(folders) == []
    (partial,) = folders.staging.glob("*.part")
    kept = partial.stat().st_size
    before = len(server.log)
    resumed = pulls.pull(PullRequest("hf:org/mm"), Reporter())
    assert resumed.kind is Kind.MOTION and resumed.resumed_bytes == kept + len(motion["config.json"]) and kept > 0
    requests = [entry for entry in server.log[before:] if "/resolve/" in entry.path]
    assert [(entry.path, entry.range, entry.status) for entry in requests] == [(weights, f"bytes={kept}-", 206)]
    # Pickled weights without a safetensors copy need allow_pickle; a folder that is no model is refused.
    server.hf_repos["org/pickled"] = {"config.json": motion["config.json"], "diffusion_pytorch_model.bin": b"\x80\x02"}
    with pytest.raises(InvalidArgument, match=r"diffusion_pytorch_model.bin is a pickled checkpoint.*allow_pickle"):
        pulls.pull(PullRequest("hf:org/pickled"), Reporter())
    server.hf_repos["org/docs"] = {"README.md": b"# nothing here"}
    with pytest.raises(InvalidArgument, match="not a diffusers folder"):
        pulls.pull(PullRequest("hf:org/docs"), Reporter())
    assert [path.name for path in folders.motion.iterdir()] == ["mm"]


# -- redirects to hosts the operator did not name: connections go only to checked addresses -----------
PUBLIC = "93.184.215.14"  # never connected to: the test network routes it to a server on loopback


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Network:
    """The network as a pull sees it: a DNS whose answers for a name may change from one lookup to
    the next (``answers[host]``, the last one repeating), and a route from the CDN's public address
    to the HTTPS server on loopback. A connection by name looks the name up again, as the OS would;
    a connection that would leave the machine fails the test."""

    def __init__(self, answers: dict[str, list[list[str]]], routes: dict[tuple[str, int], int], ca: Path) -> None:
        self.answers, self.routes = answers, routes
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        self.dialer = egress.Dialer(self.resolve, self.connect, ssl.create_default_context(cafile=ca))

    def resolve(self, host: str, port: int) -> list[str]:
        if _literal(host):  # an address resolves to itself, with no lookup
            return [host]
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.answers[host]
        self.lookups.append(host)
        return answers[min(self.lookups.count(host), len(answers)) - 1]

    def connect(self, address: tuple[str, int], timeout: object) -> socket.socket:
        host, port = address
        if not _literal(host):
            host = self.resolve(host, port)[0]
        self.connects.append((host, port))
        if (host, port) in self.routes:
            return socket.create_connection(("127.0.0.1", self.routes[host, port]), timeout)
        if not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a connection to {host}:{port} would leave this machine")
        return socket.create_connection((host, port), timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_certificates(folder, {"cdn": "cdn.example.test"})
    return folder


@pytest.fixture
def cdn(pki: Path) -> Iterator[FileServer]:
    """The hub's CDN: HTTPS with a certificate for cdn.example.test."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "cdn" / "tls.crt", pki / "cdn" / "tls.key")
    served = FileServer(files={"/tiny.gguf": GGUF}).start(tls=context)
    yield served
    served.stop()


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A loopback port that no connection may reach: the port the redirect URLs name, where a
    connection to the re-resolved (loopback) name would land."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


def untouched(trap: socket.socket) -> bool:
    """No connection reached the trap (a connect completes into the backlog before the client goes on)."""
    try:
        trap.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_redirect_to_a_public_host_connects_to_the_checked_address_and_resumes(
    server, folders, cdn, trap, pki, monkeypatch
) -> None:
    port = trap.getsockname()[1]
    for proxy in ("http_proxy", "https_proxy", "HTTPS_PROXY"):  # never used: they would land in the trap
        monkeypatch.setenv(proxy, f"http://127.0.0.1:{port}")
    network = Network({"cdn.example.test": [[PUBLIC]]}, {(PUBLIC, port): cdn.port}, pki / "ca.crt")
    server.redirects["/dl/tiny.gguf"] = f"https://cdn.example.test:{port}/tiny.gguf"
    cdn.drop_after["/tiny.gguf"] = 1_000_000
    pulled = puller(folders, server, dialer=network.dialer).pull(
        PullRequest(server.url(f"/dl/tiny.gguf#sha256={sha(GGUF)}")), Reporter()
    )
    assert (pulled.sha256, pulled.path.name) == (sha(GGUF), "tiny.gguf")
    first, resumed = cdn.log  # TLS checked against the URL's host, which is also the Host header
    assert (first.status, first.host) == (200, f"cdn.example.test:{port}")
    assert (resumed.range, resumed.status, resumed.host) == ("bytes=1000000-", 206, f"cdn.example.test:{port}")
    # Each request (the first and the resume) checked the name once and connected to what it checked.
    assert network.lookups == ["cdn.example.test"] * 2
    assert network.connects == [("127.0.0.1", server.port), (PUBLIC, port)] * 2 and untouched(trap)


def test_a_name_rebound_to_loopback_after_its_check_is_never_reached(server, folders, cdn, trap, pki) -> None:
    port = trap.getsockname()[1]
    rebinding = {"cdn.example.test": [[PUBLIC], ["127.0.0.1"]]}  # public when checked, loopback after
    network = Network(rebinding, {(PUBLIC, port): cdn.port}, pki / "ca.crt")
    server.redirects["/dl/tiny.gguf"] = f"https://cdn.example.test:{port}/tiny.gguf"
    pulls = puller(folders, server, dialer=network.dialer)
    ref = server.url(f"/dl/tiny.gguf#sha256={sha(GGUF)}")
    assert pulls.pull(PullRequest(ref), Reporter()).sha256 == sha(GGUF)
    assert network.connects[-1] == (PUBLIC, port) and untouched(trap)
    # The next connection looks the name up again, gets loopback, and is refused before connecting.
    pulls.delete("tiny")
    with pytest.raises(InvalidArgument) as refused:
        pulls.pull(PullRequest(ref), Reporter())
    assert refused.value.field == "ref"
    assert "cdn.example.test, which resolves to 127.0.0.1, a non-public address" in refused.value.message
    assert len(cdn.log) == 1 and network.connects[-1] == ("127.0.0.1", server.port) and untouched(trap)


def test_redirects_to_plain_http_internal_addresses_or_another_certificate_are_refused(server, folders, cdn, pki):
    answers = {"cdn.example.test": [[PUBLIC]], "other.example.test": [[PUBLIC]],
               "meta.example.test": [[PUBLIC, "169.254.169.254"]], "v6.example.test": [["::1"]]}  # fmt: skip
    network = Network(answers, {(PUBLIC, cdn.port): cdn.port}, pki / "ca.crt")
    pulls = puller(folders, server, dialer=network.dialer, max_retries=0)
    for path, location, error, message in [
        ("/a", f"http://cdn.example.test:{cdn.port}/tiny.gguf", InvalidArgument,
         "redirected to http://cdn.example.test, which is not allowed"),
        ("/b", f"https://meta.example.test:{cdn.port}/x", InvalidArgument, "resolves to 169.254.169.254"),
        ("/c", f"https://[::1]:{cdn.port}/x", InvalidArgument, "redirected to ::1, which resolves to ::1"),
        ("/d", f"https://v6.example.test:{cdn.port}/x", InvalidArgument, "resolves to ::1"),
        ("/e", f"https://unknown.example.test:{cdn.port}/x", Unavailable, "cannot resolve unknown.example.test"),
        # Connected to the checked address, the certificate is still checked against the URL's host.
        ("/f", f"https://other.example.test:{cdn.port}/tiny.gguf", Unavailable, "CERTIFICATE_VERIFY_FAILED"),
    ]:  # fmt: skip
        server.redirects[f"{path}/tiny.gguf"] = location
        with pytest.raises(error, match=message):
            pulls.pull(PullRequest(server.url(f"{path}/tiny.gguf"), no_verify=True), Reporter())
    assert len(cdn.log) == 0 and listed(folders) == []
