"""SAM's prompt encoder + mask decoder as one module of plain tensors, for fast backends.

`PromptDecoder` takes what `SamPredictor.predict` builds (an image embedding, prompt points in
the 1024-pixel input frame with their labels) and returns its three candidates' low-resolution
logits and IoU scores. Boxes travel as two corner points labelled 2 and 3, and a point-only
prompt carries the padding point (label -1) that `PromptEncoder` appends, as in segment_anything's
ONNX interface: one static graph serves every prompt, so OpenVINO can compile it once. In torch
it computes exactly what `prompt_encoder` + `mask_decoder` compute (each label selects its
embedding by a 0/1 product, and x * 1 and x + 0 are exact), so eager stays the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn

PADDING_LABEL = -1
BOX_CORNER_LABELS = (2, 3)


class PromptDecoder(nn.Module):
    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.img_size = sam.image_encoder.img_size

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1x256x64x64, 1xNx2 input-frame pixels, 1xN float labels) -> (1x3x256x256 logits,
        1x3 IoU predictions)."""
        encoder = self.prompt_encoder
        coords = (point_coords + 0.5) / self.img_size
        sparse = encoder.pe_layer._pe_encoding(coords)
        labels = point_labels.unsqueeze(-1).expand_as(sparse)
        sparse = sparse * (labels != PADDING_LABEL)
        sparse = sparse + encoder.not_a_point_embed.weight * (labels == PADDING_LABEL)
        for label in range(encoder.num_point_embeddings):
            sparse = sparse + encoder.point_embeddings[label].weight * (labels == label)
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = dense.expand(1, -1, *encoder.image_embedding_size)
        masks, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return masks[:, 1:], iou[:, 1:]  # SamPredictor's multimask candidates


def prompt_points(
    point_coords: Sequence[Sequence[float]] | np.ndarray | None,
    point_labels: Sequence[int] | None,
    box: Sequence[float] | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """`PromptDecoder`'s (1xNx2 float32 coordinates, 1xN float32 labels) for a prompt whose
    coordinates are already in the input frame: the points, then the box's two corners, or
    the padding point when there is no box."""
    coords: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    if point_coords is not None and len(point_coords):
        points = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
        coords.append(points)
        given = [1] * len(points) if point_labels is None else point_labels
        labels.append(np.asarray(given, dtype=np.float32))
    if box is not None:
        coords.append(np.asarray(box, dtype=np.float32).reshape(2, 2))
        labels.append(np.asarray(BOX_CORNER_LABELS, dtype=np.float32))
    else:
        coords.append(np.zeros((1, 2), dtype=np.float32))
        labels.append(np.asarray([PADDING_LABEL], dtype=np.float32))
    return np.concatenate(coords)[None], np.concatenate(labels)[None]
