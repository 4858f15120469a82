"""SAM's decoder exported to ONNX matches SamPredictor, for photos of any aspect ratio.

segment_anything 1.0's own SamOnnxModel freezes its mask crop to the sample input's size when
exported; the project's export must not, and the stock one is shown to, so that this test
can tell them apart.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from models.sam_checkpoint import SAM_ARCHITECTURES, build_sam
from runners.sam_onnx import INPUT_NAMES, OUTPUT_NAMES, export_decoder

onnxruntime = pytest.importorskip("onnxruntime")

# float op order differs between torch and onnxruntime: logits within ~1e-6 of 0 may flip.
MAX_DIFFERING_PIXELS = 20


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam(SAM_ARCHITECTURES["tiny"]).eval()


@pytest.fixture(scope="module")
def session(sam):
    return onnxruntime.InferenceSession(export_decoder(sam), providers=["CPUExecutionProvider"])


def _stock_session(sam):
    from segment_anything.utils.onnx import SamOnnxModel

    model = SamOnnxModel(sam, return_single_mask=False)
    inputs = (
        torch.randn(1, 256, 64, 64),
        torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
        torch.randint(0, 4, (1, 5), dtype=torch.float),
        torch.randn(1, 1, 256, 256),
        torch.tensor([1], dtype=torch.float),
        torch.tensor([1500.0, 2250.0]),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's chatter
        torch.onnx.export(
            model,
            inputs,
            buffer,
            opset_version=17,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"point_coords": {1: "n"}, "point_labels": {1: "n"}},
            dynamo=False,
        )
    return onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


def _predict_both(sam, session, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from segment_anything import SamPredictor

    height, width = size
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    points = np.array([[0.3 * width, 0.4 * height], [0.6 * width, 0.7 * height]])
    labels = np.array([1, 0])
    expected, _, _ = predictor.predict(points, labels, multimask_output=True)
    coords = predictor.transform.apply_coords(np.vstack([points, [[0, 0]]]), size)
    masks, scores, low_res = session.run(
        None,
        {
            "image_embeddings": predictor.get_image_embedding().numpy(),
            "point_coords": coords.astype(np.float32)[None],
            "point_labels": np.array([[1, 0, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(size, np.float32),
        },
    )
    assert masks.shape == (1, 4, height, width) and low_res.shape == (1, 4, 256, 256)
    return expected, masks[0, 1:] > sam.mask_threshold


@pytest.mark.parametrize("size", [(534, 800), (640, 503), (300, 300)])
def test_export_matches_sam_predictor_for_any_aspect_ratio(sam, session, size) -> None:
    expected, got = _predict_both(sam, session, size)
    assert expected.any() and not expected.all()
    assert int((expected != got).sum()) <= MAX_DIFFERING_PIXELS


def test_the_stock_export_gets_other_aspect_ratios_wrong(sam) -> None:
    """Why runners.sam_onnx subclasses SamOnnxModel (upstream issue 56)."""
    expected, got = _predict_both(sam, _stock_session(sam), (640, 503))
    assert int((expected != got).sum()) > 1000


def test_export_has_the_official_interface(session) -> None:
    assert [i.name for i in session.get_inputs()] == INPUT_NAMES
    assert [o.name for o in session.get_outputs()] == OUTPUT_NAMES
    points = session.get_inputs()[1]
    assert isinstance(points.shape[1], str), "the number of points is a dynamic axis"
