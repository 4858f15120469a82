#!/usr/bin/env python3
"""Run a folder of photos through a running server; results in a folder mirroring it.

    scripts/batch.py INPUT_DIR OUTPUT_DIR --url URL --operation remove|fill|replace
        [--masks DIR | --manifest FILE | --point X,Y | --box X0,Y0,X1,Y1] [--prompt TEXT]
        [--report FILE] [--overwrite]

The API key comes from INPAINT_API_KEY (and the URL from INPAINT_URL when --url is not
given). The concurrency is the server's own (`capacity` in /api/v1/ready). A re-run skips the
photos whose result exists; Ctrl+C cancels the jobs in flight. Exit status: 0 when every
photo succeeded or was skipped, 1 when any failed, 2 for a usage error, 3 when the server
cannot take the batch, 130 when interrupted. The last line on stdout gives the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch.plan import OPERATIONS, PlanError, plan  # noqa: E402
from batch.report import Reporter  # noqa: E402
from batch.run import run_batch  # noqa: E402
from batch.server import BatchClient, ServerUnavailable  # noqa: E402
from config.settings import ClientSettings  # noqa: E402

EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_INTERRUPTED = 1, 2, 3, 130
REPORT_NAME = "batch-report.jsonl"


def _numbers(count: int) -> Any:
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers: {text}")
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input_dir", type=Path, help="photos (JPEG, PNG, WebP; subfolders too)")
    p.add_argument("output_dir", type=Path, help="results, in the input's folder layout")
    p.add_argument("--url", help="the server (default INPAINT_URL, else http://localhost:8000)")
    p.add_argument("--operation", choices=OPERATIONS, default="remove")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--masks", type=Path, help="masks named as the photos (a/b.png for a/b.jpg)")
    what.add_argument(
        "--manifest", type=Path, help="JSONL or .csv: per photo `file`, `operation`, request JSON"
    )
    what.add_argument(
        "--point",
        type=_numbers(2),
        action="append",
        metavar="X,Y",
        help="a click, in pixels, for every photo (repeat for more clicks)",
    )
    what.add_argument(
        "--box", type=_numbers(4), metavar="X0,Y0,X1,Y1", help="a box for every photo"
    )
    p.add_argument("--prompt", help="text_prompt for fill and replace")
    p.add_argument("--negative-prompt")
    p.add_argument("--steps", type=int, help="num_inference_steps (fill, replace)")
    p.add_argument("--guidance", type=float, help="guidance_scale (fill, replace)")
    p.add_argument("--seed", type=int, help="same seed, same output (fill, replace)")
    p.add_argument("--dilate", type=int, help="dilate_kernel_size (default per operation)")
    p.add_argument("--format", choices=("png", "jpeg", "webp"), default="png", dest="fmt")
    p.add_argument("--save-masks", action="store_true", help="also write <stem>.mask.png")
    p.add_argument("--report", type=Path, help=f"JSONL report (default OUTPUT_DIR/{REPORT_NAME})")
    p.add_argument("--overwrite", action="store_true", help="redo photos whose result exists")
    p.add_argument("--concurrency", type=int, help="override the server's own capacity")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per HTTP call")
    p.add_argument("--retries", type=int, default=10, help="tries again after 429/503")
    return p


def _defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the command line gives every photo (a manifest row overrides)."""
    return {
        "point_coords": args.point,
        "box": args.box,
        "text_prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "dilate_kernel_size": args.dilate,
        "output_format": args.fmt,
    }


async def _main(args: argparse.Namespace, url: str, api_key: str | None) -> int:
    items = plan(
        args.input_dir,
        args.output_dir,
        args.operation,
        _defaults(args),
        masks_dir=args.masks,
        manifest=args.manifest,
        keep_masks=args.save_masks,
    )
    async with BatchClient(url, api_key, args.timeout, retries=args.retries) as client:
        try:
            await client.connect()
        except ServerUnavailable as exc:
            print(f"batch: {exc}", file=sys.stderr)
            return EXIT_SERVER
        reporter = Reporter(args.report or args.output_dir / REPORT_NAME, len(items))
        try:
            counts = await run_batch(
                items, client, reporter, args.output_dir, args.overwrite, args.concurrency
            )
        finally:
            seconds = reporter.close()
    print(counts.summary(seconds), flush=True)
    if counts.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if counts.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = ClientSettings()
    if not args.input_dir.is_dir():
        print(f"batch: {args.input_dir} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    if args.operation != "remove" and not args.prompt and args.manifest is None:
        print(f"batch: --operation {args.operation} needs --prompt", file=sys.stderr)
        return EXIT_USAGE
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        return asyncio.run(_main(args, args.url or settings.url, api_key))
    except PlanError as exc:
        print(f"batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a second Ctrl+C: stop at once
        print("batch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
