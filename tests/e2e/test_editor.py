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
# axe-core, pinned in web/package.json (a devDependency: never served by the server); the
# tests hand it to the page at a same-origin URL, so the page's CSP applies to it as well.
AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
AXE_URL = "/__tests__/axe.min.js"


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


def open_photo(page: Page, url: str, photo: Path = DOG, query: str = "") -> None:
    page.goto(f"{url}/{query}")
    assert page.evaluate("document.body.dataset.state") == "empty"
    page.set_input_files("[data-testid=open-image]", photo)
    assert wait_state(page, "ready", "error") == "ready", page.inner_text("[data-testid=error]")


def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until the focused element matches `selector`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    pytest.fail(f"Tab never reached {selector}")


def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run web/build.sh (npm ci installs axe-core)")
    if not page.evaluate("typeof window.axe === 'object'"):
        page.route(
            f"**{AXE_URL}",
            lambda route: route.fulfill(body=AXE.read_bytes(), content_type="text/javascript"),
        )
        page.add_script_tag(url=AXE_URL)
    result = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


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
    # One move at a time, each waited for: moves during a decode would collapse.
    for i in range(8):
        done = len(page.evaluate("editorStats().decodeMs"))
        page.mouse.move(*on_stage(page, 150 + 30 * i, 300 + 10 * i))
        until(lambda n=done: len(page.evaluate("editorStats().decodeMs")) > n, "a hover decode")
    stats = page.evaluate("editorStats()")
    previews = page.evaluate("performance.getEntriesByName('hover-preview').map((e) => e.duration)")
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
        "hover_preview_ms_median": round(statistics.median(previews), 1),
        "decoder_threads": stats["threads"],
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
    # What is uploaded is exactly what the canvas shows (hover previews are never uploaded).
    page.mouse.move(0, 0)
    shown = page.evaluate(
        """() => {
        const c = document.querySelector('[data-testid=mask-preview]');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from({ length: c.width * c.height }, (_, i) => data[4 * i + 3] > 0 ? 1 : 0);
    }"""
    )
    assert np.array_equal(np.asarray(shown, bool).reshape(534, 800), browser_mask)

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


def test_axe_finds_no_serious_violations(server: Server, offline: OfflinePage) -> None:
    """axe-core on each screen: empty, a selection with its candidates, the result, help."""
    page = offline.page
    page.goto(f"{server.url}/")
    found = {"empty": axe_violations(page)}
    page.set_input_files("[data-testid=open-image]", DOG)
    assert wait_state(page, "ready", "error") == "ready"
    page.mouse.click(*on_stage(page, *DOG_CLICK))
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    found["selected"] = axe_violations(page)
    page.click("[data-testid=action-remove]")
    assert wait_state(page, "done", "error") == "done"
    found["result"] = axe_violations(page)
    page.keyboard.press("?")
    found["help"] = axe_violations(page)
    assert found == {"empty": [], "selected": [], "result": [], "help": []}
    assert offline.external == [] and offline.errors == []


def test_keyboard_only_remove(server: Server, offline: OfflinePage, tmp_path: Path) -> None:
    """Open, select with the crosshair, choose a candidate and a tab, remove, download: all
    by keyboard. Enter on a focused button acts on that button, not on the edit."""
    page = offline.page
    # Listening before the key press: Playwright intercepts the chooser from then on.
    page.on("filechooser", lambda chooser: chooser.set_files(DOG))
    page.goto(f"{server.url}/")
    tab_to(page, "#open-button")
    page.keyboard.press("Enter")
    assert wait_state(page, "ready", "error") == "ready"

    tab_to(page, "[data-testid=stage]")
    assert page.is_visible("[data-testid=crosshair]")
    # The crosshair starts at the centre (400, 267); a step is 1/100 of the long side (8 px),
    # ten with Shift.
    for key, times in (("Shift+ArrowLeft", 2), ("ArrowLeft", 5), ("Shift+ArrowDown", 2)):
        for _ in range(times):
            page.keyboard.press(key)
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    assert page.get_attribute("[data-testid=stage]", "aria-valuetext") == "crosshair at 200, 451"
    page.keyboard.press("Enter")
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert mask_area(page) > 0

    tab_to(page, "[data-testid=candidate-3]")
    page.keyboard.press("Enter")
    assert page.evaluate("document.body.dataset.state") == "ready", "Enter ran the edit"
    assert page.get_attribute("[data-testid=candidate-3]", "aria-pressed") == "true"
    tab_to(page, "[role=tab][aria-selected=true]")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-fill", "aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-fill"
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute("#tab-remove", "aria-selected") == "true"
    tab_to(page, "[role=radio][aria-checked=true][data-tool]")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("[data-testid=brush]", "aria-checked") == "true"
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute("#tool-sam", "aria-checked") == "true"

    data_url = page.evaluate("editorMaskPng()")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as upload:
        selected = np.asarray(upload.convert("L")) > 0
    tab_to(page, "[data-testid=action-remove]")
    page.keyboard.press("Enter")
    assert wait_state(page, "done", "error") == "done", page.inner_text("[data-testid=error]")
    tab_to(page, "[data-testid=download]")
    with page.expect_download() as download_info:
        page.keyboard.press("Enter")
    saved = tmp_path / "result.png"
    download_info.value.save_as(saved)
    with Image.open(saved) as image:
        assert image.size == (800, 534)
        changed = np.any(np.asarray(image.convert("RGB")) != load_rgb(DOG), axis=-1)
    assert changed.any()
    assert not (changed & ~dilate(selected, 15 + 4)).any()
    assert offline.external == [] and offline.errors == []


def test_a_refused_photo_never_selects_with_the_previous_embedding(
    server: Server, offline: OfflinePage, tmp_path: Path
) -> None:
    page = offline.page
    open_photo(page, server.url)
    # More pixels than the server's MAX_IMAGE_PIXELS (6 MP): the browser opens it, the
    # server refuses it.
    large = tmp_path / "large.png"
    Image.new("RGB", (2600, 2400), (90, 120, 150)).save(large)
    page.evaluate("document.body.dataset.state = 'opening'")
    page.set_input_files("[data-testid=open-image]", large)
    assert wait_state(page, "ready", "error") == "error"
    decodes = len(page.evaluate("editorStats().decodeMs"))
    page.mouse.move(*on_stage(page, 1200, 1000))
    page.mouse.click(*on_stage(page, 1300, 1200))
    time.sleep(0.5)
    assert "refused this photo" in page.inner_text("[data-testid=error]")
    assert mask_area(page) == 0 and painted_pixels(page) == 0
    stats = page.evaluate("editorStats()")
    assert len(stats["decodeMs"]) == decodes and stats["segmentMs"] == []
    assert page.locator("#candidates button").count() == 0


def test_a_failed_decoder_load_is_retried(server: Server, offline: OfflinePage) -> None:
    """A decoder that failed to load (here a 401, as before an API key is given) is tried
    again with the next photo, not given up for the session."""
    page = offline.page
    calls: list[str] = []

    def first_refused(route) -> None:
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(status=401, content_type="application/json", body="{}")
        else:
            route.continue_()

    page.route("**/api/v1/sam-decoder.onnx*", first_refused)
    page.goto(f"{server.url}/")
    until(lambda: "Live preview off" in page.inner_text("#decoder-note"), "the failed load")
    page.set_input_files("[data-testid=open-image]", DOG)
    assert wait_state(page, "ready", "error") == "ready"
    assert mode(page) == "browser" and len(calls) == 2
    assert "Live preview: fp32" in page.inner_text("#decoder-note")


def test_undo_history_stays_within_its_byte_budget(server: Server, offline: OfflinePage) -> None:
    """40 edits of a 24-MP photo's mask: the history keeps them within its budget (raw, they
    would be 960 MB), and undo gives back each mask exactly."""
    page = offline.page
    page.goto(f"{server.url}/")
    report = page.evaluate(
        """async () => {
        const { History, HISTORY_BUDGET_BYTES } = await import('/static/js/history.js');
        const width = 6000, height = 4000;
        const sums = [];
        const history = new History();
        for (let i = 0; i < 40; i += 1) {
            const mask = new Uint8Array(width * height);
            for (let y = 100 + i * 20; y < 2000 + i * 20; y += 1) {
                mask.fill(1, y * width + 100 + i * 50, y * width + 3000 + i * 50 - (y % 7));
            }
            let sum = 0;
            for (let j = 0; j < mask.length; j += 1) sum += mask[j] * (j % 9973);
            sums.push(sum);
            history.push({ mask, points: [], box: null, lowRes: new Float32Array(256 * 256) });
        }
        const kept = history.past.length;
        const bytes = history.bytes;
        const restored = [];
        for (let k = 0; k < 5; k += 1) {
            const { mask } = history.undo();
            let sum = 0;
            for (let j = 0; j < mask.length; j += 1) sum += mask[j] * (j % 9973);
            restored.push(sum);
        }
        // Noise compresses badly: the budget then drops old entries instead of growing.
        const noisy = new History();
        for (let i = 0; i < 4; i += 1) {
            const mask = new Uint8Array(width * height);
            for (let j = 0; j < mask.length; j += 1) mask[j] = Math.random() < 0.5 ? 1 : 0;
            noisy.push({ mask, points: [], box: null, lowRes: null });
        }
        return {
            kept, bytes, budget: HISTORY_BUDGET_BYTES, restored,
            expected: sums.slice(-6, -1).reverse(), noisyBytes: noisy.bytes,
        };
    }"""
    )
    assert report["kept"] == 39, "all 39 earlier masks fit"
    assert 0 < report["bytes"] <= report["budget"] <= 64 * 1024 * 1024
    assert report["restored"] == report["expected"]
    assert report["noisyBytes"] <= report["budget"]


def test_the_page_is_isolated_and_decodes_with_threads(
    server: Server, offline: OfflinePage
) -> None:
    """COOP/COEP make the page cross-origin isolated, so onnxruntime-web runs with the
    cores the browser reports; each hover preview is a performance.measure."""
    page_headers = httpx.get(f"{server.url}/").headers
    assert page_headers["cross-origin-opener-policy"] == "same-origin"
    assert page_headers["cross-origin-embedder-policy"] == "require-corp"
    asset = httpx.get(f"{server.url}/static/vendor/ort-wasm-simd-threaded.mjs").headers
    assert asset["cross-origin-embedder-policy"] == "require-corp"
    assert asset["cross-origin-resource-policy"] == "same-origin"

    page = offline.page
    open_photo(page, server.url)
    assert page.evaluate("crossOriginIsolated") is True
    stats = page.evaluate("editorStats()")
    cores = page.evaluate("navigator.hardwareConcurrency")
    assert mode(page) == "browser" and stats["threads"] == cores
    assert f"{cores} thread" in page.inner_text("#decoder-note")
    for i in range(6):
        page.mouse.move(*on_stage(page, 150 + 40 * i, 300 + 20 * i))
        time.sleep(0.2)
    until(
        lambda: page.evaluate("performance.getEntriesByName('hover-preview').length") >= 1,
        "a hover-preview measure",
    )
    durations = page.evaluate(
        "performance.getEntriesByName('hover-preview').map((e) => e.duration)"
    )
    assert all(d > 0 for d in durations)
    # Moves that arrive during a decode collapse: never more previews than moves.
    assert len(durations) <= 6
    assert offline.errors == []


def test_the_uint8_decoder_in_the_page(server: Server, offline: OfflinePage) -> None:
    page = offline.page
    open_photo(page, server.url, query="?decoder=uint8")
    assert mode(page) == "browser"
    stats = page.evaluate("editorStats()")
    uint8 = httpx.get(f"{server.url}/api/v1/sam-decoder.onnx", params={"precision": "uint8"})
    assert stats["variant"] == "uint8" and stats["modelBytes"] == len(uint8.content)
    assert page.input_value("[data-testid=decoder-variant]") == "uint8"
    page.mouse.click(*on_stage(page, *DOG_CLICK))
    page.locator("#candidates button").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert mask_area(page) > 0
    # Switching back loads fp32 and keeps the photo's embedding.
    page.select_option("[data-testid=decoder-variant]", "fp32")
    until(lambda: page.evaluate("editorStats().variant") == "fp32", "the fp32 decoder")
    page.mouse.click(*on_stage(page, 300, 200))
    until(lambda: len(page.evaluate("editorStats().decodeMs")) >= 2, "a decode with fp32")
    assert offline.errors == []


def test_select_by_words_toggles_instances_then_removes(
    server: Server, offline: OfflinePage
) -> None:
    """The tiny SAM 3 finds instances of "person" at a low threshold (its scores are ~0.25);
    each is a toggle, the union of those on is the mask, and remove paints that mask."""
    page = offline.page
    open_photo(page, server.url)
    page.fill("[data-testid=select-text]", "person")
    page.fill("[data-testid=select-text-threshold]", "0.1")
    page.keyboard.press("Enter")  # in the field: submits the search, not an edit
    page.locator("[data-testid=instance-1]").wait_for(timeout=TIMEOUT_MS)
    toggles = page.locator("[data-testid^=instance-]")
    count = toggles.count()
    assert count >= 1
    assert all(toggles.nth(i).is_checked() for i in range(count))
    union = mask_area(page)
    assert union > 0
    toggles.nth(0).uncheck()
    assert mask_area(page) <= union
    for i in range(1, count):
        toggles.nth(i).uncheck()
    assert mask_area(page) == 0, "every instance off: nothing selected"
    for i in range(count):
        toggles.nth(i).check()
    assert mask_area(page) == union
    assert axe_violations(page) == []

    page.click("[data-testid=action-remove]")
    assert wait_state(page, "done", "error") == "done", page.inner_text("[data-testid=error]")
    assert offline.external == [] and offline.errors == []
