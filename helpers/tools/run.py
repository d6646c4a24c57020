"""Run the numbered notebooks in order with papermill: ``python -m helpers --profile cpu``.

Every parameter is checked against every selected notebook before the first kernel starts.
Executed copies go to ``artifacts/<profile>/notebooks/``; a notebook that ran to completion
in this invocation is then published to ``figures/<profile>/notebooks/`` (atomically, without
machine-specific metadata). The first failing notebook stops the run with exit code 1, a
message naming the notebook and the cell, and its executed copy left under ``artifacts/``:
what was published before stays as it was.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from pathlib import Path
from unittest import mock

from jupyter_client.manager import AsyncKernelManager

from ..core import artifacts, checkpoint, config, progress
from . import params


class RunError(ValueError):
    """A run that cannot start: no notebook selected, or a bad parameter."""


class IPCKernelManager(AsyncKernelManager):
    """Kernels talk to the runner over local IPC sockets in the runtime folder rather than
    unencrypted TCP on loopback (which ipykernel warns about on every start)."""

    def __init__(self, **kwargs):
        import uuid
        from jupyter_core.paths import jupyter_runtime_dir
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("transport", "ipc")
        # absolute, so kernel and client agree whatever their working folders
        kwargs.setdefault("ip", str(runtime / f"kernel-{uuid.uuid4().hex[:12]}-ipc"))
        super().__init__(**kwargs)

    def format_kernel_cmd(self, extra_arguments=None):
        """The kernel command, with ipykernel's capture of its process-level output off: the
        progress lines written to the kernel's own stderr reach the runner's terminal only,
        never the notebook."""
        return super().format_kernel_cmd([*(extra_arguments or []), "--IPKernelApp.capture_fd_output=False"])


def notebooks(folder: Path = config.NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def select(folder: Path, only: list[str] | None) -> list[Path]:
    """The notebooks of ``folder`` whose name starts with one of ``only`` (all when empty)."""
    every = notebooks(folder)
    chosen = [nb for nb in every if not only or any(nb.name.startswith(o) for o in only)]
    if not chosen:
        raise RunError(f"--only {' '.join(only or [])} matches no notebook; valid: "
                       f"{', '.join(nb.stem for nb in every) or f'none in {folder}'}")
    return chosen


def declared_parameters(nb: Path) -> dict[str, str]:
    """Name -> declared type of the parameters in the notebook's ``parameters`` cell."""
    import papermill as pm
    return {name: info["inferred_type_name"] for name, info in pm.inspect_notebook(str(nb)).items()}


def given_parameters(declared: dict, profile: str, parameters: dict) -> dict:
    """The ones of ``{profile, **parameters}`` that a notebook ``declared``."""
    return {k: v for k, v in {"profile": profile, **parameters}.items() if k in declared}


def check_parameters(nbs: list[Path], profile: str, parameters: dict) -> None:
    """Every parameter must be declared by one of ``nbs`` and valid for each notebook that
    declares it (:mod:`helpers.tools.params`). Raises :class:`RunError` before anything runs."""
    declared = {nb: declared_parameters(nb) for nb in nbs}
    unknown = sorted(set(parameters) - set().union(*declared.values()))
    if unknown:
        raise RunError(f"unknown notebook parameter(s) {', '.join(unknown)}; valid parameters: "
                       f"{', '.join(sorted(set().union(*declared.values())))}")
    for nb in nbs:
        if nb.stem in params.NOTEBOOKS:
            try:
                params.check(nb.stem, given_parameters(declared[nb], profile, parameters))
            except params.ParameterError as err:
                raise RunError(f"{nb.name}: {err}") from None


def _announce(name: str):
    """A hook printing each code cell as it starts: ``cell 3: first line`` (the cell numbers of
    papermill's output notebook, as in a failure message)."""
    def on_cell_execute(cell, cell_index):
        first = next((s for s in cell.source.splitlines() if s.strip() and not s.startswith("#")), "")
        print(f"  [{name}] cell {cell_index}: {first[:90]}", file=sys.stderr, flush=True)
    return on_cell_execute


def run_one(nb: Path, out_dir: Path, profile: str, parameters: dict) -> None:
    """Execute ``nb`` into ``out_dir`` with the parameters it declares.

    The kernel gets ``$TQDM_DISABLE`` (no progress widgets stored in the notebook) and
    ``$LRP_PROGRESS`` (long loops print progress lines to this terminal instead)."""
    import papermill as pm
    given = given_parameters(declared_parameters(nb), profile, parameters)
    with mock.patch.dict(os.environ, {"TQDM_DISABLE": "1", progress.ENV: nb.stem}):
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=given, cwd=str(nb.parent),
                            progress_bar=False, log_output=False, kernel_manager_class=IPCKernelManager,
                            on_cell_execute=_announce(nb.stem))


def run_timed(nb: Path, out_dir: Path, profile: str, parameters: dict, record: Path,
              reference_s: float | None = None) -> float:
    """:func:`run_one`, its wall time appended to ``record`` whether it finishes, fails or is
    interrupted (then re-raised; a failing cell as ``SystemExit`` naming notebook and cell),
    with the machine's reference step time ``reference_s`` when measured."""
    import papermill as pm
    start = time.perf_counter()
    try:
        run_one(nb, out_dir, profile, parameters)
    except BaseException as err:  # a failure, Ctrl-C or SIGTERM: the time it cost is kept
        record_time(record, nb.name, time.perf_counter() - start, finished=False, reference_s=reference_s)
        if isinstance(err, pm.PapermillExecutionError):
            raise SystemExit(f"FAILED: {nb.name}, cell {err.cell_index} (execution count "
                             f"{err.exec_count}): {err.ename}: {err.evalue}\n"
                             f"executed copy with the traceback (not published): {out_dir / nb.name}") from None
        raise
    seconds = time.perf_counter() - start
    record_time(record, nb.name, seconds, finished=True, reference_s=reference_s)
    return seconds


def load_times(path: Path) -> dict[str, list[dict]]:
    """Notebook -> its recorded invocations (``seconds``, ``finished``, ``ended``), oldest first;
    empty when nothing was recorded. The earlier format (one number per notebook, the wall
    time of its last finished invocation) reads as one finished invocation."""
    times = checkpoint.load_json(path) if Path(path).exists() else {}
    return {name: v if isinstance(v, list) else [{"seconds": float(v), "finished": True, "ended": ""}]
            for name, v in times.items()}


def record_time(path: Path, name: str, seconds: float, finished: bool, reference_s: float | None = None) -> None:
    """Append one invocation of notebook ``name`` to the record at ``path`` (atomically). Failed
    and interrupted invocations are kept with ``finished`` false: a series run in parts, or
    resumed after an interruption, adds up to what it cost. ``reference_s``: the machine's
    reference step time measured when the runner started (``reference_step_s``)."""
    times = load_times(path)
    entry = {"seconds": round(seconds, 1), "finished": finished, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if reference_s is not None:
        entry["reference_step_s"] = round(reference_s, 4)
    checkpoint.save_json({**times, name: [*times.get(name, []), entry]}, path)


KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
"""What JupyterLab writes for ipykernel: a notebook saved with it is not marked modified on opening."""


def peak_memory_gib() -> float:
    """Largest resident memory of any kernel (child process) this run has waited for, in GiB."""
    import resource
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)


def publish(executed: Path, folder: Path) -> Path:
    """Copy an executed notebook to ``folder`` atomically, without papermill's machine-specific
    metadata (paths, timestamps)."""
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _progress_only(o)]
    return checkpoint.save_text(nbformat.writes(nb), Path(folder) / executed.name)


_PROGRESS_LINE = re.compile(r"^  \[\d\d_\w+\] \d\d:\d\d:\d\d .*$")


def _progress_only(output) -> bool:
    """A stderr stream holding nothing but runner progress lines (``progress.line``), as a
    kernel that captured its process-level output stored them."""
    return output.get("output_type") == "stream" and output.get("name") == "stderr" and \
        all(_PROGRESS_LINE.match(line) for line in output.get("text", "").splitlines() if line.strip())


def run_all(profile: str, only: list[str] | None = None, parameters: dict | None = None,
            folder: Path = config.NOTEBOOKS_DIR, reference: bool | None = None) -> dict:
    """Run the notebooks of ``folder`` (or those whose name starts with one of ``only``) in
    order, publishing each as it completes; returns the wall time of each finished one. Every
    invocation, finished or not, is appended to ``artifacts/<profile>/notebook_times.json``
    (:func:`record_time`), and REPORT.md's wall-time section rewritten (:func:`update_report_times`).
    ``reference`` (default: when the profile has a wall-time target) first measures the
    machine's reference step (:func:`benchmark.reference_step_seconds`, a few seconds), which
    every invocation's record carries."""
    parameters = parameters or {}
    selected = select(folder, only)
    check_parameters(selected, profile, parameters)
    p = params.profile_of({k: parameters.get(k) for k in ("subset_per_class", "profile_overrides")}
                          | {"profile": profile})  # where a subset writes
    out_dir = artifacts.executed_notebooks(p).path
    out_dir.mkdir(parents=True, exist_ok=True)
    times, record = {}, artifacts.notebook_times(p).path
    reference_s = None
    if (p.series_minutes > 0) if reference is None else reference:
        from ..studies.benchmark import reference_step_seconds
        reference_s = reference_step_seconds(p)
        print(f"[{profile}] reference training step: {reference_s:.3f} s (the machine's speed now)", flush=True)
    for nb in selected:
        print(f"[{profile}] running {nb.name} ...", flush=True)
        times[nb.name] = run_timed(nb, out_dir, profile, parameters, record, reference_s)
        publish(out_dir / nb.name, p.figures / "notebooks")
        update_report_times(p, folder)
        print(f"[{profile}] {nb.name} done in {times[nb.name]:.0f} s; largest kernel so far "
              f"{peak_memory_gib():.2f} GiB resident", flush=True)
    return times


def update_report_times(p: config.Profile, folder: Path = config.NOTEBOOKS_DIR) -> None:
    """Rewrite the wall-time section of ``figures/<profile>/REPORT.md`` (written by notebook 08,
    before 08 and 09 have a time) from the record, so that it ends up covering every notebook."""
    from ..reporting import report
    path = p.figures / "REPORT.md"
    if path.exists():
        times = load_times(artifacts.notebook_times(p).path)
        report.update_section(path, "times", report.times_markdown(
            times, p.series_minutes, [nb.name for nb in notebooks(folder)]))


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
                       kernel_manager_class=IPCKernelManager,
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        checkpoint.save_text(nbformat.writes(nb), nb_path)
        print("stored outputs of", nb_path.name, flush=True)


EPILOG = f"""\
The default profile is {config.DEFAULT_PROFILE!r} (or $LRP_PROFILE when set).
-p NAME VALUE reads VALUE as YAML: numbers as numbers, lists in brackets
(-p criteria_names '[lrp, weight]'; a bare word where a list is expected is refused),
null for "the profile's value". Every value is checked against every selected notebook
before the first one starts.

Notebook parameters:
{params.help_text()}
"""


def _interrupt(signum, frame):
    """SIGTERM (``kill``, a scheduler's time limit) stops the run like Ctrl-C, so that the
    running notebook's time is recorded before the runner exits."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get(config.PROFILE_ENV) or config.DEFAULT_PROFILE,
                    help=f"one of {', '.join(config.PROFILES)} (default: {config.DEFAULT_PROFILE})")
    ap.add_argument("--only", nargs="+", metavar="NN",
                    help="run only the notebooks whose name starts with these (e.g. --only 06 07)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="a notebook parameter, VALUE read as YAML")
    ap.add_argument("--store-smoke-outputs", action="store_true",
                    help="execute notebooks/ in place on the smoke profile (nbval references)")
    args = ap.parse_args(argv)
    if args.store_smoke_outputs:
        return store_smoke_outputs()
    if args.profile not in config.PROFILES:
        ap.error(f"unknown profile {args.profile!r}; valid profiles: {', '.join(config.PROFILES)}")
    import yaml
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_all(args.profile, args.only, {name: yaml.safe_load(value) for name, value in args.parameter})
    except (RunError, yaml.YAMLError) as err:
        ap.error(str(err))


if __name__ == "__main__":
    main(sys.argv[1:])
