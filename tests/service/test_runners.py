"""The runner services on the tiny models: batching, fidelity to the reference code, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable
from bentoml.models import BentoModel
from PIL import Image
from segment_anything import SamPredictor

from models.lama_inference import inpaint
from runners.lama import LamaJob, LamaRunner
from runners.sam import SamJob, SamPrompt, SamRunner
from runners.sd import SdJob, SdRunner
from tests.conftest import EXAMPLES_DIR
from tests.host_cpu import thread_priority
from utils.sam_frame import to_working_image, upsample_masks, working_size


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


def _jobs(*images: np.ndarray, deadline: float | None = None) -> list[SamJob]:
    return [SamJob(image=to_working_image(image), deadline=deadline) for image in images]


def test_sam_batch_equals_one_by_one(sam: SamRunner) -> None:
    jobs = _jobs(_photo(48, 64, 1), _photo(90, 40, 2))
    batched = sam.embed(jobs)
    alone = [sam.embed([job])[0] for job in jobs]
    assert [e.shape for e in batched] == [(256, 64, 64)] * 2
    for one, other in zip(batched, alone, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-4, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


@pytest.mark.parametrize(
    ("name", "points", "labels", "box"),
    [
        ("remove/dog.jpg", [[200.0, 450.0]], [1], None),
        ("replace/man.jpeg", [[300.0, 200.0], [60.0, 10.0]], [1, 0], [5.0, 5.0, 400.0, 350.0]),
        ("fill/sample2.jpeg", None, None, [10.0, 20.0, 300.0, 200.0]),
    ],
)
def test_sam_masks_are_sam_predictors_on_the_example_photos(
    sam: SamRunner,
    name: str,
    points: list[list[float]] | None,
    labels: list[int] | None,
    box: list[float] | None,
) -> None:
    """The entry's half (working-size image, upsampling) and the runner's (embedding,
    low-res logits) give exactly SamPredictor's masks on the original photo."""
    with Image.open(EXAMPLES_DIR / name) as photo:
        image = np.asarray(photo.convert("RGB"))
    size = image.shape[:2]
    result = sam.decode_now(
        embedding_key=name,
        embedding=sam.embed(_jobs(image))[0],
        original_size=list(size),
        prompt=SamPrompt(point_coords=points, point_labels=labels, box=box),
    )
    assert result["low_res_logits"].shape == (3, 256, 256)
    masks = upsample_masks(result["low_res_logits"], working_size(*size), size)
    predictor = SamPredictor(sam.model)
    predictor.set_image(image)
    expected, scores, _ = predictor.predict(
        point_coords=None if points is None else np.array(points),
        point_labels=None if labels is None else np.array(labels),
        box=None if box is None else np.array(box),
    )
    assert masks.shape == (3, *size)
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-4, atol=1e-5)


def test_sam_decodes_the_embeddings_it_keeps_by_key(
    sam: SamRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encoded photo's embedding stays in the runner under its key, as does one sent with a
    decoding, so the next click sends only the key; the newest RUNNER_EMBEDDINGS_KEPT stay."""
    monkeypatch.setattr(sam._kept, "capacity", 2)  # RUNNER_EMBEDDINGS_KEPT=2
    prompt = SamPrompt(point_coords=[[10.0, 12.0]])
    encoded = SamJob(image=to_working_image(_photo(32, 48, 20)), key="encoded")
    embedding = sam.embed([encoded])[0]
    sent = sam.embed(_jobs(_photo(32, 48, 21)))[0]  # no key: kept only once sent
    assert sam.decode_now(embedding_key="sent", original_size=[32, 48], prompt=prompt) == {
        "unknown_embedding": True
    }
    with_embedding = sam.decode_now(
        embedding_key="sent", embedding=sent, original_size=[32, 48], prompt=prompt
    )
    by_key = sam.decode_now(embedding_key="sent", original_size=[32, 48], prompt=prompt)
    np.testing.assert_array_equal(by_key["low_res_logits"], with_embedding["low_res_logits"])
    from_encoder = sam.decode_now(embedding_key="encoded", original_size=[32, 48], prompt=prompt)
    expected = sam.decode_now(
        embedding_key="other", embedding=embedding, original_size=[32, 48], prompt=prompt
    )
    np.testing.assert_array_equal(from_encoder["low_res_logits"], expected["low_res_logits"])
    assert not np.array_equal(from_encoder["low_res_logits"], by_key["low_res_logits"])
    # "sent" was used before "encoded" and "other" were: it is the one forgotten.
    forgotten = sam.decode_now(embedding_key="sent", original_size=[32, 48], prompt=prompt)
    assert forgotten == {"unknown_embedding": True}


def test_sam_skips_work_past_its_deadline(sam: SamRunner) -> None:
    before = asyncio.run(sam.status())["details"]
    past, future = time.time() - 1, time.time() + 600
    late, live = sam.embed(
        _jobs(_photo(32, 48, 8), deadline=past) + _jobs(_photo(32, 48, 9), deadline=future)
    )
    assert late.size == 0 and live.shape == (256, 64, 64)
    expired = sam.decode_now(
        embedding_key="live",
        embedding=live,
        original_size=[32, 48],
        prompt=SamPrompt(box=[2, 2, 20, 20]),
        deadline=past,
    )
    assert expired == {"expired": True}
    after = asyncio.run(sam.status())["details"]
    assert after["encoder_runs"] - before["encoder_runs"] == 1
    assert after["images_encoded"] - before["images_encoded"] == 1
    assert after["skipped_expired"] - before["skipped_expired"] == 2


def test_sam_skips_the_queued_work_of_a_cancelled_call(sam: SamRunner) -> None:
    before = asyncio.run(sam.status())["details"]
    gone, kept = _jobs(_photo(32, 48, 10), _photo(32, 48, 11), deadline=time.time() + 600)
    gone = gone.model_copy(update={"call_id": "gone"})
    asyncio.run(sam.cancel(["gone"]))
    skipped, done = sam.embed([gone, kept])
    assert skipped.size == 0 and done.shape == (256, 64, 64)
    after = asyncio.run(sam.status())["details"]
    assert after["skipped_cancelled"] - before["skipped_cancelled"] == 1
    assert after["images_encoded"] - before["images_encoded"] == 1
    # The id is used up: a later job under the same id (never reused in practice) runs.
    assert sam.embed([gone])[0].shape == (256, 64, 64)


def test_lama_batch_of_mixed_sizes_matches_single_runs(lama: LamaRunner) -> None:
    items = []
    for height, width, seed in ((40, 56, 5), (64, 64, 6), (40, 56, 7)):
        image = _photo(height, width, seed)
        mask = np.zeros((height, width), np.uint8)
        mask[10:30, 12:40] = 255
        items.append(np.dstack([image, mask]))
    results = lama.inpaint([LamaJob(item=item) for item in items])
    for item, result in zip(items, results, strict=True):
        assert result.shape == item.shape[:2] + (3,) and result.dtype == np.uint8
        alone = inpaint(lama.generator, item[..., :3], item[..., 3], lama.state.device)
        assert np.abs(result.astype(int) - alone.astype(int)).max() <= 1
        outside = item[..., 3] == 0
        np.testing.assert_array_equal(result[outside], item[..., :3][outside])


def test_lama_skips_work_past_its_deadline(lama: LamaRunner) -> None:
    item = np.dstack([_photo(24, 32, 8), np.full((24, 32), 255, np.uint8)])
    before = asyncio.run(lama.status())["details"]["skipped_expired"]
    late, live = lama.inpaint(
        [
            LamaJob(item=item, deadline=time.time() - 1),
            LamaJob(item=item, deadline=time.time() + 600),
        ]
    )
    assert late.size == 0 and live.shape == (24, 32, 3)
    assert asyncio.run(lama.status())["details"]["skipped_expired"] - before == 1


def test_lama_paints_below_its_callers_priority(
    lama: LamaRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LaMa batch is heavy work: it runs on another thread at HEAVY_WORK_NICE, so that a
    click's mask decoding gets the cores first; the caller keeps its priority."""
    import models.lama_inference

    caller, caller_priority = threading.get_native_id(), thread_priority()
    seen: dict[str, int] = {}
    paint = models.lama_inference.inpaint_batch

    def watched(*args: Any) -> list[np.ndarray]:
        seen.update(thread=threading.get_native_id(), priority=thread_priority())
        return paint(*args)

    monkeypatch.setattr(models.lama_inference, "inpaint_batch", watched)
    item = np.dstack([_photo(24, 32, 7), np.full((24, 32), 255, np.uint8)])
    assert lama.inpaint([LamaJob(item=item)])[0].shape == (24, 32, 3)
    assert seen["thread"] != caller and seen["priority"] == 19
    assert thread_priority() == caller_priority


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


def test_sd_skips_a_job_past_its_deadline(sd: SdRunner) -> None:
    late = _job(5).model_copy(update={"deadline": time.time() - 1})
    skipped, done = sd.inpaint([late, _job(6)])
    assert skipped.size == 0 and done.shape == (256, 256, 3)


def test_sd_seed_decides_the_output(sd: SdRunner) -> None:
    first, again, other = sd.inpaint([_job(11), _job(11)]) + sd.inpaint([_job(12)])
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_status_reports_the_loaded_model(sam: SamRunner, sd: SdRunner) -> None:
    report = asyncio.run(sam.status())
    assert report["loaded"] and report["demo"] and report["device"] == "cpu"
    assert report["tag"].startswith("sam-tiny:") and not report["tag"].endswith(":latest")
    details = asyncio.run(sd.status())["details"]
    assert details["native_resolution"] == 256
    assert details["unet"] == {
        "backend": "eager",
        "precision": "fp32",
        "reason": "forced by setting",
    }


def test_a_runner_without_its_model_stays_up_and_answers_503(
    monkeypatch: pytest.MonkeyPatch, tiny_tags: dict[str, str]
) -> None:
    monkeypatch.setattr(LamaRunner.inner, "model_ref", BentoModel("no-such-lama:v1"))
    runner = LamaRunner()
    report = asyncio.run(runner.status())
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
    assert result.size == 0, "a cancelled job gets SKIPPED, as an expired one does"
    assert asyncio.run(sd.progress(["job-cancelled"])) == {}, "the pipeline never ran"


def test_sam_exports_its_decoder_once(sam: SamRunner) -> None:
    import onnxruntime

    first = sam.decoder_onnx()
    assert first.dtype == np.uint8 and first.size > 1_000_000
    assert np.array_equal(sam.decoder_onnx(), first)
    assert sam.decoder_export.get(sam.model) is sam.decoder_export.get(sam.model)  # cached
    session = onnxruntime.InferenceSession(first.tobytes(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
