"""Foundations every other wing uses: paths and profiles (``config``), the shared names
(``vocabulary``), data, models, checkpoints, the artifact contract, measurements, statistics,
progress lines and the process group."""
