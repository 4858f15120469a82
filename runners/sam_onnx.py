"""SAM's prompt encoder + mask decoder as ONNX, for the browser editor.

The interface is `segment_anything.utils.onnx.SamOnnxModel`'s (inputs `image_embeddings`,
`point_coords`, `point_labels`, `mask_input`, `has_mask_input`, `orig_im_size`; outputs
`masks`, `iou_predictions`, `low_res_masks`), exported with `return_single_mask=False`: the
four mask tokens come out, the single-mask output first, then SamPredictor's 3 candidates.

segment_anything 1.0 (the PyPI release) crops the upscaled masks with `int(...)` of a traced
tensor, which the exporter freezes to the sample input's size: every photo of another aspect
ratio would be cropped wrongly (upstream issue 56, fixed after the release). The subclass
below slices with the tensors themselves, so the crop follows `orig_im_size` at run time.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

logger = logging.getLogger("inpaint.sam_onnx")

OPSET = 17  # onnxruntime-web 1.2x/1.30 runs it; SAM's official export uses 17 too
INPUT_NAMES = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
]
OUTPUT_NAMES = ["masks", "iou_predictions", "low_res_masks"]
# A sample size whose aspect ratio matches no real photo: a frozen crop would show at once.
_SAMPLE_SIZE = (1500.0, 2250.0)


def _onnx_model_class() -> type:
    import torch
    from segment_anything.utils.onnx import SamOnnxModel
    from torch.nn import functional as F

    class DynamicCropSamOnnxModel(SamOnnxModel):
        """`SamOnnxModel` whose mask crop is computed from `orig_im_size` when it runs."""

        def mask_postprocessing(
            self, masks: torch.Tensor, orig_im_size: torch.Tensor
        ) -> torch.Tensor:
            masks = F.interpolate(
                masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks[..., : prepadded[0], : prepadded[1]]
            size = orig_im_size.to(torch.int64)
            return F.interpolate(
                masks, size=(size[0], size[1]), mode="bilinear", align_corners=False
            )

    return DynamicCropSamOnnxModel


def _decoder_parts_class() -> type:
    import copy
    from types import SimpleNamespace

    from torch import nn

    class DecoderParts(nn.Module):
        """What SamOnnxModel uses of a Sam, copied to the CPU in float32; the image encoder
        (most of SAM's weight, maybe on a GPU) stays where it is."""

        def __init__(self, sam: Sam) -> None:
            super().__init__()
            self.prompt_encoder = copy.deepcopy(sam.prompt_encoder).cpu().float().eval()
            self.mask_decoder = copy.deepcopy(sam.mask_decoder).cpu().float().eval()
            self.image_encoder = SimpleNamespace(img_size=sam.image_encoder.img_size)
            self.mask_threshold = sam.mask_threshold

    return DecoderParts


def export_decoder(sam: Sam) -> bytes:
    """The ONNX file (bytes) of `sam`'s prompt encoder + mask decoder, on the CPU in float32."""
    import warnings

    import torch

    started = time.perf_counter()
    model = _decoder_parts_class()(sam)
    onnx_model = _onnx_model_class()(model, return_single_mask=False)
    embed_dim = model.prompt_encoder.embed_dim
    embed_size = model.prompt_encoder.image_embedding_size
    mask_size = [4 * x for x in embed_size]
    sample = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor(_SAMPLE_SIZE, dtype=torch.float),
    }
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Tracer chatter about the Python ints in SAM's decoder; the export checks below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            onnx_model,
            tuple(sample.values()),
            buffer,
            export_params=True,
            verbose=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={
                "point_coords": {1: "num_points"},
                "point_labels": {1: "num_points"},
            },
            dynamo=False,  # the TorchScript exporter: SamOnnxModel is written for tracing
        )
    data = buffer.getvalue()
    logger.info(
        "exported SAM's decoder to ONNX: %.1f MB in %.1f s",
        len(data) / 1e6,
        time.perf_counter() - started,
    )
    return data


class DecoderExport:
    """The runner's one export of its model, made on first use (about a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: bytes | None = None

    def get(self, sam: Sam) -> bytes:
        with self._lock:
            if self._data is None:
                self._data = export_decoder(sam)
            return self._data
