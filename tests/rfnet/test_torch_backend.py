"""The PyTorch model behind the Backend interface (rfnet.torch_backend)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rfnet.common.contract import parse_metadata  # noqa: E402
from rfnet.torch_backend import TorchBackend  # noqa: E402
from tests.support.small_model import small_config  # noqa: E402


def test_torch_backend_contract() -> None:
    """The PyTorch runner (untrained light preset, random weights) behind the Backend interface."""
    with TorchBackend("preset:light", threads=2) as b:
        meta = parse_metadata(b.metadata, "preset:light")
        assert meta.input_size == 512 and meta.precision == "fp32" and meta.preset == "light"
        s = meta.input_size
        out = b.infer({"image": np.zeros((1, 3, s, s), np.float32)})
        k, m = meta.top_k, meta.mask_size
        assert out["boxes"].shape == (1, k, 4) and out["scores"].shape == (1, k)
        assert out["masks"].shape == (1, k, 2, m, m) and out["masks"].dtype == np.float32
        assert np.all((out["masks"] >= 0) & (out["masks"] <= 1))
    with pytest.raises(ValueError, match="needs device 'cuda'"):
        TorchBackend("preset:light", mode="fp16")


def test_model_in_memory_is_used_as_it_is() -> None:
    """from_model: the caller's model and config, no global PyTorch setting changed."""
    from rfnet.model import build_model

    cfg = small_config()
    cfg.roi_heads.detections_per_img = 4
    cfg.mask_head.box_scale = 1.25
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    threads = torch.get_num_threads()
    x = np.random.default_rng(0).normal(size=(2, 3, cfg.input.size, cfg.input.size)).astype(np.float32)
    with TorchBackend.from_model(model, cfg) as b:
        assert b._model is model and b.device.startswith("CPU")
        meta = parse_metadata(b.metadata, "in memory")
        assert meta.top_k == 4 and meta.mask_box_scale == 1.25 and meta.input_size == cfg.input.size
        got = b.infer({"image": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    for name in ("boxes", "scores", "masks"):
        np.testing.assert_array_equal(got[name], want[name].numpy())
    assert torch.get_num_threads() == threads and not model.training
