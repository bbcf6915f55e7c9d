"""The outputs library (issue 20): how long a ListOutputs page takes through the gateway when the
store holds many outputs.

    .venv/bin/python bench/library.py [--outputs 5000] [--page-size 50] [--pages 40]

Starts a text-only mesh (S3, one Text server, Envoy: every server answers LibraryService), writes
``--outputs`` image outputs of one client as finished jobs leave them (a terminal record each, with
artifacts and parameters, and its two library index names; no image files: listing reads none),
then pages through them with the Python client: the first ``--pages`` pages from the newest, and
the last page (seeking with ``created_before``). Prints the write time, then p50/p90/max of the
page times and the goal (< 100 ms), and ``ms_per_page=<p50>``.

A page is one S3 listing of ``page_size + 1`` index names (seeking to the page token) plus one
record read per output, so its time does not grow with the number stored; the same run with
``--outputs 500`` shows it. On a 2-core machine shared with other work the reads wait on the CPU:
compare runs made at the same time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format

from genmesh.client import GenmeshClient
from genmesh.image.v1 import image_pb2
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from servers.runtime.library import Library
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore

BASE = 1_600_000_000.0
CLIENT = "local"  # the key genmesh up generates


def record(number: int) -> tuple[str, bytes]:
    job_id = f"img-7-{number:024x}"
    folder = f"20200913_1226/{job_id}/"
    job = image_pb2.Job(
        result=image_pb2.ImageResult(
            images=[image_pb2.GeneratedImage()],
            parameters=image_pb2.ImageParameters(model="tiny-sd15", width=512, height=512, steps=25, seed=number),
        )
    )
    job.status.job_id, job.status.client_id = job_id, CLIENT
    job.status.method = "genmesh.image.v1.ImageService/GenerateImage"
    job.status.state = 3  # SUCCEEDED
    job.status.create_time.FromNanoseconds(int((BASE + number) * 1e9))
    job.result.images[0].artifact.bucket, job.result.images[0].artifact.key = OUTPUTS, folder + "image_0.png"
    job.result.record.bucket, job.result.record.key = OUTPUTS, f"jobs/{job_id}.json"
    return job_id, json_format.MessageToJson(job, preserving_proto_field_name=True).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=5000)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--pages", type=int, default=40)
    args = parser.parse_args()
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="genmesh-bench-library-") as data_dir:
        mesh = Mesh(
            LaunchOptions(
                port=free_port(),
                services=("text",),
                data_dir=Path(data_dir),
                service_args={"text": ["--context-length", "512"]},
            )
        ).start()
        try:
            assert mesh.s3 is not None
            store = ObjectStore(mesh.s3.settings())
            library = Library(store)

            def write(number: int) -> None:
                job_id, data = record(number)
                store.put_bytes(OUTPUTS, f"jobs/{job_id}.json", data, "application/json")
                library.add(job_id, BASE + number, "image", "image", CLIENT)

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(write, range(args.outputs)))
            print(f"wrote {args.outputs} outputs (records and index names) in {time.monotonic() - started:.1f} s")
            seconds: list[float] = []
            listed = 0
            with GenmeshClient(mesh.url, mesh.api_key) as client:
                client.outputs.list(page_size=1)  # a warm connection
                token = ""
                for _ in range(args.pages):
                    started = time.monotonic()
                    page = client.outputs.list(page_size=args.page_size, page_token=token)
                    seconds.append(time.monotonic() - started)
                    listed += len(page.outputs)
                    token = page.next_page_token
                    if not token:
                        break
                started = time.monotonic()
                last = client.outputs.list(page_size=args.page_size, created_before=BASE + args.page_size)
                seconds.append(time.monotonic() - started)
            assert len(last.outputs) == args.page_size and listed == min(args.outputs, args.pages * args.page_size)
            seconds.sort()
            p50 = statistics.median(seconds) * 1000
            print(
                f"{len(seconds)} pages of {args.page_size}: p50 {p50:.1f} ms, "
                f"p90 {seconds[int(len(seconds) * 0.9)] * 1000:.1f} ms, max {seconds[-1] * 1000:.1f} ms "
                f"(goal: < 100 ms per page)"
            )
            print(f"ms_per_page={p50:.1f}")
        finally:
            mesh.stop()


if __name__ == "__main__":
    main()
