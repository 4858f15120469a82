"""How far the masks of a fast SAM encoder backend are from eager fp32 on the example photos.

Used by the parity tests and scripts/bench.py: each example case's clicks go through
`segment_anything.SamPredictor` with the image features from the encoder under test, and the
three candidate masks are compared by IoU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Encoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    point_coords: np.ndarray  # Nx2 [x, y]
    point_labels: np.ndarray  # N


def example_cases(limit: int | None = None) -> list[Case]:
    """The clicks published with the example photos (examples/cases.json)."""
    data = json.loads((EXAMPLES / "cases.json").read_text())
    cases = []
    for case in data["cases"][:limit]:
        image = np.asarray(Image.open(EXAMPLES / case["image"]).convert("RGB"))
        coords = np.asarray(case["point_coords"], dtype=np.float64)
        labels = np.asarray(case["point_labels"], dtype=np.int64)
        cases.append(Case(case["id"], image, coords, labels))
    return cases


def predict_masks(predictor: SamPredictor, encode: Encoder, case: Case) -> np.ndarray:
    """SamPredictor's 3 candidate masks for the case, with the features from `encode`."""
    predictor.reset_image()
    resized = predictor.transform.apply_image(case.image)
    pixels = torch.as_tensor(resized, device=predictor.device).permute(2, 0, 1).contiguous()[None]
    predictor.original_size = case.image.shape[:2]
    predictor.input_size = tuple(pixels.shape[-2:])
    with torch.inference_mode():
        predictor.features = encode(predictor.model.preprocess(pixels))
    predictor.is_image_set = True
    masks, _, _ = predictor.predict(case.point_coords, case.point_labels, multimask_output=True)
    return masks


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.logical_or(first, second).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(first, second).sum() / union)


def mask_agreement(sam: Sam, encode: Encoder, cases: list[Case]) -> dict[str, list[float]]:
    """Per case, the IoU of each candidate mask against eager fp32 (`sam.image_encoder`)."""
    predictor = SamPredictor(sam)
    result = {}
    for case in cases:
        reference = predict_masks(predictor, sam.image_encoder, case)
        candidate = predict_masks(predictor, encode, case)
        result[case.name] = [mask_iou(a, b) for a, b in zip(reference, candidate, strict=True)]
    return result


Decoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def decoder_agreement(sam: Sam, decode: Decoder, cases: list[Case]) -> dict[str, list[float]]:
    """Per case, the IoU of each candidate mask from `decode` (a models.sam_prompt_decoder
    `PromptDecoder` on some backend) against SamPredictor's, on eager fp32 features."""
    from models.sam_prompt_decoder import prompt_points

    predictor = SamPredictor(sam)
    result = {}
    for case in cases:
        reference = predict_masks(predictor, sam.image_encoder, case)
        coords = predictor.transform.apply_coords(case.point_coords, case.image.shape[:2])
        points, labels = prompt_points(coords, case.point_labels.tolist(), None)
        with torch.inference_mode():
            low_res, _ = decode(
                predictor.features, torch.from_numpy(points), torch.from_numpy(labels)
            )
            logits = sam.postprocess_masks(low_res, predictor.input_size, predictor.original_size)
        candidate = (logits > sam.mask_threshold)[0].numpy()
        result[case.name] = [mask_iou(a, b) for a, b in zip(reference, candidate, strict=True)]
    return result
