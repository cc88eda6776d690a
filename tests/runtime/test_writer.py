"""runtime/writer.py: the background writer writes every submitted result, isolates failures, frees images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import read_mask
from rfnet.common.metrics import to_refuge_seg
from rfnet.common.gradability import GRADABLE
from rfnet.common.postprocess import Segmentation
from rfnet.runtime.outputs import OutputWriter
from rfnet.runtime.pipeline import ImageResult
from rfnet.runtime.writer import BackgroundWriter


def _result(i: int, h: int = 30, w: int = 40) -> ImageResult:
    disc = np.zeros((h, w), bool)
    disc[5:20, 10:30] = True
    cup = np.zeros((h, w), bool)
    cup[9:15, 15:25] = True
    seg = Segmentation(disc, cup, np.array([10, 5, 30, 20], np.float32), 0.9, window=(4, 21, 9, 31))
    cdr = {"vcdr": 0.4, "vcdr_extent": 0.4, "hcdr": 0.5, "area_cdr": 0.2}
    return ImageResult(i, Path(f"img{i}.png"), np.full((h, w, 3), 100, np.uint8), seg, GRADABLE, cdr, 1.0)


def test_writes_everything_and_frees_the_images(tmp_path: Path) -> None:
    results = [_result(i) for i in range(6)]
    with BackgroundWriter(OutputWriter(tmp_path, ("masks", "refuge", "overlay", "csv")), queue_size=2) as bg:
        for r in results:
            bg.submit(f"n{r.index}", r)
    assert bg.close() == []  # idempotent
    assert sorted(p.name for p in (tmp_path / "overlay").iterdir()) == [f"n{i}.jpg" for i in range(6)]
    assert all(r.image.size == 0 for r in results)  # written, pixels freed
    seg = results[0].segmentation
    np.testing.assert_array_equal(read_mask(tmp_path / "refuge" / "n0.bmp"), to_refuge_seg(seg.disc, seg.cup, seg.bounds()))
    np.testing.assert_array_equal(to_refuge_seg(seg.disc, seg.cup, seg.bounds()), to_refuge_seg(seg.disc, seg.cup))  # the window changes nothing
    np.testing.assert_array_equal(read_mask(tmp_path / "masks" / "n0_cup.png") == 255, seg.cup)
    assert bg.writer.write_csv() is not None and len(bg.writer.rows) == 6
    with pytest.raises(RuntimeError, match="closed"):
        bg.submit("late", _result(9))


def test_a_failed_write_is_reported_and_the_rest_written(tmp_path: Path) -> None:
    (tmp_path / "refuge" / "n1.bmp").mkdir(parents=True)  # a folder where the file should go
    bg = BackgroundWriter(OutputWriter(tmp_path, ("refuge",)))
    for i in range(3):
        bg.submit(f"n{i}", _result(i))
    failures = bg.close()
    assert [f.index for f in failures] == [1] and "cannot write outputs" in failures[0].error
    assert (tmp_path / "refuge" / "n0.bmp").is_file() and (tmp_path / "refuge" / "n2.bmp").is_file()
    assert sorted(i for i, _ in bg.writer.rows) == [0, 2]


@pytest.mark.parametrize("threads", [1, 3])
def test_several_writer_threads_write_what_one_writes(tmp_path: Path, threads: int) -> None:
    """Files written side by side, rows recorded one at a time: the folder and results.csv are the
    same bytes whatever the number of threads, with every image recorded once."""
    def run(out: Path, n_threads: int) -> dict[str, bytes]:
        with BackgroundWriter(OutputWriter(out, ("masks", "refuge", "overlay", "csv")), threads=n_threads) as bg:
            for i in range(12):
                bg.submit(f"n{i}", _result(i, 60 + i, 50))
        assert sorted(i for i, _ in bg.writer.rows) == list(range(12)) and len(bg.writer.records) == 12
        bg.writer.write_csv()
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    one, many = run(tmp_path / "one", 1), run(tmp_path / "many", threads)
    assert len(one) == 12 * 5 + 1 and many == one  # masks x2, refuge, overlay, thumb per image; results.csv


@pytest.mark.parametrize("side", [0, 64])
def test_overlays_are_drawn_at_the_chosen_size_and_the_measurements_at_full_size(tmp_path: Path, side: int) -> None:
    from rfnet.common.imageio import read_image

    r = _result(0, h=120, w=160)
    r.segmentation.disc[:] = False
    r.segmentation.disc[40:80, 50:110] = True
    w = OutputWriter(tmp_path, ("refuge", "overlay"), overlay_side=side)
    w.write("n0", r)
    overlay = read_image(tmp_path / "overlay" / "n0.jpg")
    assert overlay.shape[:2] == ((120, 160) if side == 0 else (48, 64))
    assert read_mask(tmp_path / "refuge" / "n0.bmp").shape == (120, 160)
    assert (tmp_path / "thumb" / "n0.jpg").is_file()
    with pytest.raises(Exception, match="overlay size"):
        OutputWriter(tmp_path, ("overlay",), overlay_side=-1)


@pytest.mark.parametrize(("side", "shape", "reread"), [(64, (48, 64), False), (100, (75, 100), True),
                                                      (0, (120, 160), True)])
def test_an_overlay_larger_than_the_reduced_picture_reads_the_file_again(tmp_path: Path, side: int,
                                                                          shape: tuple[int, int], reread: bool) -> None:
    """The pipeline keeps a large JPEG decoded at reduced size; an overlay that needs more pixels
    than that copy has is drawn from the whole picture, read again, never enlarged."""
    import cv2

    from rfnet.common.imageio import read_image, write_image

    full = np.zeros((120, 160, 3), np.uint8)
    full[:, 80:] = 200  # right half bright
    write_image(tmp_path / "pic.png", full)
    r = _result(0, h=120, w=160)
    r.path = tmp_path / "pic.png"
    r.image = cv2.resize(full, (80, 60), interpolation=cv2.INTER_AREA)  # a copy at 1/2, as Segmenter.read gives
    w = OutputWriter(tmp_path / "out", ("overlay",), overlay_side=side)
    w.write("n0", r)
    overlay = read_image(tmp_path / "out" / "overlay" / "n0.jpg")
    assert overlay.shape[:2] == shape
    # outlines where the full-size masks put them: the disc box's left edge at column 10 of 160
    x = round((10 + 0.5) * shape[1] / 160 - 0.5)
    assert overlay[round(12 * shape[0] / 120), x, 1] > 150  # green disc outline
    if not reread:
        r.path = tmp_path / "gone.png"  # never read: the reduced copy was enough
        w.write("n1", r)
