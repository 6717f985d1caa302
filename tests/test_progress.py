"""Progress: a tqdm bar on a terminal, plain periodic lines (no control characters) in a piped log."""

from __future__ import annotations

import io

import pytest
from tqdm.auto import tqdm

from rllm_zoo.progress import ENV, PlainProgress, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def _clean(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text


def test_plain_lines_when_not_a_tty_one_per_update_with_interval_zero():
    buf = io.StringIO()
    bar = progress(range(1, 5), desc="epochs", total=20, initial=0, file=buf, interval=0)
    assert isinstance(bar, PlainProgress) and len(bar) == 20
    seen = []
    for epoch in bar:
        seen.append(epoch)
        bar.set_postfix(val_auc=f"{0.7:.3f}", val_acc=0.55)
    assert seen == [1, 2, 3, 4]
    _clean(buf.getvalue())
    lines = _lines(buf)
    assert len(lines) == 4  # one per update; the final state was already the last line
    assert lines[0].startswith("epochs: 1/20 (5%) 0:00:00 elapsed")
    assert lines[-1].startswith("epochs: 4/20 (20%) ")
    assert lines[-1].endswith("val_auc=0.700 val_acc=0.55")


def test_large_interval_gives_only_the_final_line_with_the_total():
    buf = io.StringIO()
    for _ in progress(range(7), desc="batches", file=buf, interval=3600):
        pass
    _clean(buf.getvalue())
    assert _lines(buf) == ["batches: 7/7 (100%) 0:00:00 elapsed"]


def test_manual_updates_postfix_write_and_context_manager():
    buf = io.StringIO()
    with progress(total=3, desc="publish", unit="model", file=buf, interval=3600) as bar:
        for name in "abc":
            bar.write(f"pushed {name}")
            bar.update()
            bar.set_postfix_str(f"last={name}")
    bar.close()  # idempotent
    _clean(buf.getvalue())
    assert _lines(buf) == ["pushed a", "pushed b", "pushed c", "publish: 3/3 (100%) 0:00:00 elapsed, last=c"]


def test_unknown_total_counts_in_units_and_len_raises():
    buf = io.StringIO()
    bar = progress(iter("xyz"), desc="files", unit="file", file=buf, interval=3600)
    with pytest.raises(TypeError):
        len(bar)
    assert bar and list(bar) == ["x", "y", "z"]
    assert _lines(buf) == ["files: 3 file 0:00:00 elapsed"]


def test_resumed_run_counts_from_initial_and_break_still_reports():
    buf = io.StringIO()
    for epoch in progress(range(4, 11), desc="epochs", total=10, initial=3, file=buf, interval=3600):
        if epoch == 6:
            break
    assert _lines(buf) == ["epochs: 5/10 (50%) 0:00:00 elapsed, 0:00:00 left"]


def test_leave_false_writes_no_final_line():
    buf = io.StringIO()
    for _ in progress(range(3), desc="epoch 1", leave=False, file=buf, interval=3600):
        pass
    assert buf.getvalue() == ""


def test_disable_writes_nothing():
    buf = io.StringIO()
    bar = progress(range(3), desc="x", disable=True, file=buf, interval=0)
    assert list(bar) == [0, 1, 2]
    bar.update(5)
    bar.set_postfix(a=1)
    bar.close()
    tty = FakeTTY()
    with progress(total=2, disable=True, file=tty, interval=0) as quiet:
        quiet.update(2)
    assert buf.getvalue() == "" and tty.getvalue() == ""


def test_tty_gets_a_tqdm_bar():
    tty = FakeTTY()
    bar = progress(range(3), desc="epochs", file=tty)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    bar.close()
    assert "epochs" in tty.getvalue()


@pytest.mark.parametrize(
    ("mode", "tty", "kind"),
    [
        ("plain", True, PlainProgress),
        ("bar", False, tqdm),
        ("PLAIN", True, PlainProgress),
        ("auto", True, tqdm),
        ("auto", False, PlainProgress),
    ],
)
def test_environment_override(monkeypatch, mode, tty, kind):
    monkeypatch.setenv(ENV, mode)
    buf = FakeTTY() if tty else io.StringIO()
    bar = progress(range(2), desc="d", file=buf, interval=0)
    assert isinstance(bar, kind)
    assert list(bar) == [0, 1]
    bar.close()
    if kind is PlainProgress:
        _clean(buf.getvalue())
        assert _lines(buf)[-1].startswith("d: 2/2 (100%)")


def test_environment_off_silences_even_a_tty(monkeypatch):
    monkeypatch.setenv(ENV, "off")
    tty = FakeTTY()
    bar = progress(range(3), desc="d", file=tty, interval=0)
    assert list(bar) == [0, 1, 2]
    assert tty.getvalue() == ""


def test_unknown_environment_value_warns_and_picks_by_the_output(monkeypatch):
    monkeypatch.setenv(ENV, "fancy")
    with pytest.warns(UserWarning, match=ENV):
        bar = progress(range(1), file=io.StringIO())
    assert isinstance(bar, PlainProgress)
