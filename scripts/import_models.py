"""Import model files into the BentoML model store (honours BENTOML_HOME).

    python scripts/import_models.py sam --type vit_b --checkpoint sam_vit_b_01ec64.pth
    python scripts/import_models.py lama --checkpoint pretrained_models/big-lama
    python scripts/import_models.py sd --model pretrained_models/sd-inpainting
    python scripts/import_models.py sam3 --checkpoint pretrained_models/facebook--sam3
    python scripts/import_models.py tiny
    python scripts/import_models.py resolve   # the tags the server would load now
    python scripts/import_models.py prepare   # the same, importing the demo models if needed
    python scripts/import_models.py check     # the same, failing when a model is missing

Each import checks the files against their official layout first and prints the store tag
it created; a mismatch exits 1 with a message naming the offending key, shape or file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import get_settings  # noqa: E402
from models import store  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    settings = get_settings()
    sam = commands.add_parser("sam", help="a SAM checkpoint (.pth state dict)")
    sam.add_argument("--type", choices=["vit_h", "vit_l", "vit_b"], default=settings.sam_model_type)
    sam.add_argument("--checkpoint", type=Path, help="default: SAM_CHECKPOINT_PATH or the download")
    sam.add_argument("--name")
    lama = commands.add_parser("lama", help="a big-lama folder (config.yaml + models/best.ckpt)")
    lama.add_argument("--checkpoint", type=Path, help="default: LAMA_CHECKPOINT_PATH or download")
    lama.add_argument("--config", type=Path, help="default: LAMA_CONFIG_PATH or DIR/config.yaml")
    lama.add_argument("--name")
    sd = commands.add_parser("sd", help="a diffusers inpainting pipeline folder")
    sd.add_argument("--model", type=Path, help="default: SD_MODEL_PATH or the download")
    sd.add_argument("--name")
    sam3 = commands.add_parser("sam3", help="a facebook/sam3 folder (config.json, safetensors)")
    sam3.add_argument("--checkpoint", type=Path, help="default: the download's folder")
    sam3.add_argument("--name")
    commands.add_parser("tiny", help="build and import the tiny random-weight demo models")
    for name, text in (
        ("resolve", "print the tags the runners would load"),
        ("prepare", "like resolve, importing the tiny demo models when nothing better is there"),
        ("check", "like resolve, exiting 1 when the store lacks a model (never imports demos)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--shell", action="store_true", help="as `export NAME=tag` lines")
    return parser


def _print_tags(tags: dict[str, str], shell: bool) -> None:
    demo = [kind for kind, tag in tags.items() if store.is_demo_tag(tag)]
    for kind, tag in tags.items():
        print(f"export {kind.upper()}_MODEL={tag}" if shell else f"{kind}: {tag}")
    if demo:
        print(
            f"NOTE: {', '.join(demo)} {'is a' if len(demo) == 1 else 'are'} tiny random-weight "
            "DEMO model(s): the API works end to end but the pictures are noise. "
            "Real weights: scripts/download_models.sh (see README, 'Real models').",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
        if args.command in ("sam", "lama", "sd", "sam3", "tiny", "prepare"):
            # Offline tooling, not in the Bento: `resolve` and `check` work without it.
            from tooling import default_paths, model_import
        if args.command == "sam":
            checkpoint = args.checkpoint or default_paths.sam_checkpoint(settings, args.type)
            print(model_import.import_sam(checkpoint, args.type, args.name))
        elif args.command == "lama":
            checkpoint = args.checkpoint or default_paths.lama_dir(settings)
            config = args.config or settings.lama_config_path
            print(model_import.import_lama(checkpoint, args.name, config=config))
        elif args.command == "sd":
            print(model_import.import_sd(args.model or default_paths.sd_dir(settings), args.name))
        elif args.command == "sam3":
            checkpoint = args.checkpoint or default_paths.sam3_dir(settings)
            print(model_import.import_sam3(checkpoint, args.name))
        elif args.command == "tiny":
            for kind, tag in model_import.import_tiny().items():
                print(f"{kind}: {tag}")
        elif args.command == "prepare":
            _print_tags(model_import.prepare_serving(settings), args.shell)
        elif args.command == "check":
            tags = store.resolve_tags(settings)
            if missing := store.missing_entries(tags):
                raise LookupError(
                    "the model store lacks "
                    + "; ".join(
                        f"{kind.upper()}_MODEL={named} (missing)"
                        if (named := getattr(settings, f"{kind}_model"))
                        else f"no {kind} model"
                        for kind in missing
                    )
                    + ". Download and import the weights with scripts/download_models.sh"
                )
            _print_tags(tags, args.shell)
        else:
            _print_tags(store.resolve_tags(settings), args.shell)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
