"""The helper that reads executed notebooks in the notebook tests (a kernel may split one
print into several stream outputs; the tests must read it as JupyterLab shows it)."""

from __future__ import annotations

import nbformat

from tests.fixtures.notebook_output import shown_text


def test_a_print_split_into_two_stream_messages_reads_as_one_line() -> None:
    cell = nbformat.v4.new_code_cell("print(volume.dims, volume.shape)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="('z', 'y', 'x')"),
        nbformat.v4.new_output("stream", name="stdout", text=" (50, 128, 128) HU\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
        nbformat.v4.new_output("stream", name="stdout", text="after\n"),
    ]
    other = nbformat.v4.new_code_cell("print('x')")
    other.outputs = [nbformat.v4.new_output("stream", name="stdout", text="next cell\n")]
    notebook = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("# m"), other])
    assert shown_text(notebook).split("\n") == [
        "('z', 'y', 'x') (50, 128, 128) HU", "", "a warning", "", "42", "after", "", "next cell", "",
    ]
