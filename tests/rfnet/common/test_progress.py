"""rfnet.common.progress.track: a bar on a terminal, one log line per stage elsewhere."""
from __future__ import annotations

import io
import logging

import pytest

from rfnet.common import progress


def test_no_terminal_gives_one_line_per_stage(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    err = io.StringIO()  # a file or a pipe: not a terminal
    monkeypatch.setattr(progress.sys, "stderr", err)
    with caplog.at_level(logging.INFO):
        assert list(progress.track(range(5), desc="decode", unit="img")) == [0, 1, 2, 3, 4]
        assert list(progress.track(range(2), desc="quiet", summary=False)) == [0, 1]
    assert err.getvalue() == ""  # no bar fragments
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("decode: 5 img in ")


def test_terminal_gets_the_bar(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(progress.sys, "stderr", err)
    with caplog.at_level(logging.INFO):
        assert list(progress.track(range(3), desc="bar", unit="img")) == [0, 1, 2]
        assert list(progress.track(range(3), desc="off", enabled=False)) == [0, 1, 2]
    assert "bar" in err.getvalue() and "\r" in err.getvalue()  # tqdm's own redraws
    assert [r.getMessage()[:8] for r in caplog.records] == ["off: 3 i"]  # --no-progress: the line instead
