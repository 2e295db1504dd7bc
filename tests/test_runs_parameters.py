"""Parameters are read from the notebook's parameters cell and checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from extensions.runs import cli, execute
from extensions.runs.errors import ParameterError
from extensions.runs.parameters import (
    check_parameters,
    convert_text,
    declared_parameters,
    type_rule,
)
from tests.runs_support import deterministic_notebook, notebook

PARAMETERS = '''\
# comment lines are skipped
epochs: int = 3  # passes over the data
rate = 0.5
name = "baseline"
verbose: bool = False
layers = [64, 32]
options = {"seed": 1}
limit: Optional[int] = None
cutoff: "float | None" = None
data: Path = "data.csv"
anything = None
computed = 2 ** 4
'''


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = notebook(["print(epochs)"], PARAMETERS, tmp_path_factory.mktemp("nb") / "p.ipynb")
    return declared_parameters(path)


def test_every_assignment_of_the_cell_is_a_parameter_with_its_type(declared: dict) -> None:
    described = {name: d.rule.describe() for name, d in declared.items()}
    assert described == {
        "epochs": "int",
        "rate": "float",
        "name": "str",
        "verbose": "bool",
        "layers": "list",
        "options": "dict",
        "limit": "int or None",
        "cutoff": "float or None",  # papermill's inspection skips this one; the syntax tree has it
        "data": "Path (a string)",
        "anything": "any or None",
        "computed": "any or None",  # '2 ** 4' is an expression, not a literal: not checked
    }
    assert declared["epochs"].help == "passes over the data"
    assert declared["rate"].rule.inferred and not declared["epochs"].rule.inferred


@pytest.mark.parametrize(
    ("annotation", "default", "text", "expected"),
    [
        ("int", None, "3", 3),
        ("float", None, "3", 3.0),
        ("float", None, "1e-3", 0.001),
        ("bool", None, "yes", True),
        ("bool", None, "False", False),
        ("str", None, "3", "3"),
        ("list", None, "[1, 2]", [1, 2]),
        ("dict", None, "{a: 1}", {"a": 1}),
        ("Optional[int]", None, "None", None),
        ("int | str", None, "7", 7),
        ("int | str", None, "seven", "seven"),
        (None, 0.5, "2", 2.0),
        (None, None, "2", 2),
        (None, None, "true", True),
        (None, None, "text", "text"),
    ],
)
def test_text_from_the_command_line_becomes_the_declared_type(annotation, default, text, expected) -> None:
    value = convert_text(text, type_rule(annotation, default))
    assert value == expected and type(value) is type(expected)


def test_unknown_names_and_wrong_types_are_all_reported_at_once(declared: dict) -> None:
    with pytest.raises(ParameterError) as raised:
        check_parameters(
            declared,
            {"epoch": 3, "epochs": "three", "rate": "fast", "verbose": 1, "layers": "64",
             "limit": 2.5, "name": 5},
            as_text={"epochs", "rate"},
        )
    problems = raised.value.problems
    assert problems[0].startswith("unknown parameter 'epoch'; the notebook's parameters are: epochs (int)")
    assert problems[1:] == [
        "epochs: expects int, got 'three'",
        "rate: expects float, got 'fast' (the type is inferred from the default 0.5)",
        "verbose: expects bool, got int 1",  # True is not 1 here
        "layers: expects list, got str '64' (the type is inferred from the default [64, 32])",
        "limit: expects int or None, got float 2.5",
        "name: expects str, got int 5 (the type is inferred from the default 'baseline')",
    ]
    assert "nothing was run" in raised.value.message


def test_typed_values_pass_and_every_parameter_gets_its_effective_value(declared: dict) -> None:
    checked = check_parameters(declared, {"epochs": 5, "rate": 1, "limit": None, "cutoff": "0.25"},
                               as_text={"cutoff"})
    assert checked.values == {"epochs": 5, "rate": 1.0, "limit": None, "cutoff": 0.25}
    assert checked.effective["name"] == "baseline" and checked.effective["layers"] == [64, 32]
    assert checked.effective["computed"] == {"expression": "2 ** 4"}


def test_a_notebook_without_a_parameters_cell_takes_none(tmp_path: Path) -> None:
    path = notebook(["print(1)"], None, tmp_path / "plain.ipynb")
    assert check_parameters(declared_parameters(path), {}).values == {}
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        check_parameters(declared_parameters(path), {"x": 1})


def test_parameter_errors_stop_before_anything_is_created_or_started(tmp_path: Path, capsys) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    nb = deterministic_notebook(tmp_path / "analysis.ipynb")
    started: list[object] = []
    code = cli.main(["run", str(nb), "-p", "n", "many", "-p", "colour", "red", "--project", "magi",
                     "--workspace", str(workspace)])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown parameter 'colour'" in err and "n: expects int, got 'many'" in err
    assert list(workspace.iterdir()) == []  # no runs/ folder, no record
    with pytest.raises(ParameterError):
        execute.run(execute.RunRequest(nb, {"scale": "x"}, project="magi", workspace=workspace),
                    sink=started.append)
    assert started == [] and list(workspace.iterdir()) == []  # no progress: no kernel was started
