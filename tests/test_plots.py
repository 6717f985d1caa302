"""Training curves stay readable from a single epoch up: visible points, whole-number epoch ticks."""

from __future__ import annotations

import pytest

from rllm_zoo.training.plots import _curves_figure, plot_curves


def _history(n: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e,
            "val_auc": 0.6 + 0.05 * e,
            "val_acc": 0.5 + 0.05 * e,
            "best": e == max(1, n - 1),
        }
        for e in range(1, n + 1)
    ]


@pytest.mark.parametrize("epochs", [1, 3, 100])
def test_curves_have_integer_epoch_ticks_and_visible_points(tmp_path, epochs):
    import matplotlib.pyplot as plt

    history = _history(epochs)
    fig = _curves_figure(history, "t")
    try:
        assert len(fig.axes) == 2
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            assert lo < 1 and hi > epochs  # a lone epoch sits inside the axes, not on its edge
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert 1 in ticks or epochs > 30
            lines = [ln for ln in ax.get_lines() if ln.get_label() != "_nolegend_"]
            series = [ln for ln in lines if len(ln.get_xdata()) == epochs and ln.get_linestyle() == "-"]
            assert len(series) == 2
            for ln in series:  # a single point is only visible as a marker; many points need none
                assert (ln.get_marker() not in (None, "None", "", " ")) == (epochs <= 30)
        selected = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("selected")]
        assert selected and selected[0].get_xdata()[0] == max(1, epochs - 1)
    finally:
        plt.close(fig)

    out = tmp_path / "curves.png"
    plot_curves(history, out, "t")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # the atomic write left no temp file
