"""Regenerate the README's figures: `uv run python docs/make_figures.py`."""

from pathlib import Path

from fastgr.plots import plot_weight_curves, save_figure

HERE = Path(__file__).parent

if __name__ == "__main__":
    save_figure(plot_weight_curves([(0.0, 2.0), (0.5, 8.0), (1.0, 16.0), (2.0, 12.0)]), HERE / "weight_curves.png")
    print(f"wrote {HERE / 'weight_curves.png'}")
