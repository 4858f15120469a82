"""Fetch the official weights (SAM, big-lama, a diffusers inpainting model) into a models folder.

Only `scripts/download_models.sh` runs this, never the server. Plain URLs (SAM, big-lama) go
through `tooling.fetch` (httpx: resume, retries, progress bar, size and checksum checks); a
diffusers pipeline comes from the Hugging Face Hub through huggingface_hub's
`snapshot_download`, and every file is then checked against the Hub's own checksums.

    python -m tooling.download {sam,lama,sd,all} [--type vit_h] [--models-dir DIR]
                               [--model-id ID] [--base-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from config.settings import get_settings
from tooling.fetch import DownloadError, download_file

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

log = logging.getLogger(__name__)

__all__ = [
    "DownloadError",
    "download_file",
    "download_sam",
    "download_big_lama",
    "download_sd",
    "download_sam3",
]

# --- manifest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Artefact:
    """One official file. Size and checksums are None where no published value was found."""

    name: str
    url: str
    filename: str
    size: int | None
    sha256: str | None
    md5: str | None
    note: str = ""


SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"

# URLs: facebookresearch/segment-anything README ("Model Checkpoints").
# md5: IOPaint's downloader (Sanster/IOPaint, iopaint/plugins/interactive_seg.py), and the first six
#   hex digits of each md5 are the suffix Meta put in the file name (4b8939, 0b3195, 01ec64).
# sha256: micro-sam's pooch registry (computational-cell-analytics/micro-sam, micro_sam/util.py),
#   repeated by several independent download manifests in public code.
# size (bytes): the same value in several independent public download manifests (pinned model
#   downloaders and checkpoint inventories found by exact-string search); one outlier each was
#   ignored.
SAM_CHECKPOINTS: dict[str, Artefact] = {
    "vit_h": Artefact(
        name="sam_vit_h",
        url=f"{SAM_BASE_URL}/sam_vit_h_4b8939.pth",
        filename="sam_vit_h_4b8939.pth",
        size=2_564_550_879,
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        md5="4b8939a88964f0f4ff5f5b2642c598a6",
        note="SAM ViT-H image encoder (636M parameters); the default SAM_MODEL_TYPE",
    ),
    "vit_l": Artefact(
        name="sam_vit_l",
        url=f"{SAM_BASE_URL}/sam_vit_l_0b3195.pth",
        filename="sam_vit_l_0b3195.pth",
        size=1_249_524_607,
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        md5="0b3195507c641ddb6910d2bb5adee89c",
        note="SAM ViT-L image encoder (308M parameters)",
    ),
    "vit_b": Artefact(
        name="sam_vit_b",
        url=f"{SAM_BASE_URL}/sam_vit_b_01ec64.pth",
        filename="sam_vit_b_01ec64.pth",
        size=375_042_383,
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        md5="01ec64d29a2fca3f0661936605ae66f8",
        note="SAM ViT-B image encoder (91M parameters); the CPU choice",
    ),
}

# The link in advimman/lama's README. No size or checksum is published for the zip (the Hub's
# file list only says "381 MB"), so none is pinned here; the Hub's own LFS sha256 (sent as
# X-Linked-Etag on the /resolve redirect) is checked instead, see download_file.
BIG_LAMA = Artefact(
    name="big-lama",
    url="https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip",
    filename="big-lama.zip",
    size=None,
    sha256=None,
    md5=None,
    note="zip holding big-lama/config.yaml and big-lama/models/best.ckpt; about 381 MB",
)
LAMA_REQUIRED_FILES = ("config.yaml", "models/best.ckpt")

# Still published and not gated as of late 2026 (runwayml/* was taken down in 2024 and
# stabilityai/stable-diffusion-2-* in November 2025). Its safetensors exist only as the fp16
# variant; the full-precision weights are pickled .bin files.
DEFAULT_SD_VARIANT = "fp16"


# --- SAM and big-lama -----------------------------------------------------------------------


def download_sam(
    model_type: str, models_dir: Path, base_url: str | None = None, *, progress: bool = True
) -> Path:
    """Fetch the official SAM checkpoint of `model_type` (vit_h, vit_l, vit_b).

    `base_url` points at a mirror holding the same file names (the checksums still apply).
    """
    try:
        artefact = SAM_CHECKPOINTS[model_type]
    except KeyError:
        raise ValueError(
            f"unknown SAM model type {model_type!r}; choose from {', '.join(SAM_CHECKPOINTS)}"
        ) from None
    url = f"{base_url.rstrip('/')}/{artefact.filename}" if base_url else artefact.url
    return download_file(
        url,
        Path(models_dir) / artefact.filename,
        expected_size=artefact.size,
        sha256=artefact.sha256,
        md5=artefact.md5,
        progress=progress,
    )


def download_big_lama(models_dir: Path, url: str | None = None, *, progress: bool = True) -> Path:
    """Fetch big-lama.zip and unpack it into `models_dir/big-lama`; return that folder."""
    target = Path(models_dir) / "big-lama"
    if all((target / name).is_file() for name in LAMA_REQUIRED_FILES):
        log.info("%s already unpacked", target)
        return target
    archive = download_file(
        url or BIG_LAMA.url,
        Path(models_dir) / BIG_LAMA.filename,
        expected_size=BIG_LAMA.size,
        sha256=BIG_LAMA.sha256,
        md5=BIG_LAMA.md5,
        progress=progress,
    )
    try:
        _unpack_big_lama(archive, target)
    except DownloadError:
        # A bad archive must not be taken as "already downloaded" by the next run.
        archive.unlink(missing_ok=True)
        raise
    archive.unlink()
    return target


def _unpack_big_lama(archive: Path, target: Path) -> None:
    """Extract into a scratch folder beside `target`, check it, then rename it into place."""
    scratch = Path(tempfile.mkdtemp(prefix=".big-lama-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info, scratch, archive)
                zf.extractall(scratch)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive}: not a valid zip archive ({exc})") from exc
        root = scratch / "big-lama" if (scratch / "big-lama").is_dir() else scratch
        missing = [name for name in LAMA_REQUIRED_FILES if not (root / name).is_file()]
        if missing:
            raise DownloadError(f"{archive}: archive lacks big-lama/{', big-lama/'.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_member(info: zipfile.ZipInfo, root: Path, archive: Path) -> None:
    """Reject members that would land outside `root` (absolute, '..', drive letters, links)."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    escapes = (
        name.startswith("/")
        or re.match(r"^[A-Za-z]:", name) is not None
        or ".." in parts
        or stat.S_ISLNK(info.external_attr >> 16)
        or not (root / name).resolve().is_relative_to(root.resolve())
    )
    if escapes:
        raise DownloadError(f"{archive}: refusing unsafe archive member {info.filename!r}")


# --- a diffusers pipeline from the Hugging Face Hub -------------------------------------------

# The pipeline runs with safety_checker=None; its weights are 1.2 GB the server never loads.
SKIPPED_SD_COMPONENTS = frozenset({"safety_checker"})
_SD_SMALL_FILES = frozenset(
    {
        "config.json",
        "scheduler_config.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "spiece.model",
        "tokenizer.model",
    }
)
_WEIGHT = re.compile(
    r"(?P<base>[^.]+?)(?P<shard>-\d{5}-of-\d{5})?(?:\.(?P<variant>[^.]+))?\.(?P<ext>safetensors|bin)"
)
_WEIGHT_INDEX = re.compile(
    r"(?P<base>[^.]+)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>[^.]+))?\.json"
)
SD_INFO_FILE = "download_info.json"


def select_sd_files(
    repo_files: Iterable[str], variant: str | None = DEFAULT_SD_VARIANT
) -> list[str]:
    """The files a diffusers pipeline needs, one weight format per component.

    Keeps model_index.json, each component's config and tokenizer files, and per component the
    first weight set that exists in this order: `variant` safetensors, plain safetensors,
    `variant` .bin, plain .bin (with variant=None: plain before fp16). Skips the safety checker,
    root-level single-file checkpoints, and the pickled duplicates of safetensors weights.
    """
    files = set(repo_files)
    selected = ["model_index.json"] if "model_index.json" in files else []
    components: dict[str, list[str]] = {}
    for path in files:
        parts = path.split("/")
        if len(parts) == 2 and parts[0] not in SKIPPED_SD_COMPONENTS:
            components.setdefault(parts[0], []).append(parts[1])
    for component, names in components.items():
        picked = [n for n in names if n in _SD_SMALL_FILES] + _pick_weights(names, variant)
        selected += [f"{component}/{name}" for name in picked]
    return sorted(selected)


def _pick_weights(names: list[str], variant: str | None) -> list[str]:
    sets: dict[tuple[str, str | None], list[str]] = {}
    for name in names:
        match = _WEIGHT_INDEX.fullmatch(name) or _WEIGHT.fullmatch(name)
        if match:
            sets.setdefault((match["ext"], match["variant"]), []).append(name)
    variants = [variant, None] if variant else [None, DEFAULT_SD_VARIANT]
    for ext in ("safetensors", "bin"):
        for var in variants:
            if (ext, var) in sets:
                return sets[(ext, var)]
    return []


def download_sd(
    model_id: str,
    dest: Path,
    *,
    endpoint: str | None = None,
    revision: str = "main",
    variant: str | None = DEFAULT_SD_VARIANT,
    token: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the pipeline files of a diffusers inpainting model from the Hub into `dest`.

    Resolves `revision` to a commit, picks files with `select_sd_files`, downloads them with
    `huggingface_hub.snapshot_download` (resume, progress, Xet where the Hub offers it), then
    checks every file against the Hub's tree listing (LFS sha256 or git blob sha1) and writes
    `download_info.json` (model id, commit, variant) for the import step. `endpoint` overrides
    HF_ENDPOINT; `token` defaults to HF_TOKEN or the saved login (gated models need one).
    """
    dest = Path(dest)
    _refuse_other_model(dest, model_id)
    commit, tree, selected = _hub_snapshot(
        model_id,
        dest,
        lambda files: select_sd_files(files, variant),
        "model_index.json",
        "a diffusers pipeline",
        endpoint=endpoint,
        revision=revision,
        token=token,
        progress=progress,
    )
    _verify_sd_files(dest, model_id, {path: tree[path] for path in selected})
    _check_pipeline(dest, model_id, selected)
    info = {
        "model_id": model_id,
        "revision": revision,
        "commit": commit,
        # What to pass as from_pretrained(variant=...); diffusers falls back to plain files.
        "variant": _weights_variant(selected),
        "files": selected,
    }
    (dest / SD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return dest


# What serving SAM 3 needs from facebook/sam3 (the repo also holds the original sam3.pt).
SAM3_FILES = (
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


def download_sam3(
    model_id: str,
    dest: Path,
    *,
    endpoint: str | None = None,
    revision: str = "main",
    token: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch SAM 3's transformers files (`SAM3_FILES` the repo holds) into `dest`, each checked
    against the Hub's checksums. facebook/sam3 is gated: accept its licence, set HF_TOKEN."""
    dest = Path(dest)
    _refuse_other_model(dest, model_id)
    commit, tree, selected = _hub_snapshot(
        model_id,
        dest,
        lambda files: sorted(set(files) & set(SAM3_FILES)),
        "model.safetensors",
        "a transformers SAM 3",
        endpoint=endpoint,
        revision=revision,
        token=token,
        progress=progress,
    )
    _verify_sd_files(dest, model_id, {path: tree[path] for path in selected})
    info = {"model_id": model_id, "revision": revision, "commit": commit, "files": selected}
    (dest / SD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return dest


def _hub_snapshot(
    model_id: str,
    dest: Path,
    select: Callable[[Iterable[str]], list[str]],
    marker: str,
    kind: str,
    *,
    endpoint: str | None,
    revision: str,
    token: str | None,
    progress: bool,
) -> tuple[str, dict[str, RepoFile], list[str]]:
    """Resolve `revision` to a commit, download the files `select` picks from the repo's
    tree into `dest` (the repo must hold `marker`); return commit, tree and the selection."""
    import httpx2
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    api = HfApi(endpoint=endpoint, token=token)
    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        commit = api.model_info(model_id, revision=revision).sha
        if commit is None:
            raise DownloadError(f"{model_id}@{revision}: the Hub returned no commit")
        tree = {
            entry.path: entry
            for entry in api.list_repo_tree(model_id, revision=commit, recursive=True)
            if isinstance(entry, RepoFile)
        }
        if marker not in tree:
            raise DownloadError(f"{model_id}: no {marker}, not {kind}")
        selected = select(tree)
        snapshot_download(
            model_id,
            revision=commit,
            local_dir=dest,
            allow_patterns=selected,
            endpoint=endpoint,
            token=token,
        )
    except GatedRepoError as exc:
        raise DownloadError(
            f"{model_id} is gated: accept its licence on the Hub, then set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(
            f"{model_id}: repository not found (removed, private or misspelt)"
        ) from exc
    except (OSError, httpx2.HTTPError) as exc:
        raise DownloadError(f"{model_id}: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        if quiet:
            enable_progress_bars()

    return commit, tree, selected


def _refuse_other_model(dest: Path, model_id: str) -> None:
    info_file = dest / SD_INFO_FILE
    if info_file.is_file():
        previous = json.loads(info_file.read_text()).get("model_id")
        if previous != model_id:
            raise DownloadError(f"{dest} holds {previous}; pick another folder for {model_id}")


def _weights_variant(selected: list[str]) -> str | None:
    names = (PurePosixPath(path).name for path in selected)
    matches = (_WEIGHT_INDEX.fullmatch(n) or _WEIGHT.fullmatch(n) for n in names)
    variants = sorted({m["variant"] for m in matches if m and m["variant"]})
    return variants[0] if variants else None


def _verify_sd_files(dest: Path, model_id: str, expected: dict[str, RepoFile]) -> None:
    """Check size and Hub checksum of each file; delete bad ones so a rerun fetches them."""
    problems = []
    for path, entry in expected.items():
        local = dest / path
        if not local.is_file():
            problems.append(f"{path}: missing")
            continue
        size = local.stat().st_size
        if size != entry.size:
            problem: str | None = f"size {size}, expected {entry.size}"
        elif entry.lfs is not None:
            got = _file_digest(local, "sha256")
            problem = (
                None if got == entry.lfs.sha256 else f"sha256 {got}, expected {entry.lfs.sha256}"
            )
        else:
            # Small files are plain git blobs: the Hub lists their git object id.
            got = _file_digest(local, "sha1", header=f"blob {size}\0".encode())
            problem = None if got == entry.blob_id else f"git sha1 {got}, expected {entry.blob_id}"
        if problem:
            local.unlink()
            problems.append(f"{path}: {problem}")
    if problems:
        raise DownloadError(
            f"{model_id}: bad files (removed, rerun to fetch): {'; '.join(problems)}"
        )


def _check_pipeline(dest: Path, model_id: str, selected: list[str]) -> None:
    """Every component model_index.json names (but the skipped ones) must have files."""
    index = json.loads((dest / "model_index.json").read_text())
    empty = [
        name
        for name, spec in index.items()
        if not name.startswith("_")
        and name not in SKIPPED_SD_COMPONENTS
        and isinstance(spec, list)
        and spec
        and spec[0] is not None
        and not any(path.startswith(f"{name}/") for path in selected)
    ]
    if empty:
        raise DownloadError(f"{model_id}: no usable files for {', '.join(sorted(empty))}")


def _file_digest(path: Path, algorithm: str, header: bytes = b"") -> str:
    digest = hashlib.new(algorithm, header)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sd_dir_for(model_id: str, models_dir: Path) -> Path:
    """Where the CLI puts a pipeline: one folder per model, so two models never mix files."""
    return Path(models_dir) / model_id.replace("/", "--")


# --- command line -------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.download",
        description="Download the official SAM, big-lama and Stable Diffusion inpainting weights.",
    )
    settings = get_settings()
    parser.add_argument("what", choices=("sam", "lama", "sd", "sam3", "all"))
    parser.add_argument(
        "--type", dest="sam_type", choices=sorted(SAM_CHECKPOINTS), default=settings.sam_model_type
    )
    parser.add_argument("--models-dir", type=Path, default=settings.models_dir)
    parser.add_argument(
        "--model-id", default=settings.sd_model_id, help="diffusers inpainting repo"
    )
    parser.add_argument("--sam3-model-id", default=settings.sam3_model_id, help="SAM 3 repo")
    parser.add_argument("--revision", default="main", help="branch, tag or commit of --model-id")
    parser.add_argument(
        "--variant",
        choices=("fp16", "full"),
        default=settings.sd_variant,
        help="SD weights to prefer: fp16 safetensors (half the bytes) or full precision",
    )
    parser.add_argument(
        "--base-url",
        help="mirror to fetch from: a folder URL holding the SAM files (sam), the zip URL "
        "(lama) or a Hub endpoint (sd, sam3)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--print-path", action="store_true", help="print only the resulting path(s), for scripts"
    )
    args = parser.parse_args(argv)
    if args.what == "all" and args.base_url:
        parser.error("--base-url names one source: use it with sam, lama or sd, not all")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    progress = not args.no_progress
    models_dir: Path = args.models_dir.resolve()
    results: list[tuple[str, Path]] = []
    try:
        if args.what in ("sam", "all"):
            path = download_sam(args.sam_type, models_dir, args.base_url, progress=progress)
            results.append((f"SAM {args.sam_type} checkpoint", path))
        if args.what in ("lama", "all"):
            path = download_big_lama(models_dir, args.base_url, progress=progress)
            results.append(("big-lama folder", path))
        if args.what in ("sd", "all"):
            path = download_sd(
                args.model_id,
                sd_dir_for(args.model_id, models_dir),
                endpoint=args.base_url,
                revision=args.revision,
                variant=None if args.variant == "full" else args.variant,
                progress=progress,
            )
            results.append((f"SD pipeline {args.model_id}", path))
        if args.what in ("sam3", "all"):
            path = download_sam3(
                args.sam3_model_id,
                sd_dir_for(args.sam3_model_id, models_dir),
                endpoint=args.base_url,
                progress=progress,
            )
            results.append((f"SAM 3 {args.sam3_model_id}", path))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    for label, path in results:
        print(path if args.print_path else f"{label}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
