"""The runner services on the tiny models: batching, fidelity to the reference code, failures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable
from bentoml.models import BentoModel
from segment_anything import SamPredictor

from models.lama_inference import inpaint
from runners.lama import LamaRunner
from runners.sam import SamPrompt, SamRunner
from runners.sd import SdJob, SdRunner


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, height * width * 3).reshape(height, width, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sam(tiny_tags: dict[str, str]) -> SamRunner:
    runner = SamRunner()
    assert runner.state.loaded, runner.state.error
    return runner


@pytest.fixture(scope="module")
def lama(tiny_tags: dict[str, str]) -> LamaRunner:
    runner = LamaRunner()
    assert runner.state.loaded, runner.state.error
    return runner


@pytest.fixture(scope="module")
def sd(tiny_tags: dict[str, str]) -> SdRunner:
    runner = SdRunner()
    assert runner.state.loaded, runner.state.error
    return runner


def test_sam_batch_equals_one_by_one(sam: SamRunner) -> None:
    images = [_photo(48, 64, 1), _photo(90, 40, 2)]
    batched = sam.embed(images)
    alone = [sam.embed([image])[0] for image in images]
    assert [e.shape for e in batched] == [(256, 64, 64)] * 2
    for one, other in zip(batched, alone, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-4, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_sam_decode_matches_segment_anything_predictor(sam: SamRunner) -> None:
    """Embedding + decoding split across calls gives what SamPredictor gives in one go."""
    image = _photo(60, 80, 3)
    points, labels, box = [[20.0, 30.0], [60.0, 10.0]], [1, 0], [5.0, 5.0, 70.0, 50.0]
    result = sam.decode(
        embedding=sam.embed([image])[0],
        image_size=[60, 80],
        prompt=SamPrompt(point_coords=points, point_labels=labels, box=box),
    )
    predictor = SamPredictor(sam.model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array(points), point_labels=np.array(labels), box=np.array(box)
    )
    assert result["masks"].shape == (3, 60, 80) and result["masks"].dtype == bool
    np.testing.assert_array_equal(result["masks"], masks)
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-4, atol=1e-5)


def test_sam_box_only_prompt(sam: SamRunner) -> None:
    image = _photo(32, 32, 4)
    result = sam.decode(
        embedding=sam.embed([image])[0], image_size=[32, 32], prompt=SamPrompt(box=[2, 2, 20, 20])
    )
    assert result["masks"].shape == (3, 32, 32) and result["scores"].shape == (3,)


def test_lama_batch_of_mixed_sizes_matches_single_runs(lama: LamaRunner) -> None:
    items = []
    for height, width, seed in ((40, 56, 5), (64, 64, 6), (40, 56, 7)):
        image = _photo(height, width, seed)
        mask = np.zeros((height, width), np.uint8)
        mask[10:30, 12:40] = 255
        items.append(np.dstack([image, mask]))
    results = lama.inpaint(items)
    for item, result in zip(items, results, strict=True):
        assert result.shape == item.shape[:2] + (3,) and result.dtype == np.uint8
        alone = inpaint(lama.generator, item[..., :3], item[..., 3], lama.state.device)
        assert np.abs(result.astype(int) - alone.astype(int)).max() <= 1
        outside = item[..., 3] == 0
        np.testing.assert_array_equal(result[outside], item[..., :3][outside])


def _job(seed: int, steps: int = 2, prompt: str = "a red car") -> SdJob:
    mask = np.zeros((256, 256), bool)
    mask[64:192, 64:192] = True
    return SdJob(
        image=_photo(256, 256, seed),
        mask=mask,
        prompt=prompt,
        num_inference_steps=steps,
        guidance_scale=7.5,
        seed=seed,
    )


def test_sd_groups_by_shared_parameters_and_keeps_order(sd: SdRunner) -> None:
    jobs = [_job(1, steps=2), _job(2, steps=3), _job(3, steps=2, prompt="a tree")]
    results = sd.inpaint(jobs)
    assert [r.shape for r in results] == [(256, 256, 3)] * 3
    for job, result in zip(jobs, results, strict=True):
        alone = sd.inpaint([job])[0]
        # One pipeline call for two items vs one each: same seeds, same latents; only float
        # summation order may differ.
        assert np.abs(result.astype(int) - alone.astype(int)).max() <= 2


def test_sd_seed_decides_the_output(sd: SdRunner) -> None:
    first, again, other = sd.inpaint([_job(11), _job(11)]) + sd.inpaint([_job(12)])
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_status_reports_the_loaded_model(sam: SamRunner, sd: SdRunner) -> None:
    report = sam.status()
    assert report["loaded"] and report["demo"] and report["device"] == "cpu"
    assert report["tag"].startswith("sam-tiny:") and not report["tag"].endswith(":latest")
    assert sd.status()["details"]["native_resolution"] == 256


def test_a_runner_without_its_model_stays_up_and_answers_503(
    monkeypatch: pytest.MonkeyPatch, tiny_tags: dict[str, str]
) -> None:
    monkeypatch.setattr(LamaRunner.inner, "model_ref", BentoModel("no-such-lama:v1"))
    runner = LamaRunner()
    report = runner.status()
    assert report["loaded"] is False and "no-such-lama:v1" in report["error"]
    with pytest.raises(ServiceUnavailable, match="not loaded"):
        runner.inpaint([np.zeros((16, 16, 4), np.uint8)])


def test_sd_reports_a_jobs_steps_and_its_result_is_unchanged(sd: SdRunner) -> None:
    job = _job(21, steps=3).model_copy(update={"job_id": "job-progress"})
    tagged = sd.inpaint([job])[0]
    report = asyncio.run(sd.progress(["job-progress", "never-ran"]))
    assert set(report) == {"job-progress"}
    assert report["job-progress"]["step"] == report["job-progress"]["total_steps"] == 3
    np.testing.assert_array_equal(tagged, sd.inpaint([_job(21, steps=3)])[0])


def test_sd_skips_a_job_cancelled_before_it_starts(sd: SdRunner) -> None:
    job = _job(22, steps=3).model_copy(update={"job_id": "job-cancelled"})
    asyncio.run(sd.cancel("job-cancelled"))
    result = sd.inpaint([job])[0]
    assert result.shape == (256, 256, 3) and not result.any()
    assert asyncio.run(sd.progress(["job-cancelled"])) == {}, "the pipeline never ran"


def test_sam_exports_its_decoder_once(sam: SamRunner) -> None:
    import onnxruntime

    first = sam.decoder_onnx()
    assert first.dtype == np.uint8 and first.size > 1_000_000
    assert np.array_equal(sam.decoder_onnx(), first)
    assert sam.decoder_export.get(sam.model) is sam.decoder_export.get(sam.model)  # cached
    session = onnxruntime.InferenceSession(first.tobytes(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
