"""Running and checking the series: the papermill runner, notebook parameter rules, the GPU and
browser checks, torchrun training, and the nbval plugin."""
