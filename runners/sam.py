"""SAM runner: a batchable image-embedding API and prompt-to-mask decoding.

The encoder is the expensive half (seconds on a CPU) and its input is always 1024x1024 after
resize + pad, so concurrent requests batch well. Decoding (~tens of ms) takes a cached
embedding, which the entry service keeps (see runners.embedding_cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np
from pydantic import BaseModel

from config.settings import get_settings
from models.store import resolve_tags
from runners.runtime import ModelRunner, batching, runner_service_config

if TYPE_CHECKING:
    import torch

settings = get_settings()


class SamPrompt(BaseModel):
    """SAM prompts in original-image pixels."""

    point_coords: list[list[float]] | None = None
    point_labels: list[int] | None = None
    box: list[float] | None = None


@bentoml.service(name="sam_runner", **runner_service_config(settings))
class SamRunner(ModelRunner):
    kind = "sam"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sam"])

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from segment_anything.utils.transforms import ResizeLongestSide

        from models.sam_checkpoint import SamArchitecture, load_sam

        architecture = SamArchitecture.from_metadata(metadata["architecture"])
        self.model = load_sam(path / metadata["checkpoint_file"], architecture, device)
        self.transform = ResizeLongestSide(self.model.image_encoder.img_size)
        from runners.fast_paths import sam_encoder

        self._encode, backend = sam_encoder(self.model, path, device, self.threads)
        return {"model_type": metadata.get("model_type"), "encoder": backend}

    def warm_up(self, device: torch.device) -> None:
        from runners.fast_paths import warm_up_sam

        warm_up_sam(self.model, self._encode, device)

    @bentoml.api(**batching(settings.sam_max_batch_size, settings))
    def embed(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Image embeddings (256x64x64 float32) of HxWx3 uint8 RGB images, one batch."""
        import torch

        self.state.require()
        device = self.state.device
        with torch.inference_mode():
            batch = torch.cat(
                [
                    self.model.preprocess(
                        torch.as_tensor(self.transform.apply_image(image), device=device)
                        .permute(2, 0, 1)
                        .contiguous()[None]
                    )
                    for image in images
                ]
            )
            features = self._encode(batch)
        return [f.float().cpu().numpy() for f in features]

    @bentoml.api
    def decode(
        self, embedding: np.ndarray, image_size: list[int], prompt: SamPrompt
    ) -> dict[str, Any]:
        """SAM's 3 candidate masks (3xHxW bool) and their predicted IoU scores."""
        import torch

        self.state.require()
        device = self.state.device
        original_size = (int(image_size[0]), int(image_size[1]))
        points = None
        if prompt.point_coords:
            coords = self.transform.apply_coords(np.asarray(prompt.point_coords), original_size)
            labels = prompt.point_labels or [1] * len(prompt.point_coords)
            points = (
                torch.as_tensor(coords, dtype=torch.float, device=device)[None],
                torch.as_tensor(labels, dtype=torch.int, device=device)[None],
            )
        boxes = None
        if prompt.box:
            box = self.transform.apply_boxes(np.asarray(prompt.box), original_size)
            boxes = torch.as_tensor(box, dtype=torch.float, device=device)
        input_size = self.transform.get_preprocess_shape(
            *original_size, self.transform.target_length
        )
        with torch.inference_mode():
            features = torch.as_tensor(embedding, device=device)[None]
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            masks = self.model.postprocess_masks(low_res, input_size, original_size)
            masks = masks > self.model.mask_threshold
        return {"masks": masks[0].cpu().numpy(), "scores": iou[0].float().cpu().numpy()}

    @bentoml.api
    def status(self) -> dict[str, Any]:
        return self.state.report()
