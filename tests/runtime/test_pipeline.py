"""runtime/pipeline.py with several inferences at once (``workers``): the same outcomes in the
same order as one at a time, failures included; refused for a backend that runs one inference at a time."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rfnet.runtime.backends.onnxrt import OnnxRuntimeBackend, plan_cpu_workers
from rfnet.runtime.infer import main
from rfnet.runtime.pipeline import Pipeline
from tests.support.fake_backend import ScriptedBackend


def _summary(outcomes: list) -> list[tuple]:
    return [(o.index, o.path.name, o.ok, tuple(np.round(o.segmentation.box, 4)) if o.ok else o.error)
            for o in outcomes]


@pytest.mark.parametrize(("workers", "batch"), [(2, 1), (3, 1), (2, 2)])
def test_concurrent_runs_give_the_same_outcomes_in_input_order(contract_onnx: Path, image_dir: Path,
                                                               workers: int, batch: int) -> None:
    (image_dir / "b2_broken.png").write_bytes(b"not an image")  # a failure between good images
    paths = sorted(image_dir.iterdir()) * 3
    with OnnxRuntimeBackend(contract_onnx, intra_op_threads=1) as b:
        one = list(Pipeline(b, batch_size=batch).run(paths))
        many = list(Pipeline(b, batch_size=batch, workers=workers).run(paths))
    assert sorted(o.index for o in many) == list(range(len(paths)))
    assert _summary(many) == _summary(one)  # the order included: batch order, as with one worker
    assert sum(not o.ok for o in many) == 3
    for a, b_ in zip(one, many):
        if a.ok:
            assert a.cdr == b_.cdr and np.array_equal(a.segmentation.disc, b_.segmentation.disc)


def test_an_abandoned_concurrent_run_stops_its_threads(contract_onnx: Path, image_dir: Path) -> None:
    with OnnxRuntimeBackend(contract_onnx, intra_op_threads=1) as b:
        gen = Pipeline(b, prefetch=1, workers=2).run(sorted(image_dir.iterdir()) * 5)
        assert next(gen).ok
        gen.close()
    alive = [t.name for t in threading.enumerate() if t.name.startswith(("rfnet-decode", "rfnet-infer")) and t.is_alive()]
    assert alive == []


def test_workers_need_a_backend_that_runs_concurrently() -> None:
    with ScriptedBackend() as b:
        assert not b.concurrent_infer
        with pytest.raises(ValueError, match="one inference at a time"):
            Pipeline(b, workers=2)
        with pytest.raises(ValueError, match="at least 1"):
            Pipeline(b, workers=0)


def test_plan_cpu_workers_splits_the_threads() -> None:
    cpu = ["CPUExecutionProvider"]
    assert plan_cpu_workers(2, None, cpu) == (2, 1)
    assert plan_cpu_workers(8, None, cpu) == (2, 4)
    assert plan_cpu_workers(1, None, cpu) == (1, 1)
    assert plan_cpu_workers(2, 1, cpu) == (1, 2)
    assert plan_cpu_workers(None, 1, cpu) == (1, None)  # ONNX Runtime's own default
    assert plan_cpu_workers(4, 3, cpu) == (3, 1)
    with pytest.raises(ValueError):
        plan_cpu_workers(0, None, cpu)


def test_infer_refuses_several_workers_for_tensorrt(tmp_path: Path, image_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    rc = main(["--model", str(engine), "--input", str(image_dir), "--output", str(tmp_path / "o"), "--workers", "2",
               "--no-progress"])
    assert rc == 2 and "--workers" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_infer_records_its_workers(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    import json

    assert main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(tmp_path / "o"),
                 "--threads", "2", "--no-progress", "--no-report"]) == 0
    settings = json.loads((tmp_path / "o" / "summary.json").read_text())["settings"]
    assert settings["workers"] == 2 and settings["threads"] == 2


def test_a_large_jpeg_is_decoded_reduced_and_graded_in_its_own_pixels(contract_onnx: Path, tmp_path: Path) -> None:
    """The model's input is 128 px: a 520 x 700 JPEG is decoded at 1/4 (175 px, at least 0.98 x 128),
    yet the masks, the box and the measures are those of the 520 x 700 picture, close to a full decode's."""
    import cv2

    from tests.runtime.conftest import fundus_like

    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(fundus_like(520, 700, 200), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    with OnnxRuntimeBackend(contract_onnx, intra_op_threads=1) as b:
        (red,) = Pipeline(b).run([path])
        (full,) = Pipeline(b, full_decode=True).run([path])
    assert red.image.shape == (130, 175, 3) and full.image.shape == (520, 700, 3)
    for o in (red, full):
        assert o.segmentation.disc.shape == (520, 700) and o.grade.gradable
    np.testing.assert_allclose(red.segmentation.box, full.segmentation.box, atol=2.0)
    assert red.cdr is not None and full.cdr is not None
    assert red.cdr["vcdr"] == pytest.approx(full.cdr["vcdr"], abs=0.01)


def test_infer_records_full_decode_and_refuses_to_resume_with_another(contract_onnx: Path, image_dir: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "out"
    assert main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--no-progress",
                 "--full-decode"]) == 0
    assert json.loads((out / "summary.json").read_text())["settings"]["full_decode"] is True
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--no-progress",
               "--resume"])
    assert rc == 2 and "full_decode: was True, now False" in capsys.readouterr().err
