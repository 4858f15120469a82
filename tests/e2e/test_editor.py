"""The editor at / in a real browser (headless Chromium) against a real `bentoml serve`.

Every page here runs offline: requests to any host but the server are blocked and must not
be attempted. Click positions are photo pixels mapped proportionally onto the stage.
"""

from __future__ import annotations

import base64
import io
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page

from tests.e2e.browser import OfflinePage, browser  # noqa: F401 (the fixture)
from tests.e2e.conftest import Server
from tests.e2e.helpers import EXAMPLES, decode_b64_mask, dilate, load_rgb, post

pytestmark = pytest.mark.e2e

DOG = EXAMPLES / "remove" / "dog.jpg"
DOG_CLICK = (200, 450)
TIMEOUT_MS = 180_000


@pytest.fixture
def offline(browser: Browser) -> Iterator[OfflinePage]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    yield OfflinePage(context.new_page())
    context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[OfflinePage]:  # noqa: F811
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    yield OfflinePage(context.new_page())
    context.close()


def wait_state(page: Page, *states: str) -> str:
    page.wait_for_selector(
        ", ".join(f"body[data-state={s}]" for s in states), state="attached", timeout=TIMEOUT_MS
    )
    return page.evaluate("document.body.dataset.state")


def open_photo(page: Page, url: str, photo: Path = DOG) -> None:
    page.goto(f"{url}/")
    assert page.evaluate("document.body.dataset.state") == "empty"
    page.set_input_files("[data-testid=open-image]", photo)
    assert wait_state(page, "ready", "error") == "ready", page.inner_text("[data-testid=error]")


def on_stage(page: Page, x: float, y: float) -> tuple[float, float]:
    """Photo pixel (x, y) as a page position on the stage."""
    box = page.locator("[data-testid=stage]").bounding_box()
    assert box is not None
    width, height = page.evaluate(
        "[document.getElementById('photo').width, document.getElementById('photo').height]"
    )
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box[
        "height"
    ] / height


def mask_area(page: Page) -> int:
    return int(page.get_attribute("[data-testid=mask-preview]", "data-area") or 0)


def painted_pixels(page: Page) -> int:
    """Pixels the mask-preview canvas actually shows."""
    return page.evaluate(
        """() => {
        const c = document.querySelector('[data-testid=mask-preview]');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i]) n += 1;
        return n;
    }"""
    )


def mode(page: Page) -> str:
    return page.evaluate("editorStats().mode")


def brush_stroke(page: Page, start: tuple[int, int], end: tuple[int, int]) -> None:
    page.click("[data-testid=brush]")
    page.mouse.move(*on_stage(page, *start))
    page.mouse.down()
    page.mouse.move(*on_stage(page, *end), steps=5)
    page.mouse.up()


def until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_index_is_the_editor_without_trackers(server: Server) -> None:
    html = httpx.get(f"{server.url}/").text
    assert 'data-testid="stage"' in html
    assert "googletagmanager" not in html and "BentoML" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "every asset is local"


def test_docs_and_redoc_render_offline(server: Server, offline: OfflinePage) -> None:
    page = offline.page
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    page.wait_for_selector(".swagger-ui .opblock", timeout=60_000)
    assert "/api/v1/remove" in page.inner_text(".swagger-ui")
    page.goto(f"{server.url}/redoc")
    page.wait_for_selector("redoc h1", timeout=60_000)
    assert "/api/v1/remove" in page.inner_text("redoc")
    assert offline.external == []


def test_select_brush_undo_remove_download_keep_editing(
    server: Server, offline: OfflinePage, tmp_path: Path
) -> None:
    page = offline.page
    open_photo(page, server.url)
    if mode(page) == "browser":
        page.mouse.move(*on_stage(page, *DOG_CLICK))
        page.wait_for_selector("[data-testid=mask-preview][data-hover='1']", timeout=60_000)
        assert painted_pixels(page) > 0, "the hover preview shows a mask"

    page.mouse.click(*on_stage(page, *DOG_CLICK))
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    clicked = mask_area(page)
    assert clicked > 0 and painted_pixels(page) > 0

    page.click("#clear")
    assert mask_area(page) == 0
    brush_stroke(page, (100, 100), (200, 100))
    brushed = mask_area(page)
    # Brush size 40 px in photo pixels: a 100 x 40 band with round ends.
    assert 100 * 40 <= brushed <= 140 * 40
    page.keyboard.press("Control+z")
    assert mask_area(page) == 0
    page.click("[data-testid=undo]")
    assert mask_area(page) == clicked
    page.keyboard.press("Control+Shift+z")
    page.click("[data-testid=redo]")
    assert mask_area(page) == brushed
    page.keyboard.press("?")
    assert page.evaluate("document.getElementById('help').open")
    page.keyboard.press("Escape")

    page.click("[data-testid=action-remove]")
    assert wait_state(page, "done", "error") == "done", page.inner_text("[data-testid=error]")
    natural = page.evaluate(
        "(() => { const r = document.querySelector('[data-testid=result]');"
        " return [r.naturalWidth, r.naturalHeight]; })()"
    )
    assert natural == [800, 534]

    with page.expect_download() as download_info:
        page.click("[data-testid=download]")
    saved = tmp_path / "result.png"
    download_info.value.save_as(saved)
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.size == (800, 534)
        result = np.asarray(image.convert("RGB"))
    # Exactly the brushed mask, dilated by the default 15, was regenerated; nothing else.
    stroke = np.zeros((534, 800), bool)
    stroke[80:121, 80:221] = True
    changed = np.any(result != load_rgb(DOG), axis=-1)
    assert changed.any()
    assert not (changed & ~dilate(stroke, 15 + 4)).any()

    page.click("#keep-editing")
    assert wait_state(page, "ready", "error") == "ready"
    assert page.locator("#versions li").count() == 2
    assert mask_area(page) == 0
    assert offline.external == [] and offline.errors == []


def start_fill(page: Page, url: str, steps: int, seed: int | None = None) -> None:
    """Open the dog, brush a stroke and start a fill job with `steps` steps."""
    open_photo(page, url)
    brush_stroke(page, (300, 200), (400, 250))
    page.fill("[data-testid=prompt]", "a red ball")
    page.click("#prompt-fields summary")
    page.fill("#steps", str(steps))
    if seed is not None:
        page.fill("#seed", str(seed))
    page.click("[data-testid=action-fill]")


def test_fill_shows_step_progress_and_the_result(server: Server, offline: OfflinePage) -> None:
    page = offline.page
    start_fill(page, server.url, steps=6, seed=3)
    seen: set[str] = set()

    def finished() -> bool:
        seen.add(page.inner_text("[data-testid=progress]"))
        return page.evaluate("['done', 'error'].includes(document.body.dataset.state)")

    until(finished, "the fill job", timeout_s=TIMEOUT_MS / 1000)
    assert page.evaluate("document.body.dataset.state") == "done", page.inner_text(
        "[data-testid=error]"
    )
    assert any(re.fullmatch(r"step \d+ of 6.*", text) for text in seen), seen
    assert page.evaluate("document.querySelector('[data-testid=result]').naturalWidth") == 800
    assert offline.external == [] and offline.errors == []


def test_fill_can_be_cancelled(server: Server, offline: OfflinePage) -> None:
    page = offline.page
    start_fill(page, server.url, steps=100)
    page.wait_for_selector("[data-testid=progress]:text-matches('step [0-9]+ of 100')")
    page.click("#cancel")
    assert wait_state(page, "ready", "done", "error") == "ready"
    assert page.inner_text("#status") == "Cancelled."
    assert page.locator("[data-testid=result]").is_hidden()


def test_drop_paste_and_box(server: Server, offline: OfflinePage) -> None:
    """Drag and drop and paste open a photo; a drag on the stage selects with a box."""
    page = offline.page
    page.goto(f"{server.url}/")
    photo = base64.b64encode(DOG.read_bytes()).decode()
    for event in ("drop", "paste"):
        page.evaluate(
            """([data, event]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'dog.jpg', { type: 'image/jpeg' }));
            const target = event === 'drop' ? document.getElementById('drop-zone') : document;
            // The second photo opens while the first is 'ready': clear the state first, so
            // that the wait below sees this photo's 'ready', not the previous one's.
            document.body.dataset.state = 'opening';
            target.dispatchEvent(event === 'drop'
                ? new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true })
                : new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true }));
        }""",
            [photo, event],
        )
        assert wait_state(page, "ready", "error") == "ready", event
        assert page.evaluate("document.getElementById('photo').width") == 800
    page.mouse.move(*on_stage(page, 100, 300))
    page.mouse.down()
    page.mouse.move(*on_stage(page, 450, 520), steps=6)
    page.mouse.up()
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert mask_area(page) > 0
    assert offline.external == [] and offline.errors == []


def test_clicks_fall_back_to_segment_without_the_decoder(
    server: Server, offline: OfflinePage
) -> None:
    page = offline.page
    page.route("**/api/v1/sam-decoder.onnx", lambda route: route.abort())
    open_photo(page, server.url)
    assert mode(page) == "server"
    assert "Live preview off" in page.inner_text("#decoder-note")
    page.mouse.click(*on_stage(page, *DOG_CLICK))
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert mask_area(page) > 0
    assert len(page.evaluate("editorStats().segmentMs")) == 1


def test_server_refusal_is_shown(server: Server, offline: OfflinePage) -> None:
    page = offline.page
    open_photo(page, server.url)
    brush_stroke(page, (300, 200), (400, 250))
    page.fill("[data-testid=prompt]", "")
    page.click("[data-testid=action-replace]")
    assert wait_state(page, "error", "done") == "error"
    assert "text_prompt" in page.inner_text("[data-testid=error]")


def test_phone_size_touch(server: Server, phone: OfflinePage) -> None:
    page = phone.page
    open_photo(page, server.url)
    stage = page.locator("[data-testid=stage]").bounding_box()
    assert stage is not None and stage["x"] >= 0 and stage["x"] + stage["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    x, y = on_stage(page, *DOG_CLICK)
    page.touchscreen.tap(x, y)
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert mask_area(page) > 0
    page.tap("[data-testid=action-remove]")
    assert wait_state(page, "done", "error") == "done", page.inner_text("[data-testid=error]")
    assert page.evaluate("document.querySelector('[data-testid=result]').naturalHeight") == 534
    assert phone.external == [] and phone.errors == []


def test_browser_decoder_cost(
    server: Server, offline: OfflinePage, record_property: Callable[[str, object], None]
) -> None:
    """What a hover costs in the browser vs. a /segment round trip, and the bytes per photo.
    Recorded (junit properties, -s output), not asserted: timings are for scripts/bench.py."""
    page = offline.page
    open_photo(page, server.url)
    if mode(page) != "browser":
        pytest.fail("the browser could not run the decoder: " + page.inner_text("#decoder-note"))
    for i in range(12):
        page.mouse.move(*on_stage(page, 150 + 30 * i, 300 + 10 * i))
        time.sleep(0.15)
    until(lambda: len(page.evaluate("editorStats().decodeMs")) >= 8, "hover decodes")
    stats = page.evaluate("editorStats()")
    # The server path a click takes without the browser decoder (embedding cached by now).
    segment_ms = []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(3):
            started = time.perf_counter()
            response = client.post(
                "/api/v1/segment",
                files={"image": ("dog.jpg", DOG.read_bytes(), "image/jpeg")},
                data={"request": '{"point_coords": [[200, 450]]}'},
            )
            segment_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    model_bytes = len(httpx.get(f"{server.url}/api/v1/sam-decoder.onnx").content)
    assert stats["modelBytes"] == model_bytes
    assert stats["embeddingBytes"] > 0
    metrics = {
        "decode_ms_median": round(statistics.median(stats["decodeMs"]), 1),
        "decodes": len(stats["decodeMs"]),
        "segment_round_trip_ms_median": round(statistics.median(segment_ms), 1),
        "embedding_response_bytes": stats["embeddingBytes"],
        "decoder_model_bytes": model_bytes,
    }
    record_property("editor_metrics", metrics)
    print("editor metrics:", metrics)
    assert offline.external == [] and offline.errors == []


def test_browser_mask_math_matches_the_server(server: Server, offline: OfflinePage) -> None:
    """The decoder in the browser selects what /segment selects for the same click, and the
    dilation shown is cv2.dilate's."""
    page = offline.page
    open_photo(page, server.url)
    if mode(page) != "browser":
        pytest.fail("the browser could not run the decoder: " + page.inner_text("#decoder-note"))
    page.mouse.click(*on_stage(page, *DOG_CLICK))
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    data_url = page.evaluate("editorMaskPng()")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as upload:
        browser_mask = np.asarray(upload.convert("L")) > 0
    with server.client() as client:
        body = post(client, "segment", DOG, {"point_coords": [list(DOG_CLICK)]}).json()
    server_mask = decode_b64_mask(body["masks"][body["best_index"]])
    assert browser_mask.shape == server_mask.shape == (534, 800)
    assert (browser_mask == server_mask).mean() > 0.98

    rng = np.random.default_rng(0)
    mask = rng.random((61, 97)) > 0.995
    for size in (1, 2, 15, 50):
        dilated = page.evaluate(
            """async ([bits, width, height, size]) => {
            const { dilate } = await import('/static/js/maskops.js');
            return Array.from(dilate(Uint8Array.from(bits), width, height, size));
        }""",
            [mask.astype(int).ravel().tolist(), 97, 61, size],
        )
        expected = cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
        assert np.array_equal(np.asarray(dilated, bool).reshape(61, 97), expected), size
