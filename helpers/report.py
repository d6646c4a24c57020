"""Small result tables and the README's results block, generated from saved metrics."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import checkpoint, config, measure

README = config.REPO_ROOT / "README.md"
_BLOCK = re.compile(r"(<!-- results:start -->\n).*?(<!-- results:end -->)", re.S)


def model_metrics(model, test: dict, input_size: int) -> dict:
    """Test accuracy and loss beside parameters, FLOPs and size on disk."""
    size = measure.size_on_disk(model)
    return {"test_acc": round(test["acc"], 2), "test_loss": round(test["loss"], 4),
            "parameters": measure.parameters(model), "flops": measure.flops(model, input_size),
            "size_MB": round(size["MB"], 3), "size_MiB": round(size["MiB"], 3)}


def training_metrics(history: pd.DataFrame) -> dict:
    """Epochs, training wall time (minutes, summed over epochs) and mean images/s."""
    return {"epochs": len(history), "train_minutes": round(history["epoch_s"].sum() / 60, 2),
            "train_img_per_s": round(history["img_per_s"].mean(), 1)}


def write_table(df: pd.DataFrame, folder: Path, name: str) -> Path:
    """Save ``df`` as ``name.csv`` (the data) and ``name.md`` (for reading) in ``folder``."""
    checkpoint.save_text(df.to_csv(index=False), Path(folder) / f"{name}.csv")
    checkpoint.save_text(df.to_markdown(index=False) + "\n", Path(folder) / f"{name}.md")
    return Path(folder) / f"{name}.csv"


def read_table(folder: Path, name: str) -> pd.DataFrame:
    path = Path(folder) / f"{name}.csv"
    if not path.exists():
        raise checkpoint.CheckpointError(f"{path} does not exist: run the notebooks of that "
                                         "profile first (python -m helpers.run)")
    return pd.read_csv(path)


def baseline_markdown(profile: str = "cpu") -> str:
    """The README's baseline section, from ``figures/<profile>/baseline_metrics.csv``."""
    folder = config.FIGURES_ROOT / profile
    m = read_table(folder, "baseline_metrics").iloc[0]
    rows = [("test top-1 accuracy", f"{m.test_acc:.2f} %"), ("test loss", f"{m.test_loss:.3f}"),
            ("parameters", f"{int(m.parameters):,}"), ("FLOPs per image", f"{int(m.flops) / 1e6:.1f} M"),
            ("size on disk", f"{m.size_MB:.2f} MB ({m.size_MiB:.2f} MiB)"),
            ("training time", f"{m.train_minutes:.1f} min for {int(m.epochs)} epochs"),
            ("training throughput", f"{m.train_img_per_s:.0f} images/s")]
    table = pd.DataFrame(rows, columns=["baseline (" + profile + " profile)", "value"])
    return (table.to_markdown(index=False) + "\n\n"
            f"![training curves](figures/{profile}/baseline_training_curves.png)\n")


def update_readme(profile: str = "cpu", readme: Path = README) -> str:
    """Replace the README's results block with the text generated from saved results."""
    text = readme.read_text()
    if not _BLOCK.search(text):
        raise ValueError(f"{readme} has no '<!-- results:start -->' ... '<!-- results:end -->' block")
    new = _BLOCK.sub(lambda m: m.group(1) + results_markdown(profile) + m.group(2), text)
    checkpoint.save_text(new, readme)
    return new


def results_markdown(profile: str = "cpu") -> str:
    return baseline_markdown(profile)


def readme_block(readme: Path = README) -> str:
    m = _BLOCK.search(readme.read_text())
    return m.group(0)[len("<!-- results:start -->\n"):-len("<!-- results:end -->")] if m else ""


if __name__ == "__main__":
    import sys
    update_readme(sys.argv[1] if len(sys.argv) > 1 else "cpu")
