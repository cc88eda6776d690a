"""runtime/serve.py and runtime/client.py command lines: the checks that need no server and no
serving library (they run in every environment)."""
from __future__ import annotations

import importlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rfnet.common.cli import ExitCode
from rfnet.errors import UsageError
from rfnet.runtime import client, serve


def _no(module_prefix: str, monkeypatch: pytest.MonkeyPatch, target: object) -> None:
    real = importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name.startswith(module_prefix):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(target, "import_module", fake)


def test_serve_usage_errors_exit_2_before_loading_anything(tmp_path: Path, contract_onnx: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    cases = {
        "model file not found": ["--model", str(tmp_path / "missing.onnx")],
        "--instances > 1 with a TensorRT engine": ["--model", str(engine), "--instances", "2"],
        "--threshold must be in [0, 1)": ["--model", str(contract_onnx), "--threshold", "1.5"],
        "--max-batch-size must be >= 1": ["--model", str(contract_onnx), "--max-batch-size", "0"],
        "--min-score must be in [0, 1)": ["--model", str(contract_onnx), "--min-score", "1.5"],
    }
    for message, argv in cases.items():
        assert serve.main(argv) == ExitCode.USAGE, argv
        assert message in capsys.readouterr().err


def test_serve_min_score_reaches_the_settings(contract_onnx: Path) -> None:
    """The gate of runtime/infer.py: the model's rfnet.min_disc_score unless --min-score says otherwise."""
    parser = serve.build_parser()
    assert serve.settings_from_args(parser.parse_args(["--model", str(contract_onnx)])).min_score is None
    got = serve.settings_from_args(parser.parse_args(["--model", str(contract_onnx), "--min-score", "0.25"]))
    assert got.min_score == 0.25


def test_serve_without_pytriton_names_the_extra(contract_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _no("pytriton", monkeypatch, serve.importlib)
    assert serve.main(["--model", str(contract_onnx)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "nvidia-pytriton is not installed" in err and '.[serve]' in err


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match=f"port {s.getsockname()[1]} on 127.0.0.1 is not available"):
            serve.check_port_free("127.0.0.1", s.getsockname()[1])


def test_python_library_path_is_set_only_while_the_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x")
    with serve._python_library_path():
        inside = serve.os.environ["LD_LIBRARY_PATH"]
    assert serve.os.environ["LD_LIBRARY_PATH"] == "/opt/x" and inside.endswith("/opt/x")


def test_client_urls() -> None:
    assert client.parse_url("h:8000") == ("http", "h:8000")
    assert client.parse_url("h:8001", "grpc") == ("grpc", "h:8001")
    assert client.parse_url("grpc://h:8001") == ("grpc", "h:8001")
    with pytest.raises(UsageError, match="scheme must be"):
        client.parse_url("https://h:1")
    with pytest.raises(UsageError, match="says grpc but --protocol says http"):
        client.parse_url("grpc://h:1", "http")


def test_client_errors_exit_2_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], contract) -> None:
    img = contract.write_images(tmp_path / "in")[0]
    out = tmp_path / "out"
    assert client.main(["--url", "h:1", "--output", str(out), str(tmp_path / "nothing_here")]) == ExitCode.USAGE
    assert "no such file or folder" in capsys.readouterr().err
    _no("tritonclient", monkeypatch, client.importlib)
    assert client.main(["--url", "h:1", "--output", str(out), str(img)]) == ExitCode.USAGE
    assert "tritonclient[http] is not installed" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", [["-m", "rfnet.runtime.serve"], ["-m", "rfnet.runtime.client"], ["benchmarks/serve_load.py"]])
def test_documented_commands_run(command: list[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, *command, "--help"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
