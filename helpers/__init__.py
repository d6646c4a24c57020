"""Shared code of the notebook series: pruning VGG-16 on CIFAR-100 by explanation (LRP).

Five wings, each importing only from the wings below it (a test holds the order):

- ``tools``: the papermill runner, notebook parameter rules, GPU, browser and nbval checks, torchrun;
- ``studies``: the experiment behind each notebook (sweeps, low-data study, routes, headline, ...);
- ``methods`` and ``reporting``, side by side: LRP composites, criteria, pruning, training,
  quantization; and tables, figures, findings and REPORT.md;
- ``core``: paths, profiles and the shared vocabulary, data, models, checkpoints, artifacts,
  measurements and statistics.

``python -m helpers`` is the runner (``python -m helpers.tools.run``).
"""
