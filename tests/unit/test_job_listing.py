"""ListJobs' pure parts: index names sort newest first, tokens round-trip and refuse forgeries, the
merge of memory and index respects the horizon, and the client's merge across services pages
exactly (no job twice, none skipped, newest first)."""

from __future__ import annotations

import base64
import itertools

import pytest

from genmesh.client.jobs import JobMerge, list_request
from genmesh.common.v1 import job_pb2
from genmesh.errors import InvalidArgument
from genmesh.text.v1 import text_pb2
from servers.runtime.job_listing import (
    JobQuery,
    Listed,
    check_page_size,
    created_ms,
    decode_token,
    encode_token,
    merge,
    parse_name,
    position,
)


def test_positions_sort_newest_first_and_keep_the_time() -> None:
    older, newer = position(1_700_000_000.5, "txt-0-b"), position(1_700_000_001.0, "txt-0-a")
    assert newer < older and created_ms(older) == 1_700_000_000_500
    same_ms = sorted([position(5.0, "img-b"), position(5.0, "img-a")])
    assert [item[14:] for item in same_ms] == ["img-a", "img-b"]  # the id breaks ties
    listed = parse_name(f"{older}.succeeded.Generate", "a")
    assert listed == Listed(older, "txt-0-b", "succeeded", "Generate", "a")
    assert parse_name("junk", None) is None


def test_tokens_round_trip_and_forged_ones_name_page_token() -> None:
    where = position(1_700_000_000, "vid-1-abc")
    assert decode_token(encode_token(where)) == where and encode_token("") == "" and decode_token("") == ""
    forged = [base64.urlsafe_b64encode(text.encode()).decode() for text in ("p1:../etc", "p2:" + where, where)]
    for bad in ("nope", "%%%", *forged):
        with pytest.raises(InvalidArgument) as caught:
            decode_token(bad)
        assert caught.value.field == "page_token"


@pytest.mark.parametrize("size", [-1, 201, 10_000])
def test_page_size_outside_its_range_is_refused(size: int) -> None:
    with pytest.raises(InvalidArgument, match="between 1 and 200") as caught:
        check_page_size(size)
    assert caught.value.field == "page_size"


def test_page_size_zero_means_fifty() -> None:
    assert check_page_size(0) == 50 and check_page_size(200) == 200


def entry(seconds: float, job_id: str, state: str = "succeeded", owner: str | None = "a") -> Listed:
    return Listed(position(seconds, job_id), job_id, state, "Generate", owner)


def test_merge_prefers_memory_and_stops_at_the_horizon() -> None:
    query = JobQuery(owner="a", page_size=2)
    stored = [entry(30, "j3"), entry(20, "j2")]
    live = [
        entry(40, "j4", "running"),
        entry(30, "j3", "succeeded"),
        entry(10, "j1", "queued"),
        entry(35, "x", owner="b"),
    ]
    page, after = merge(query, stored, stored[-1].position, live)
    assert [item.job_id for item in page] == ["j4", "j3"] and after == page[-1].position
    # The next page starts after j3: j2 from the index; j1 (older than the horizon) waits for later.
    query = JobQuery(owner="a", page_size=2, after=after)
    page, after = merge(query, [entry(20, "j2")], entry(20, "j2").position, live)
    assert [item.job_id for item in page] == ["j2"] and after == entry(20, "j2").position
    page, after = merge(JobQuery(owner="a", page_size=2, after=after), [], None, live)
    assert [item.job_id for item in page] == ["j1"] and after == ""


def test_query_filters() -> None:
    job = entry(100, "j", "failed")
    assert JobQuery(owner="a", states=frozenset({"failed"})).matches(job)
    assert not JobQuery(owner="a", states=frozenset({"running", "queued"})).matches(job)
    assert not JobQuery(owner="b").matches(job) and JobQuery(owner=None).matches(job)
    assert JobQuery(owner="a", created_after_ms=99_999, created_before_ms=100_001).matches(job)
    assert not JobQuery(owner="a", created_before_ms=100_000).matches(job)
    assert not JobQuery(owner="a", method="Chat").matches(job)


def job(service_index: int, seconds: float, job_id: str) -> text_pb2.Job:
    message = text_pb2.Job(status=job_pb2.JobStatus(job_id=job_id))
    message.status.create_time.FromMilliseconds(int(seconds * 1000))
    return message


class Pages:
    """Services answering ListJobs from fixed lists, newest first, ``size`` at a time (as servers do)."""

    def __init__(self, jobs: dict[str, list[text_pb2.Job]], size: int = 2) -> None:
        self.jobs, self.size, self.calls = jobs, size, 0

    def answer(self, service: str, token: str) -> tuple[list[text_pb2.Job], str]:
        self.calls += 1
        start = int(token or 0)
        end = start + self.size
        return self.jobs[service][start:end], str(end) if end < len(self.jobs[service]) else ""


def run(merge_: JobMerge, pages: Pages):
    while wanted := merge_.wanted():
        for service, token in wanted:
            merge_.add(service, token, *pages.answer(service, token))
    return merge_.page()


def test_merged_pages_across_services_list_each_job_once_newest_first() -> None:
    counter = itertools.count()
    jobs = {
        "text": [job(0, t, f"txt-{next(counter)}") for t in (90, 70, 50, 10)],
        "image": [job(1, t, f"img-{next(counter)}") for t in (80, 75, 20)],
        "agent": [],
    }
    pages = Pages(jobs)
    seen, token = [], ""
    while True:
        page = run(JobMerge(["text", "image", "agent"], 3, token), pages)
        assert len(page.jobs) <= 3
        seen.extend(listed.status.job_id for listed in page.jobs)
        token = page.next_page_token
        if not token:
            break
    every = sorted((j for listed in jobs.values() for j in listed), key=lambda j: -j.status.create_time.seconds)
    assert seen == [j.status.job_id for j in every]


def test_bad_merged_tokens_and_sizes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        JobMerge(["text"], 5, "!!!")
    with pytest.raises(InvalidArgument, match="page_size"):
        JobMerge(["text"], 0)
    with pytest.raises(InvalidArgument, match="state"):
        list_request("text", state="sleeping")
    assert list_request("image", state="running", all_clients=True).state == job_pb2.JOB_STATE_RUNNING


def test_an_outputs_artifacts_are_found_wherever_its_result_holds_them() -> None:
    from genmesh.agent.v1 import agent_pb2
    from genmesh.image.v1 import image_pb2
    from servers.runtime.job_listing import output_kind
    from servers.runtime.library import artifacts_of

    result = image_pb2.ImageResult(images=[image_pb2.GeneratedImage(), image_pb2.GeneratedImage()])
    result.images[0].artifact.key, result.images[1].artifact.key = "f/img-1/image_0.png", "f/img-1/image_1.png"
    result.record.key = "f/img-1/result.json"
    assert [(name, found.key) for name, found in artifacts_of(result)] == [
        ("images", "f/img-1/image_0.png"), ("images", "f/img-1/image_1.png"), ("record", "f/img-1/result.json"),
    ]  # fmt: skip
    character = agent_pb2.CharacterResult()
    character.portrait.key = "f/agt-1/portrait.png"
    assert [name for name, _ in artifacts_of(character)] == ["portrait"]
    assert output_kind("training", "genmesh.training.v1.TrainingService/RestoreImage") == "restored_image"
    assert output_kind("training", "GenerateSyntheticData") is None and output_kind("text", "Chat") == "text"


def test_a_characters_sub_jobs_are_found_in_its_result_each_once() -> None:
    from genmesh.agent.v1 import agent_pb2
    from servers.runtime.library import sub_job_ids

    character = agent_pb2.CharacterResult(
        stages=[agent_pb2.StageResult(sub_job_id="txt-1"), agent_pb2.StageResult(sub_job_id="img-2"),
                agent_pb2.StageResult(sub_job_id="txt-1"), agent_pb2.StageResult()],
    )  # fmt: skip
    assert sub_job_ids(character) == ["txt-1", "img-2"]
    assert sub_job_ids(agent_pb2.CharacterResult()) == [] and sub_job_ids(None) == []


def test_the_library_leaves_sub_jobs_out_unless_asked() -> None:
    from servers.runtime.caller import PARENT_JOB_HEADER, from_headers
    from servers.runtime.job_listing import library_kind, split_library_kind
    from servers.runtime.library import library_states

    assert (
        library_kind("image", sub_job=True) == "image-sub" and library_kind("restored_image", False) == "restored_image"
    )
    assert split_library_kind("image-sub") == ("image", True) and split_library_kind("restored_image") == (
        "restored_image",
        False,
    )
    shown, dense = library_states(None, include_sub_jobs=False)
    assert dense and shown == {"text", "image", "video", "character", "restored_image"}
    assert library_states(None, include_sub_jobs=True) == (None, False)
    assert library_states("image", include_sub_jobs=False) == (frozenset({"image"}), False)
    assert library_states("image", include_sub_jobs=True) == (frozenset({"image", "image-sub"}), False)
    names = [
        entry(10.0 - n, f"img-{n}", state) for n, state in enumerate(["image", "image-sub", "character", "text-sub"])
    ]
    default = JobQuery(owner="a", states=shown, dense=dense)
    assert [listed.job_id for listed in names if default.matches(listed)] == ["img-0", "img-2"]
    # A sub-job says whose step it is in a header only the agent sets (the gateway drops a caller's).
    assert from_headers({"x-client-id": "a", PARENT_JOB_HEADER: "agt-0-1f"}).parent_job_id == "agt-0-1f"
    assert from_headers({PARENT_JOB_HEADER: "agt-0-1f"}).parent_job_id == "agt-0-1f"  # a direct call too
    for bad in ("../x", "", "a/b", "x" * 200):
        assert from_headers({"x-client-id": "a", PARENT_JOB_HEADER: bad}).parent_job_id == ""
