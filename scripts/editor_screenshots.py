"""Screenshots of the editor for the README: docs/editor-{hover,mask,result}.png.

Runs headless Chromium (Debian's `chromium`) against a running server, on
examples/remove/dog.jpg with the published click (200, 450):

    .venv/bin/python scripts/editor_screenshots.py http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

PHOTO = REPO_ROOT / "examples" / "remove" / "dog.jpg"
CLICK = (200, 450)
# Brush strokes over the dog (photo pixels), for a mask that shows the object even with the
# tiny random-weight SAM.
DOG_STROKES = [
    ((40, 500), (300, 500)),
    ((60, 420), (320, 420)),
    ((120, 350), (330, 350)),
    ((220, 280), (320, 280)),
]
VIEWPORT = {"width": 1200, "height": 720}


def on_stage(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("[data-testid=stage]").bounding_box()
    assert box is not None
    with Image.open(PHOTO) as photo:
        width, height = photo.size
    return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height


def save_small(png: bytes, path: Path) -> None:
    """256 colours: a fraction of the bytes, still readable."""
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    print(f"{path.relative_to(REPO_ROOT)}: {path.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    args = parser.parse_args()
    executable = chromium_path()
    if executable is None:
        sys.exit("no chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{args.url.rstrip('/')}/")
        page.set_input_files("[data-testid=open-image]", PHOTO)
        page.wait_for_selector("body[data-state=ready]", state="attached", timeout=180_000)
        page.mouse.move(*on_stage(page, *CLICK))
        page.wait_for_selector("[data-testid=mask-preview][data-hover='1']", timeout=60_000)
        save_small(page.screenshot(), args.out / "editor-hover.png")
        page.mouse.click(*on_stage(page, *CLICK))
        page.locator("#candidates button").nth(2).wait_for(timeout=60_000)
        page.click("#clear")
        page.click("[data-testid=brush]")
        page.fill("#brush-size", "80")
        page.dispatch_event("#brush-size", "input")
        for start, end in DOG_STROKES:
            page.mouse.move(*on_stage(page, *start))
            page.mouse.down()
            page.mouse.move(*on_stage(page, *end), steps=8)
            page.mouse.up()
        page.click(".action-tab[data-action=fill]")
        page.mouse.move(5, 5)
        save_small(page.screenshot(), args.out / "editor-mask.png")
        page.click("[data-testid=action-remove]")
        page.wait_for_selector("body[data-state=done]", state="attached", timeout=180_000)
        # Most of the removed region on the "after" side of the slider.
        page.fill("#compare-slider", "12")
        page.dispatch_event("#compare-slider", "input")
        save_small(page.screenshot(), args.out / "editor-result.png")
        browser.close()


if __name__ == "__main__":
    main()
