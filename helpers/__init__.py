"""Shared code of the notebook series: pruning VGG-16 on CIFAR-100 by explanation (LRP).

One concept per module: ``config`` (paths, profiles, seeds), ``data``, ``models``,
``checkpoint``, ``training``, ``measure``, ``plots``, ``report``, ``run`` (papermill batch).
"""
