"""The LaMa runner, loaded from a model-store entry, against the reference implementation.

The parity fixture's small official-layout checkpoint (tests/data/lama/parity) is imported
through the project's store import and served by the runner class itself; its output must be
what Inpaint-Anything's `inpaint_img_with_lama` gave for the same photo and mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml.models import BentoModel

from runners.lama import LamaJob, LamaRunner
from tests.conftest import LAMA_DATA_DIR
from tooling import model_import

PARITY_DIR = LAMA_DATA_DIR / "parity"


@pytest.fixture(scope="module")
def parity_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LamaRunner]:
    # A store of its own: the session's store must not gain a "real" LaMa other tests would pick.
    BentoMLContainer.model_store.set(ModelStore(Path(tmp_path_factory.mktemp("parity-store"))))
    try:
        tag = model_import.import_lama(PARITY_DIR / "small-lama", "lama-parity")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LamaRunner.inner, "model_ref", BentoModel(tag))
            runner = LamaRunner()
        assert runner.state.loaded, runner.state.error
        assert runner.state.report()["tag"] == tag
        yield runner
    finally:
        BentoMLContainer.model_store.reset()


def test_runner_output_matches_inpaint_anything(parity_runner: LamaRunner) -> None:
    with np.load(PARITY_DIR / "cases.npz") as cases:
        image, mask, expected = cases["e2e_image"], cases["e2e_mask"], cases["e2e_output"]
    item = np.dstack([image, mask])  # the runner's wire format: RGB + mask channel
    (out,) = parity_runner.inpaint([LamaJob(item=item)])
    assert out.shape == expected.shape and out.dtype == np.uint8
    # Runners set their own thread count; the reference used one thread: at most one level off.
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert not diff[mask == 0].any()
    assert (diff == 0).mean() > 0.99
