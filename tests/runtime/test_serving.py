"""runtime/serving.py without Triton: one model instance turns encoded images into the fields and
masks runtime/infer.py writes (the same gradability verdict: no CDR for an ungradable image), and
a bad item costs only that item."""
from __future__ import annotations

import csv
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from rfnet.common.backend import BackendError
from rfnet.runtime.backends import create_backend
from rfnet.runtime.fields import FIELD_NAMES, fields_from_outputs, format_fields
from rfnet.runtime.infer import main as infer_main
from rfnet.runtime.serving import CUP_MASK, DISC_MASK, ERROR, LATENCY, SegmentService, ServeSettings, decode_mask, output_specs

#: sizes and red values of gradable fundus-like images; the last is far larger than the 128-px
#: model input (letterboxed down)
SPECS = (("a_wide.png", 270, 450, 200), ("b_tall.jpg", 480, 300, 90), ("c_square.bmp", 288, 288, 140),
         ("d_huge.png", 1800, 2400, 60))
CDR = ("vcdr", "vcdr_extent", "hcdr", "area_cdr")


def items(arrays: dict[str, np.ndarray], n: int) -> list[dict]:
    out = []
    for i in range(n):
        err = bytes(arrays[ERROR][i, 0]).decode()
        out.append({"error": err, "values": None if err else fields_from_outputs(arrays.get, i),
                    "disc": bytes(arrays[DISC_MASK][i, 0]), "cup": bytes(arrays[CUP_MASK][i, 0])})
    return out


@pytest.fixture()
def images(tmp_path: Path, contract) -> list[Path]:
    return contract.write_images(tmp_path / "images", SPECS)


def add_grey(folder: Path) -> Path:
    """A uniform grey image: not gradable (image_too_flat), though the contract model finds a disc in it."""
    path = folder / "e_grey.png"
    assert cv2.imwrite(str(path), np.full((512, 512, 3), 128, np.uint8))
    return path


def reference(model: Path, folder: Path, out: Path, *extra: str) -> dict[str, dict[str, str]]:
    """runtime/infer.py's results.csv rows by name (masks of every image, ungradable ones too)."""
    assert infer_main(["--model", str(model), "--input", str(folder), "--output", str(out),
                       "--save", "csv,masks,ungradable", "--no-progress", *extra]) == 0
    with open(out / "results.csv", newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def test_same_fields_and_masks_as_infer_cli(contract_onnx: Path, images: list[Path], tmp_path: Path) -> None:
    images = [*images, add_grey(images[0].parent)]
    out = tmp_path / "ref"
    ref = reference(contract_onnx, images[0].parent, out)
    service = SegmentService(ServeSettings(contract_onnx, max_batch_size=3))
    try:
        arrays = service(np.array([[p.read_bytes()] for p in images], dtype=object))
    finally:
        service.close()
    assert set(arrays) == {name for name, _ in output_specs()}
    assert all(a.shape == (len(images), 1) for a in arrays.values())
    assert (arrays[LATENCY] > 0).all()
    for p, got in zip(images, items(arrays, len(images))):
        assert got["error"] == ""
        row = ref[p.stem]
        assert format_fields(got["values"]) == {k: row[k] for k in FIELD_NAMES}, p.name
        # the PNG bytes runtime/infer.py wrote to masks/
        assert got["disc"] == (out / "masks" / f"{p.stem}_disc.png").read_bytes()
        assert got["cup"] == (out / "masks" / f"{p.stem}_cup.png").read_bytes()
        assert decode_mask(got["disc"], "disc").shape == cv2.imread(str(p)).shape[:2]
    verdicts = [(g["values"]["gradable"], g["values"]["reason"]) for g in items(arrays, len(images))]
    assert verdicts == [(1, "")] * 4 + [(0, "image_too_flat")]
    grey = items(arrays, len(images))[-1]["values"]
    assert grey["message"] and grey["disc_found"] == 1  # the model did answer; no CDR is reported
    assert all(grey[k] is None for k in CDR) and np.isnan(arrays["vcdr"][-1, 0])
    assert all(ref["e_grey"][k] == "" for k in CDR)


def test_min_score_gates_as_infer_does(contract_onnx: Path, images: list[Path], tmp_path: Path) -> None:
    """ServeSettings.min_score (--min-score) overrides the model's rfnet.min_disc_score, as infer.py's
    --min-score: the contract model's 0.9 disc is then not gradable."""
    ref = reference(contract_onnx, images[0].parent, tmp_path / "ref", "--min-score", "0.95")
    service = SegmentService(ServeSettings(contract_onnx, min_score=0.95))
    try:
        got = items(service(np.array([[p.read_bytes()] for p in images], dtype=object)), len(images))
    finally:
        service.close()
    for p, g in zip(images, got):
        assert (g["values"]["gradable"], g["values"]["reason"]) == (0, "low_disc_score")
        assert all(g["values"][k] is None for k in CDR)
        assert format_fields(g["values"]) == {k: ref[p.stem][k] for k in FIELD_NAMES}, p.name


def test_bad_items_get_an_error_and_the_rest_an_answer(contract_onnx: Path, images: list[Path]) -> None:
    good = images[0].read_bytes()
    jpeg = images[1].read_bytes()
    big = cv2.imencode(".png", np.full((500, 600, 3), 128, np.uint8))[1].tobytes()
    batch = [good, b"not an image at all", jpeg[: len(jpeg) // 2], b"", big, jpeg]
    service = SegmentService(ServeSettings(contract_onnx, max_batch_size=4, max_image_pixels=200_000))
    try:
        got = items(service(np.array([[b] for b in batch], dtype=object)), len(batch))
        again = items(service(np.array([[good]], dtype=object)), 1)  # the instance still works
    finally:
        service.close()
    assert [g["error"] == "" for g in got] == [True, False, False, False, False, True]
    assert "not a readable image" in got[1]["error"]
    assert "truncated JPEG" in got[2]["error"]
    assert "empty" in got[3]["error"]
    assert "600 x 500 = 300,000 pixels, over the limit of 200,000" in got[4]["error"]
    for g in got[1:5]:
        assert g["disc"] == b"" and g["cup"] == b"" and g["values"] is None
    assert got[0]["values"] == again[0]["values"] and got[0]["values"]["disc_found"] == 1


def test_inference_failure_fails_the_decoded_items_only(contract_onnx: Path, images: list[Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    service = SegmentService(ServeSettings(contract_onnx))
    try:
        def broken(tensors: np.ndarray) -> dict[str, np.ndarray]:
            raise BackendError("device lost")

        monkeypatch.setattr(service.segmenter, "infer", broken)
        got = items(service(np.array([[images[0].read_bytes()], [b"junk"]], dtype=object)), 2)
    finally:
        service.close()
    assert got[0]["error"] == "inference failed: device lost"
    assert "not a readable image" in got[1]["error"]


def test_load_and_every_call_run_on_the_instance_thread(contract_onnx: Path, images: list[Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA context (PyCUDA's) is current only on the thread that made it."""
    seen: list[tuple[str, int]] = []

    def recording(model: Path, kind: str, **options):
        backend = create_backend(model, kind, **options)
        for name in ("load", "infer", "close"):
            method = getattr(backend, name)

            def wrapped(*args, _m=method, _n=name, **kw):
                seen.append((_n, threading.get_ident()))
                return _m(*args, **kw)

            setattr(backend, name, wrapped)
        return backend

    monkeypatch.setattr("rfnet.runtime.serving.create_backend", recording)
    service = SegmentService(ServeSettings(contract_onnx))
    service(np.array([[images[0].read_bytes()]], dtype=object))
    caller = threading.Thread(target=service, args=(np.array([[images[1].read_bytes()]], dtype=object),))
    caller.start()
    caller.join()
    service.close()
    assert [n for n, _ in seen] == ["load", "infer", "infer", "close"]
    assert len({t for _, t in seen}) == 1 and seen[0][1] != threading.get_ident()


def test_an_unexpected_exception_costs_the_batch_not_the_instance(contract_onnx: Path, images: list[Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    service = SegmentService(ServeSettings(contract_onnx))
    try:
        monkeypatch.setattr(service, "_run", lambda items: 1 / 0)
        got = items(service(np.array([[images[0].read_bytes()], [images[1].read_bytes()]], dtype=object)), 2)
        assert [g["error"] for g in got] == ["internal error: ZeroDivisionError: division by zero"] * 2
        monkeypatch.undo()
        assert items(service(np.array([[images[0].read_bytes()]], dtype=object)), 1)[0]["error"] == ""
    finally:
        service.close()
