"""Reproducible notebook runs: papermill with parameters checked first, here or on Nomad, each
leaving a record (parameters, code version, environment, input data, outputs, resources).

    python -m extensions.runs run notebook.ipynb -p epochs 3      # see extensions/runs/cli.py

In a notebook, record a named output with ``record_output("auc", 0.91)``. Modules:
``parameters`` (the parameters cell, checks), ``provenance`` (code, environment, inputs),
``outputs`` (recorded values, output hashes, error cell), ``records`` (model, store, compare),
``progress`` (cell n of m), ``local`` (papermill engine), ``execute`` (the pipeline),
``nomad`` (batch jobs), ``quota`` (accounting hook), ``cli``, ``widget`` (JupyterLab panel).
This package's import is light on purpose: notebooks import it for ``record_output``.
"""

from .outputs import record_output

__all__ = ["record_output"]
