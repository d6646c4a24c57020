"""Run the numbered notebooks in order with papermill: ``python -m helpers.run --profile cpu``.

Executed copies go to ``artifacts/<profile>/notebooks/``. The first failing notebook stops
the run with exit code 1 and a message naming the notebook and the cell.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import checkpoint, config


def notebooks(folder: Path = config.NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(nb: Path) -> set[str]:
    """Names in the notebook's cell tagged ``parameters``."""
    import papermill as pm
    return set(pm.inspect_notebook(str(nb)))


def check_parameters(nbs: list[Path], parameters: dict) -> None:
    """Every given parameter must be declared by at least one of ``nbs``."""
    valid = set().union(*(declared_parameters(nb) for nb in nbs)) if nbs else set()
    unknown = sorted(set(parameters) - valid)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {', '.join(unknown)}; "
                         f"valid parameters: {', '.join(sorted(valid))}")


def run_one(nb: Path, out_dir: Path, profile: str, parameters: dict) -> float:
    """Execute ``nb`` into ``out_dir`` with the parameters it declares; return seconds taken."""
    import papermill as pm
    declared = declared_parameters(nb)
    given = {k: v for k, v in {"profile": profile, **parameters}.items() if k in declared}
    start = time.perf_counter()
    pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=given,
                        cwd=str(nb.parent), progress_bar=False, log_output=False)
    return time.perf_counter() - start


def store_smoke_outputs(nbs: list[Path] | None = None) -> None:
    """Execute the notebooks in place on the smoke profile: the reference outputs nbval checks.

    Run with ``LRP_ARTIFACTS`` pointing at an empty folder so that nothing is resumed.
    No timing metadata is recorded, so the stored notebooks carry no timestamps.
    """
    import nbformat
    from nbclient import NotebookClient
    os.environ[config.PROFILE_ENV] = "smoke"
    os.environ.setdefault("TQDM_DISABLE", "1")
    for nb_path in nbs or notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        NotebookClient(nb, kernel_name="python3", record_timing=False, timeout=1200,
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
        nbformat.write(nb, nb_path)
        print("stored outputs of", nb_path.name, flush=True)


def run_all(profile: str, only: list[str] | None = None, parameters: dict | None = None,
            folder: Path = config.NOTEBOOKS_DIR) -> dict:
    """Run every notebook in ``folder`` (or those whose name starts with one of ``only``) in
    order; returns the wall time of each, also saved to ``artifacts/<profile>/notebook_times.json``."""
    import papermill as pm
    p = config.get_profile(profile)
    out_dir = p.artifacts / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = [nb for nb in notebooks(folder) if not only or any(nb.name.startswith(o) for o in only)]
    check_parameters(selected, parameters or {})
    times, record = {}, p.artifacts / "notebook_times.json"
    for nb in selected:
        print(f"[{profile}] running {nb.name} ...", flush=True)
        try:
            times[nb.name] = run_one(nb, out_dir, profile, parameters or {})
        except pm.PapermillExecutionError as err:
            raise SystemExit(f"FAILED: {nb.name}, cell {err.cell_index} (execution count "
                             f"{err.exec_count}): {err.ename}: {err.evalue}\n"
                             f"executed copy with the traceback: {out_dir / nb.name}") from None
        print(f"[{profile}] {nb.name} done in {times[nb.name]:.0f} s", flush=True)
        # after every notebook, so an interrupted series keeps the times it measured;
        # a partial run updates its notebooks' entries only
        earlier = checkpoint.load_json(record) if record.exists() else {}
        checkpoint.save_json({**earlier, nb.name: times[nb.name]}, record)
    publish_notebooks(profile)
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default=os.environ.get(config.PROFILE_ENV, config.DEFAULT_PROFILE),
                    help=f"one of {', '.join(config.PROFILES)}")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="a notebook parameter (value read as YAML)")
    ap.add_argument("--store-smoke-outputs", action="store_true",
                    help="execute notebooks/ in place on the smoke profile (nbval references)")
    args = ap.parse_args(argv)
    if args.store_smoke_outputs:
        return store_smoke_outputs()
    if args.profile not in config.PROFILES:
        ap.error(f"unknown profile {args.profile!r}; valid profiles: {', '.join(config.PROFILES)}")
    import yaml
    params = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        run_all(args.profile, args.only, params)
    except ValueError as err:
        ap.error(str(err))


def publish_notebooks(profile: str) -> list[Path]:
    """Copy the executed notebooks of ``profile`` to ``figures/<profile>/notebooks/``, without
    papermill's machine-specific metadata (paths, timestamps)."""
    import nbformat
    p = config.get_profile(profile)
    out = p.figures / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in notebooks(p.artifacts / "notebooks"):
        nb = nbformat.read(src, as_version=4)
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        checkpoint.save_text(nbformat.writes(nb), out / src.name)
        written.append(out / src.name)
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
