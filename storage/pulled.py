"""Pulled models in the object store, for clusters: pulled once, fetched by each replica on first use.

The models server publishes a pulled file to the ``models`` bucket under its digest
(``pulled/blobs/<sha256>``) with one small index object per name and kind
(``pulled/index/<kind>/<name>.json``). A server whose models folder is its own (a pod's volume)
lists the index beside its folder and fetches a model into the folder the first time it is asked
for, verified against the digest, so the catalogs keep reading files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from genmesh.errors import InvalidArgument, NotFound
from storage.buckets import MODELS
from storage.object_store import ObjectStore

PREFIX = "pulled"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredModel:
    name: str
    kind: str  # "text", "image", "motion"
    file_name: str  # the installed file's name, e.g. "tiny.gguf"
    sha256: str
    size_bytes: int
    family: str = ""  # "sd15"/"sdxl" for image models, "v1".."v3" for motion modules (read at pull time)

    @property
    def blob_key(self) -> str:
        return f"{PREFIX}/blobs/{self.sha256}"


def index_key(kind: str, name: str) -> str:
    return f"{PREFIX}/index/{kind}/{name}.json"


class PulledModels:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def publish(self, model: StoredModel, path: Path) -> None:
        """Upload the file (once per digest) and then its index entry, so an entry never names a
        blob that is not whole."""
        if not self.store.exists(MODELS, model.blob_key):
            self.store.put_file(MODELS, model.blob_key, path)
        self.store.put_bytes(
            MODELS, index_key(model.kind, model.name), json.dumps(asdict(model)).encode(), "application/json"
        )

    def entries(self, kind: str) -> list[StoredModel]:
        """Every published model of ``kind`` (one listing and one small read each)."""
        found = []
        for entry in self.store.list(MODELS, f"{PREFIX}/index/{kind}/"):
            found.append(StoredModel(**json.loads(self.store.get_bytes(MODELS, entry.key))))
        return found

    def remove(self, kind: str, name: str) -> bool:
        """Forget ``name``; its blob goes too when no other name of any kind shares the digest."""
        key = index_key(kind, name)
        if not self.store.exists(MODELS, key):
            return False
        model = StoredModel(**json.loads(self.store.get_bytes(MODELS, key)))
        self.store.delete(MODELS, key)
        others = (entry for other in ("text", "image", "motion") for entry in self.entries(other))
        if not any(entry.sha256 == model.sha256 for entry in others):
            self.store.delete(MODELS, model.blob_key)
        return True

    def fetch(self, model: StoredModel, folder: Path) -> Path:
        """Download into ``folder`` under the model's file name, verified, renamed into place whole."""
        if Path(model.file_name).name != model.file_name or model.file_name.startswith("."):
            raise InvalidArgument(f"model: bad stored file name {model.file_name!r}", field="model")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / model.file_name
        fetching = folder / f".{model.file_name}.fetching"  # no catalog lists it
        try:
            self.store.download_file(MODELS, model.blob_key, fetching)
            digest = hashlib.sha256()
            with open(fetching, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != model.sha256:
                raise NotFound(
                    f"model: the stored copy of {model.name} is damaged (sha256 {digest.hexdigest()}, expected "
                    f"{model.sha256}); pull it again",
                    field="model",
                )
            os.replace(fetching, target)
        finally:
            fetching.unlink(missing_ok=True)
        return target
