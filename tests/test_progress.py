"""progress_bar in logs: plain lines on a non-terminal stderr, throttled by ROBUST_PT_LOG_EVERY."""

from __future__ import annotations

import io
import sys

import pytest

from robust_pt.errors import ConfigError, RobustPTError
from robust_pt.runtime.progress import LogProgress, format_duration, log_interval, progress_bar


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fake_stderr(monkeypatch) -> io.StringIO:
    """A non-terminal stderr (StringIO.isatty() is False), logging not silenced.

    Called in the test body: pytest's capture reassigns sys.stderr between setup and call.
    """
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.delenv("ROBUST_PT_QUIET", raising=False)
    return fake


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_every_advance_logged_with_counts_and_fields(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "0")
    clock = FakeClock()
    with progress_bar("pgd shapes-vqa", total=512, unit="examples", clock=clock) as advance:
        for k in range(4):
            clock.t += 62.0
            advance(128, survivors=40 - k)
    out = lines(stderr)
    assert out == [
        "[robust-pt] pgd shapes-vqa: 128/512 examples (25%) survivors=40 elapsed 1m02s eta 3m06s",
        "[robust-pt] pgd shapes-vqa: 256/512 examples (50%) survivors=39 elapsed 2m04s eta 2m04s",
        "[robust-pt] pgd shapes-vqa: 384/512 examples (75%) survivors=38 elapsed 3m06s eta 1m02s",
        "[robust-pt] pgd shapes-vqa: 512/512 examples (100%) survivors=37 elapsed 4m08s eta 0s",
    ]  # no repeated final line: nothing advanced after the last one


def test_large_interval_logs_only_the_final_line(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "3600")
    clock = FakeClock()
    with progress_bar("finetune ofa shapes-vqa", total=100, clock=clock) as advance:
        for step in range(60):
            clock.t += 1.0
            advance(1, loss=f"{1.0 / (step + 1):.3f}")
    assert lines(stderr) == ["[robust-pt] finetune ofa shapes-vqa: 60/100 (60%) loss=0.017 elapsed 1m00s eta 40s"]


def test_interval_throttles_lines(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "30")
    clock = FakeClock()
    with progress_bar("run", total=100, clock=clock) as advance:
        for _ in range(100):
            clock.t += 1.0
            advance(1)
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines(stderr)]
    assert done == [30, 60, 90, 100]


def test_fields_persist_and_resume_jump_does_not_distort_eta(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "0")
    clock = FakeClock()
    with progress_bar("pgd shapes-vqa", total=1000, clock=clock) as advance:
        advance(500, resumed=500)  # at once: done by an earlier run
        clock.t += 10.0
        advance(100, survivors="7@8/255")
    last = lines(stderr)[-1]
    # 100 examples in 10 s since the resume: 400 left take 40 s (not 400 * 10 / 600)
    assert last == "[robust-pt] pgd shapes-vqa: 600/1000 (60%) resumed=500 survivors=7@8/255 elapsed 10s eta 40s"


def test_quiet_prints_nothing(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_QUIET", "1")
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "0")
    with progress_bar("run", total=3) as advance:
        for _ in range(3):
            advance(1, loss="0.5")
    assert stderr.getvalue() == ""


def test_nothing_advanced_nothing_printed(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "0")
    with progress_bar("run", total=3):
        pass
    assert stderr.getvalue() == ""


def test_final_line_when_the_body_raises(monkeypatch):
    stderr = fake_stderr(monkeypatch)
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "3600")
    clock = FakeClock()
    with pytest.raises(KeyError):
        with progress_bar("run", total=10, clock=clock) as advance:
            clock.t += 5.0
            advance(2)
            raise KeyError("boom")
    assert lines(stderr) == ["[robust-pt] run: 2/10 (20%) elapsed 5s eta 20s"]


def test_log_interval_env(monkeypatch):
    monkeypatch.delenv("ROBUST_PT_LOG_EVERY", raising=False)
    assert log_interval() == 30.0
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "2.5")
    assert log_interval() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("ROBUST_PT_LOG_EVERY", bad)
        with pytest.raises(ConfigError, match="ROBUST_PT_LOG_EVERY") as err:
            log_interval()
        assert isinstance(err.value, RobustPTError)


def test_format_duration_and_unknown_eta():
    assert [format_duration(s) for s in (0, 4.6, 59, 62, 186, 3600, 7384)] == [
        "0s",
        "5s",
        "59s",
        "1m02s",
        "3m06s",
        "1h00m00s",
        "2h03m04s",
    ]
    clock = FakeClock()
    log = LogProgress("run", total=0, every=0.0, stream=io.StringIO(), clock=clock)
    assert log.line(clock()) == "[robust-pt] run: 0/0 elapsed 0s eta 0s"  # no percentage of nothing
    log = LogProgress("run", total=5, every=0.0, stream=io.StringIO(), clock=clock)
    assert log.line(clock()) == "[robust-pt] run: 0/5 (0%) elapsed 0s eta ?"
