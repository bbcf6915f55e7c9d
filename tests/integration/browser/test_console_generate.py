"""Generating through the console in a real browser: an image with live previews, then img2img from a
Library image; a video with prompt travel and an uploaded init image, cancelled midway; a streamed
chat reply; a character's three stage cards; training with two runs compared and an image restored.
Small sizes keep the CPU mesh quick."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.integration

JOB_TIMEOUT_MS = 240_000  # generous: the shared CPUs run every other test's jobs too
SLOW_JOB_TIMEOUT_MS = 600_000  # a character (three jobs), a training job


def open_view(console, api_key: str, route: str, heading: str) -> None:
    console.open(f"#/{route}")
    console.enter_key(api_key)
    expect(console.page.get_by_role("heading", name=heading)).to_be_visible()
    expect(console.page.locator("select[name=model] option").first).not_to_have_text("loading models…")


def wait_job(page, condition: str, timeout: int = JOB_TIMEOUT_MS) -> dict:
    """Waits until the job panel meets ``condition`` (JS over ``panel``, its dataset ``d``) or the job
    fails (then fails the test at once with the panel's message); returns the dataset."""
    page.wait_for_function(
        f"""() => {{
            const panel = document.querySelector('.job-panel');
            if (!panel) return false;
            const d = panel.dataset;
            return d.state === 'failed' || ({condition});
        }}""",
        timeout=timeout,
    )
    data = page.locator(".job-panel").evaluate("panel => ({...panel.dataset, text: panel.innerText})")
    assert data["state"] != "failed", data["text"]
    return data


def fill(page, values: dict[str, str]) -> None:
    for label, value in values.items():
        page.get_by_label(label, exact=True).fill(value)


def png_file(name: str, size: int = 48) -> dict:
    """A small noisy PNG for a file input (Playwright's in-memory file)."""
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 60).convert("RGB").save(buffer, format="PNG")
    return {"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}


def test_an_image_shows_previews_then_the_result(console, api_key) -> None:
    page = console.page
    open_view(console, api_key, "image", "Generate an image")
    for label in ("Width", "Height", "Steps"):  # left to the server: the model's defaults, lighter on a CPU
        expect(page.get_by_label(label, exact=True)).to_have_value("")
        expect(page.get_by_label(label, exact=True)).to_have_attribute("placeholder", "auto")
    fill(page, {"Prompt": "a lighthouse at dusk", "Width": "64", "Height": "64", "Steps": "4", "Seed": "7"})
    page.get_by_role("button", name="Generate").click()
    panel = page.locator(".job-panel")
    wait_job(page, "Number(d.previews || 0) >= 1 || d.state === 'succeeded'")
    console.shot("preview")
    data = wait_job(page, "d.state === 'succeeded' || d.state === 'cancelled'")
    assert data["state"] == "succeeded", data["text"]
    assert int(data["previewsBeforeEnd"]) >= 1  # seen while it ran, before the result
    assert data["jobId"].startswith("img-")
    expect(panel.locator(".preview")).to_be_visible()
    image = page.locator(".result img.result-image")
    expect(image).to_be_visible()
    # The result loads in the browser from its presigned URL, signed for the gateway's address:
    # the same origin as the console (the gateway routes the object store's paths).
    assert image.get_attribute("src").startswith(f"{console.base_url}/outputs/")
    page.wait_for_function("img => img.complete && img.naturalWidth === 64", arg=image.element_handle())
    expect(page.locator(".result figcaption")).to_contain_text("seed 7")
    console.shot("result")
    # The Library lists it (newest first) with its parameters; "Reuse settings" fills the form again.
    page.get_by_role("link", name="Library").click()
    tile = page.locator(f".library li[data-job-id='{data['jobId']}'] button")
    expect(tile).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=tile.locator("img").element_handle())
    tile.click()
    detail = page.locator(f".output-detail[data-job-id='{data['jobId']}']")
    expect(detail.locator("dd", has_text="a lighthouse at dusk")).to_be_visible()
    console.shot("library")
    detail.get_by_role("button", name="Reuse settings").click()
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    for label, value in (("Prompt", "a lighthouse at dusk"), ("Width", "64"), ("Steps", "4"), ("Seed", "7")):
        expect(page.get_by_label(label, exact=True)).to_have_value(value)
    console.shot("reused")
    # img2img from the Library: pick the image just made as the init image.
    zone = page.locator(".drop-zone[data-input=init_image]")
    expect(zone).to_have_attribute("data-source", "none")  # a txt2img job reuses no init image
    page.get_by_role("button", name="Pick from the Library").click()
    page.get_by_role("button", name=f"Use {data['jobId']}").click()
    expect(zone).to_have_attribute("data-source", "library")
    init_key = zone.get_attribute("data-key")
    assert f"/{data['jobId']}/" in init_key, init_key
    fill(page, {"Strength": "0.5"})
    console.shot("img2img-picked")
    page.get_by_role("button", name="Generate").click()
    done = "d.state === 'succeeded' || d.state === 'cancelled'"
    img2img = wait_job(page, f"d.jobId && d.jobId !== '{data['jobId']}' && ({done})")
    assert img2img["state"] == "succeeded", img2img["text"]
    expect(page.locator(".result figcaption")).to_contain_text("img2img, strength 0.50")
    # Its settings reused open Generate with the same init image and strength.
    page.get_by_role("link", name="Library").click()
    page.locator(f".library li[data-job-id='{img2img['jobId']}'] button").click()
    detail = page.locator(f".output-detail[data-job-id='{img2img['jobId']}']")
    detail.get_by_role("button", name="Reuse settings").click()
    expect(page.get_by_role("heading", name="Generate an image")).to_be_visible()
    expect(zone).to_have_attribute("data-key", init_key)
    expect(page.get_by_label("Strength", exact=True)).to_have_value("0.5")
    console.shot("img2img-reused")


def test_a_video_cancelled_midway_ends_cancelled(console, api_key) -> None:
    page = console.page
    open_view(console, api_key, "video", "Generate a video")
    fill(page, {"Prompt": "waves on a beach", "Frames": "8", "Width": "64", "Height": "64", "Steps": "40"})
    # Prompt travel, checked against the frame count before anything is sent.
    page.get_by_role("button", name="Add a prompt change").click()
    fill(page, {"From frame": "8", "to prompt": "the beach at night"})
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert")).to_contain_text("frame must be a whole number from 0 to 7")
    expect(page.get_by_label("From frame", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".job-panel")).to_have_count(0)
    console.shot("travel-invalid")
    fill(page, {"From frame": "4"})
    expect(page.get_by_role("alert")).to_have_count(0)  # corrected: no longer marked
    # Image-to-video from an uploaded still.
    page.get_by_label("Upload…").set_input_files(png_file("still.png", 64))
    expect(page.locator(".drop-zone[data-input=init_image]")).to_have_attribute("data-source", "upload")
    expect(page.get_by_label("Strength", exact=True)).to_be_visible()
    console.shot("travel-and-init")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    panel = page.locator(".job-panel")
    # Midway: denoising has started (a step reported), far from its 40 steps.
    data = wait_job(page, "Number(d.step || 0) >= 1 || d.state === 'succeeded'")
    assert data["state"] == "running", data["text"]
    assert data["jobId"].startswith("vid-")
    console.shot("running")
    panel.get_by_role("button", name="Cancel").click()
    expect(panel).to_have_attribute("data-state", "cancelled", timeout=60_000)
    assert int(panel.get_attribute("data-step")) < 40
    expect(page.locator(".result img, .result video")).to_have_count(0)
    console.shot("cancelled")
    # The Jobs list (every service's, merged) shows it cancelled.
    page.get_by_role("link", name="Jobs").click()
    expect(page.locator(f"tr[data-job-id='{data['jobId']}']")).to_have_attribute("data-state", "cancelled")
    console.shot("jobs")


def test_chat_streams_a_reply(console, api_key) -> None:
    page = console.page
    open_view(console, api_key, "text", "Chat")
    fill(page, {"Message": "Once upon a time", "Max tokens": "12", "Seed": "3"})
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".msg.assistant")
    expect(reply).to_have_attribute("data-state", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert reply.locator("p").inner_text().strip()
    expect(reply.locator(".meta")).to_contain_text("tokens/s")
    console.shot("reply")


@pytest.mark.parametrize("console", ["desktop"], indirect=True)
def test_a_character_fills_its_three_stage_cards(console, api_key, gateway_url) -> None:
    page = console.page
    console.open("#/character")
    console.enter_key(api_key)
    expect(page.get_by_role("heading", name="Make a character")).to_be_visible()
    fill(page, {"Idea": "a lighthouse keeper who collects storms in jars", "Style": "watercolor", "Seed": "7",
                "Steps": "4", "Portrait size": "64", "Frames": "8"})  # fmt: skip
    page.get_by_role("button", name="Make the character").click()
    # Three jobs in a row (the sheet is ~300 tokens of JSON): minutes when the CPUs are shared.
    data = wait_job(page, "d.state === 'succeeded' || d.state === 'cancelled'", timeout=SLOW_JOB_TIMEOUT_MS)
    assert data["state"] == "succeeded", data["text"]
    assert data["jobId"].startswith("agt-")
    for stage in ("STAGE_TEXT", "STAGE_IMAGE", "STAGE_VIDEO"):
        expect(page.locator(f".stage-card[data-stage={stage}]")).to_have_attribute("data-state", "done")
    expect(page.locator(".stage-card[data-stage=STAGE_TEXT] .sheet h4")).not_to_be_empty()
    for stage in ("STAGE_IMAGE", "STAGE_VIDEO"):  # the portrait (PNG) and the animation (GIF) load
        media = page.locator(f".stage-card[data-stage={stage}] img")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=media.element_handle())
    console.shot("cards")
    # The Library shows the character as one item (its portrait the thumbnail), not its stages' jobs.
    character = data["jobId"]
    job = httpx.get(f"{gateway_url}/v1/agent/jobs/{character}", headers={"x-api-key": api_key}, timeout=30).json()
    sub_jobs = [stage["sub_job_id"] for stage in job["result"]["stages"]]
    page.get_by_role("link", name="Library").click()
    tile = page.locator(f".library li[data-job-id='{character}'] button")
    expect(tile).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=tile.locator("img").element_handle())
    for sub_job in sub_jobs:
        expect(page.locator(f".library li[data-job-id='{sub_job}']")).to_have_count(0)
    # Its detail: the animation plays there, and the seed reads as the number it is (REST has "7").
    tile.click()
    detail = page.locator(f".output-detail[data-job-id='{character}']")
    animation = detail.locator("img.animation")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=animation.element_handle())
    expect(detail.locator("dt", has_text="seed").locator("xpath=following-sibling::dd[1]")).to_have_text("7")
    expect(detail.locator("dt", has_text="stages").locator("xpath=following-sibling::dd[1]")).to_have_text(
        "STAGE_TEXT, STAGE_IMAGE, STAGE_VIDEO"
    )
    console.shot("library-character")
    # Asked for, the sub-jobs are listed too, each naming its character.
    page.get_by_label("sub-jobs too").check()
    for sub_job in sub_jobs:
        expect(page.locator(f".library li[data-job-id='{sub_job}']")).to_have_attribute("data-parent", character)
    page.locator(f".library li[data-job-id='{sub_jobs[1]}'] button").click()
    expect(page.locator(f".output-detail[data-job-id='{sub_jobs[1]}'] .parent")).to_contain_text(character)
    console.shot("library-sub-jobs")


@pytest.mark.parametrize("console", ["desktop"], indirect=True)
def test_training_draws_a_point_per_epoch_on_each_chart(console, api_key) -> None:
    page = console.page
    console.open("#/training")
    console.enter_key(api_key)
    expect(page.get_by_role("heading", name="Training", exact=True)).to_be_visible()
    fill(page, {"Pairs": "24", "Data seed": "5"})
    page.get_by_role("button", name="Make pairs").click()
    data = wait_job(page, "d.state === 'succeeded' || d.state === 'cancelled'")
    assert data["state"] == "succeeded", data["text"]
    fill(page, {"Layer": "71", "Epochs": "3", "Batch size": "4", "Patch size": "32", "Dataset prefix": "synthetic_"})
    page.get_by_role("button", name="Start training").click()
    page.wait_for_function(
        """() => {
            const panels = document.querySelectorAll('.job-panel');
            const panel = panels[panels.length - 1];
            return panel && ['succeeded', 'failed', 'cancelled'].includes(panel.dataset.state);
        }""",
        timeout=SLOW_JOB_TIMEOUT_MS,
    )
    panel = page.locator(".job-panel").last
    assert panel.get_attribute("data-state") == "succeeded", panel.inner_text()
    assert panel.get_attribute("data-job-id").startswith("trn-")
    for title in ("Loss", "PSNR (dB)", "SSIM"):  # three epochs, three points on each line
        chart = page.locator(f".chart[data-title='{title}']")
        expect(chart.locator("circle.s0")).to_have_count(3)
    console.shot("charts")
    first_job = panel.get_attribute("data-job-id")
    # Its report opens once it ends: the plots (PNG charts from the store) and the text.
    report = page.locator(f".report[data-job-id='{first_job}']")
    expect(report.locator(".plots img")).to_have_count(4)  # loss, PSNR, SSIM, accuracy
    for plot in report.locator(".plots img").all():
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    expect(report.locator("pre")).to_contain_text(first_job)
    # A second, shorter run of the same layer: a second version in the registry.
    fill(page, {"Epochs": "2"})
    page.get_by_role("button", name="Start training").click()
    panel = page.locator(".job-panel").last
    expect(panel).not_to_have_attribute("data-job-id", first_job)
    expect(panel).to_have_attribute("data-state", re.compile("succeeded|failed|cancelled"), timeout=SLOW_JOB_TIMEOUT_MS)
    assert panel.get_attribute("data-state") == "succeeded", panel.inner_text()
    second_job = panel.get_attribute("data-job-id")
    rows = {}
    for job in (first_job, second_job):
        rows[job] = page.locator(".versions tr", has=page.locator("code", has_text=job))
        expect(rows[job]).to_have_count(1)
    expect(rows[second_job]).to_contain_text("71 · v")
    # The two runs overlaid: the first's three epochs and the second's two on each chart.
    for job in (first_job, second_job):
        rows[job].get_by_role("checkbox").check()
    compare = page.locator(".charts.compare")
    expect(compare).to_have_attribute("data-runs", "2")
    for title in ("Validation loss", "PSNR (dB)", "SSIM"):
        expect(compare.locator(f".chart[data-title='{title}'] circle.s0")).to_have_count(3)
        expect(compare.locator(f".chart[data-title='{title}'] circle.s1")).to_have_count(2)
    console.shot("compare")
    # Restore an uploaded image with the first version: before and after side by side.
    page.get_by_label("Version", exact=True).select_option(rows[first_job].get_attribute("data-model-id"))
    page.get_by_label("Upload…").set_input_files(png_file("noisy.png"))
    page.get_by_role("button", name="Restore", exact=True).click()
    restore = page.locator(".registry .job-panel")
    expect(restore).to_have_attribute("data-state", re.compile("succeeded|failed|cancelled"), timeout=JOB_TIMEOUT_MS)
    assert restore.get_attribute("data-state") == "succeeded", restore.inner_text()
    assert restore.get_attribute("data-job-id").startswith("tsk-")
    for side in ("before", "after"):
        picture = page.locator(f".before-after .{side} img")
        page.wait_for_function("img => img.complete && img.naturalWidth === 48", arg=picture.element_handle())
    console.shot("restored")
