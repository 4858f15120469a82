"""What to do with each photo of a folder: the work list of a batch run.

A photo's instructions come from one of three places: a folder of masks matched by name
(IOPaint's convention: `masks/a/b.png` for `photos/a/b.jpg`), a manifest (JSONL or CSV, one
row per photo: the route's own request JSON plus `file` and `operation`), or one prompt given
for every photo. Each result is named after its photo's stem, in a folder mirroring the input.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
MASK_SUFFIXES = (".png", ".bmp", ".webp", ".jpg", ".jpeg")  # first found wins
OPERATIONS = ("remove", "fill", "replace")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
# Request fields only Stable Diffusion's routes take (remove refuses them).
GENERATE_FIELDS = frozenset(
    {"text_prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "seed"}
)
MASK_SUFFIX = ".mask.png"  # beside the result, when masks are kept


class PlanError(ValueError):
    """The command line or the manifest cannot be turned into work (nothing has started)."""


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


@dataclass(frozen=True)
class Item:
    """One photo's work: which route, with which request JSON (and mask file), into where."""

    file: str  # relative to INPUT_DIR, with / separators: the report's key
    source: Path
    operation: str
    request: dict[str, Any]
    output: Path
    mask: Path | None = None
    mask_output: Path | None = None
    problem: Problem | None = None  # known before any request: recorded as failed


def find_photos(input_dir: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """JPEG, PNG and WebP files under `input_dir` (recursive, hidden ones left out), sorted;
    nothing under the `exclude` folders (outputs or masks kept inside the input)."""
    excluded = [folder.resolve() for folder in exclude]
    found = []
    for path in sorted(input_dir.rglob("*")):
        relative = path.relative_to(input_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if any(path.resolve().is_relative_to(folder) for folder in excluded):
            continue
        if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file():
            found.append(path)
    return found


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest (one JSON object a line) or a CSV one (a header row; each
    cell that parses as JSON is taken as JSON, so `[[200, 450]]` is a list; empty cells are
    left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the manifest {path}: {exc}") from exc
    rows = _csv_rows(text) if path.suffix.lower() == ".csv" else _jsonl_rows(text)
    for number, row in rows:
        if not isinstance(row, dict):
            raise PlanError(f"{path}:{number}: a row must be a JSON object, not {row!r}")
        if not isinstance(row.get("file"), str) or not row["file"]:
            raise PlanError(f"{path}:{number}: the row has no `file`")
        operation = row.get("operation")
        if operation is not None and operation not in OPERATIONS:
            raise PlanError(f"{path}:{number}: operation {operation!r} is not one of {OPERATIONS}")
    return [row for _, row in rows]


def _jsonl_rows(text: str) -> list[tuple[int, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise PlanError(f"manifest line {number} is not JSON: {exc}") from exc
    return rows


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    rows = []
    for number, record in enumerate(csv.DictReader(text.splitlines()), 2):
        row: dict[str, Any] = {}
        for key, cell in record.items():
            if key is None or cell is None or cell.strip() == "":
                continue
            row[key.strip()] = _cell(key.strip(), cell.strip())
        rows.append((number, row))
    return rows


def _cell(key: str, cell: str) -> Any:
    if key in ("file", "operation", "text_prompt", "negative_prompt", "output_format"):
        return cell
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell


def output_path(output_dir: Path, relative: str, output_format: str) -> Path:
    relative_path = PurePosixPath(relative)
    extension = EXTENSIONS.get(output_format, ".png")
    return output_dir.joinpath(*relative_path.parent.parts, relative_path.stem + extension)


def request_for(operation: str, defaults: Mapping[str, Any], row: Mapping[str, Any]) -> dict:
    """The route's request JSON: the command line's options, then the row's own fields."""
    request = {
        key: value
        for key, value in defaults.items()
        if value is not None and (operation != "remove" or key not in GENERATE_FIELDS)
    }
    request.update({k: v for k, v in row.items() if k not in ("file", "operation")})
    return request


def plan(
    input_dir: Path,
    output_dir: Path,
    operation: str,
    defaults: Mapping[str, Any],
    masks_dir: Path | None = None,
    manifest: Path | None = None,
    keep_masks: bool = False,
) -> list[Item]:
    """Every photo's work, in a stable order; problems known up front ride on the items."""
    if manifest is not None:
        rows = read_manifest(manifest)
    else:
        if input_dir.resolve().is_relative_to(output_dir.resolve()):
            raise PlanError("OUTPUT_DIR must not be INPUT_DIR or a folder above it")
        excluded = [output_dir, *([masks_dir] if masks_dir is not None else [])]
        photos = find_photos(input_dir, exclude=excluded)
        rows = [{"file": p.relative_to(input_dir).as_posix()} for p in photos]
    masks = _mask_index(masks_dir) if masks_dir is not None else None
    items = [
        _item(input_dir, output_dir, operation, defaults, row, masks, keep_masks) for row in rows
    ]
    return _flag_collisions(items)


def _item(
    input_dir: Path,
    output_dir: Path,
    default_operation: str,
    defaults: Mapping[str, Any],
    row: Mapping[str, Any],
    masks: dict[tuple[str, ...], Path] | None,
    keep_masks: bool,
) -> Item:
    relative = PurePosixPath(str(row["file"]))
    operation = str(row.get("operation") or default_operation)
    request = request_for(operation, defaults, row)
    output = output_path(output_dir, relative.as_posix(), str(request.get("output_format", "png")))
    item = Item(
        file=relative.as_posix(),
        source=input_dir.joinpath(*relative.parts),
        operation=operation,
        request=request,
        output=output,
        mask_output=output.with_name(relative.stem + MASK_SUFFIX) if keep_masks else None,
    )
    if relative.is_absolute() or ".." in relative.parts:
        return _with(item, "bad_path", f"{relative} is not a path inside the input folder")
    if not item.source.is_file():
        return _with(item, "file_not_found", f"no file {relative} in the input folder")
    if masks is not None:
        mask = masks.get((*relative.parent.parts, relative.stem))
        if mask is None:
            return _with(item, "mask_not_found", f"no mask named {relative.stem}.* for {relative}")
        return Item(**{**item.__dict__, "mask": mask})
    return item


def _with(item: Item, code: str, message: str) -> Item:
    return Item(**{**item.__dict__, "problem": Problem(code, message)})


def _mask_index(masks_dir: Path) -> dict[tuple[str, ...], Path]:
    """(folders..., stem) -> the mask file, preferring lossless formats."""
    if not masks_dir.is_dir():
        raise PlanError(f"the masks folder {masks_dir} does not exist")
    index: dict[tuple[str, ...], Path] = {}
    rank = {suffix: i for i, suffix in enumerate(MASK_SUFFIXES)}
    for path in masks_dir.rglob("*"):
        suffix = path.suffix.lower()
        if suffix not in rank or not path.is_file():
            continue
        relative = path.relative_to(masks_dir)
        key = (*relative.parent.parts, relative.stem)
        if key not in index or rank[suffix] < rank[index[key].suffix.lower()]:
            index[key] = path
    return index


def _flag_collisions(items: Iterable[Item]) -> list[Item]:
    """Two photos whose results would share a name (a.jpg and a.png): the second fails."""
    claimed: dict[Path, str] = {}
    flagged = []
    for item in items:
        owner = claimed.setdefault(item.output, item.file)
        if owner != item.file and item.problem is None:
            item = _with(item, "output_collision", f"{owner} already writes {item.output.name}")
        flagged.append(item)
    return flagged
