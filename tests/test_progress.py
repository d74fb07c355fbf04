"""Progress off a terminal: a line now and then with count, rate and time left, never silence."""

import pytest

from srpipe import progress as progress_module
from srpipe.progress import progress


@pytest.fixture
def every_call(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_EVERY", 0.0)  # a line at every step, for the test


def test_off_a_terminal_long_work_logs_lines_with_rate_and_time_left(capsys, every_call):
    items = list(progress(range(4), total=4, desc="validate", unit="img"))
    assert items == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"validate: {i}/4 img" for i in range(1, 5)]
    assert " img/s, " in lines[0] and "elapsed, about " in lines[0] and lines[0].endswith(" left")


    # steps at 10 s, 11 s and 100 s: the mean rate is 0.03 it/s (tqdm's smoothed rate said otherwise)
    now = {"t": 0.0}
    bar = progress(total=10, desc="slow", unit="it")
    bar.start_t = bar.last_print_t = 0.0
    bar._time = lambda: now["t"]
    for t in (10.0, 11.0, 100.0):
        now["t"] = t
        bar.update(1)
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("slow: 3/10 it, 0.03 it/s, 01:40 elapsed, about 03:53 left"), line

    bar = progress(total=10, desc="train", unit="it")
    bar.update(3)
    bar.set_postfix(loss="0.0123")
    bar.update(2)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: 3/10 it, ") and lines[-1].startswith("train: 5/10 it, ")
    assert lines[-1].endswith("(loss=0.0123)")


def test_disabled_stays_silent_and_slow_work_is_not_flooded(capsys):
    assert list(progress(range(3), disable=True)) == [0, 1, 2]
    assert list(progress(range(1000), desc="fast")) == list(range(1000))  # within LOG_EVERY: no line
    assert capsys.readouterr().err == ""
