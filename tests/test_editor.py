"""`cnncompile lsp` end to end: a real LSP client (pytest-lsp) drives the server in a
subprocess over stdio, as an editor does. Expected values come from `check` itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from click.testing import CliRunner
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from cnncompile.cli import main
from tests.conftest import EXAMPLES, ROOT, spec_text
from tests.lsp_client import diagnostics_of, recording_client, versions_published
from tests.test_blocks import BOTTLENECK

in_session = pytest.mark.asyncio(loop_scope="module")  # the tests share one server (the fixture's scope)

MNIST = (ROOT / "examples" / "mnist_cnn.yaml").read_text()
NASNET = (ROOT / "examples" / "zoo" / "nasnet_mobile.yaml").read_text()
# A misspelled key and layer type and an unknown input: the tests compare with whatever `check`
# reports of them (more at once as the language recovers from errors).
BROKEN = spec_text("""
    {type: Conv2D, filtrs: 8, kernel_size: 3}
    {type: MaxPoolin2D}
    {type: Dense, units: 10, inputs: [conv2dd]}
""")
# A kernel that does not fit, inside a block (so with an expansion note), and, once it fits, a
# dead branch (a warning).
SHAPES = """name: m
input: {shape: [8, 8, 1]}
blocks:
  pair:
    params: {kernel: 3}
    layers:
      - {type: Conv2D, filters: 4, kernel_size: "${kernel}"}
layers:
  - {type: Conv2D, filters: 4, kernel_size: 3}
  - {type: Conv2D, name: unused, filters: 4, kernel_size: 1}
  - {block: pair, kernel: 9, inputs: [conv2d]}
  - {type: Flatten}
"""


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "cnncompile", "lsp"], client_factory=recording_client))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


_versions: dict[str, int] = {}


async def edit(client: LanguageClient, name: str, text: str) -> list[lsp.Diagnostic]:
    """Open (first time) or replace the document `name`; the diagnostics published for it."""
    uri = f"file:///work/{name}"
    version = _versions.get(uri, 0) + 1
    _versions[uri] = version
    if version == 1:
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "yaml", version, text)))
    else:
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version, uri), [lsp.TextDocumentContentChangeWholeDocument(text)]))
    return await diagnostics_of(client, uri, version)


def doc(name: str) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(f"file:///work/{name}")


def check_lines(tmp_path: Path, text: str, *args: str) -> list[str]:
    """`check`'s output lines for `text`, the file named m.yaml."""
    spec = tmp_path / "m.yaml"
    spec.write_text(text)
    output = CliRunner().invoke(main, ["check", str(spec), *args]).output
    return output.replace(str(spec), "m.yaml").splitlines()


def at(text: str, needle: str, occurrence: int = 0, offset: int = 0) -> lsp.Position:
    """The position of the `occurrence`-th `needle` in `text`, plus `offset` characters."""
    index = [m.start() for m in re.finditer(re.escape(needle), text)][occurrence] + offset
    line = text.count("\n", 0, index)
    return lsp.Position(line, index - (text.rfind("\n", 0, index) + 1))


def labels(items) -> list[str]:
    return [item.label for item in items.items] if items else []


@in_session
async def test_diagnostics_are_checks_at_the_same_places_and_clear_when_fixed(client, tmp_path):
    found = {}
    for name, text in (("broken", BROKEN), ("shapes", SHAPES), ("dead", SHAPES.replace("kernel: 9", "kernel: 3"))):
        found[name] = await edit(client, "broken.yaml", text)
        expected = [line for line in check_lines(tmp_path, text) if re.match(r"m\.yaml:\d+:\d+: (error|warning)", line)]
        ours = [f"m.yaml:{d.range.start.line + 1}:{d.range.start.character + 1}: "
                f"{'error' if d.severity == lsp.DiagnosticSeverity.Error else 'warning'}: {d.message}"
                for d in found[name]]
        assert ours == expected and ours
    # The kernel inside the block: the range spans the value, the note points at the use.
    (inside,) = found["shapes"]
    assert "kernel 9x9" in inside.message
    assert inside.range.start == at(SHAPES, '"${kernel}"') and inside.range.end == at(SHAPES, '"${kernel}"', offset=11)
    (note,) = inside.related_information
    assert "in expansion of block 'pair'" in note.message and note.location.range.start == at(SHAPES, "{block: pair")
    (warning,) = found["dead"]
    assert warning.severity == lsp.DiagnosticSeverity.Warning and "'unused'" in warning.message
    assert await edit(client, "broken.yaml", MNIST) == []


@in_session
async def test_every_example_shows_what_check_prints(client, tmp_path):
    for example in EXAMPLES:
        text = example.read_text()
        found = await edit(client, example.name, text)
        expected = [line for line in check_lines(tmp_path, text) if re.match(r"m\.yaml:\d+:\d+: ", line)]
        assert [f"m.yaml:{d.range.start.line + 1}:{d.range.start.character + 1}: warning: {d.message}"
                for d in found] == expected, example.name


@in_session
async def test_columns_are_counted_in_utf16_code_units_as_lsp_says(client, tmp_path):
    text = MNIST.replace("dataset: mnist", 'dataset: {path: "\U0001F642.npz", test_split: 2}')
    (found,) = await edit(client, "emoji.yaml", text)
    (line,) = [line for line in check_lines(tmp_path, text) if ": error: " in line]
    _, row, col, _ = line.split(":", 3)
    assert "test_split" in found.message
    # check's column counts characters; the smiley before the value is two UTF-16 code units.
    assert found.range.start == lsp.Position(int(row) - 1, int(col) - 1 + 1)
    assert found.range.end.character == found.range.start.character + 1


@in_session
async def test_a_burst_of_edits_ends_with_the_last_texts_diagnostics(client):
    """Keys typed while an analysis runs are analysed together, newest text only: the last
    version published is the last one sent, and its diagnostics are that text's."""
    await edit(client, "burst.yaml", NASNET)
    uri, first = "file:///work/burst.yaml", _versions["file:///work/burst.yaml"]
    versions = range(first + 1, first + 11)
    for version in versions:  # the last edit breaks the Dense layer; the others add a comment
        text = NASNET + "#" * version if version != versions[-1] else NASNET.replace("units: 1000", "units: 0")
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version, uri), [lsp.TextDocumentContentChangeWholeDocument(text)]))
    _versions[uri] = versions[-1]
    (error,) = await diagnostics_of(client, uri, versions[-1])
    assert "units: must be >= 1, received 0" in error.message
    published = versions_published(client, uri)
    assert published == sorted(published) and published[-1] == versions[-1]


@in_session
@pytest.mark.parametrize("name, text, fixes", [
    ("typo.yaml", MNIST.replace("activation: relu}", "activation: rleu}", 1).replace("pool_size", "pool_sise", 1),
     ["Replace 'pool_sise' with 'pool_size'", "Replace 'rleu' with 'relu'"]),
    # The error is at the parameter's value; the misspelled word is its key.
    ("typo_block.yaml", BOTTLENECK.replace("count: 2}", "cont: 2}"), ["Replace 'cont' with 'count'"]),
])
async def test_did_you_mean_is_a_quick_fix_that_clears_the_error(client, name, text, fixes):
    found = await edit(client, name, text)
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        doc(name), lsp.Range(lsp.Position(0, 0), lsp.Position(40, 0)), lsp.CodeActionContext(found)))
    assert sorted(a.title for a in actions) == fixes
    lines = text.split("\n")
    for action in actions:
        (change,) = action.edit.changes[f"file:///work/{name}"]
        line = lines[change.range.start.line]
        lines[change.range.start.line] = line[:change.range.start.character] + change.new_text + line[change.range.end.character:]
    assert await edit(client, name, "\n".join(lines)) == []


@in_session
async def test_hover_shows_shape_parameters_and_docs(client):
    await edit(client, "hover.yaml", MNIST)
    layer = await client.text_document_hover_async(lsp.HoverParams(doc("hover.yaml"), at(MNIST, "filters: 64", offset=9)))
    assert "`(None, 11, 11, 64)`" in layer.contents.value and "params 18,496" in layer.contents.value
    assert "reads `max_pooling2d`" in layer.contents.value
    key = await client.text_document_hover_async(lsp.HoverParams(doc("hover.yaml"), at(MNIST, "pool_size", offset=2)))
    assert "pool_size" in key.contents.value and "default: `[2, 2]`" in key.contents.value
    # While the text is broken, hover answers from the last version that compiled.
    await edit(client, "hover.yaml", MNIST.replace("{type: Flatten}", "{type: Flatten"))
    again = await client.text_document_hover_async(lsp.HoverParams(doc("hover.yaml"), at(MNIST, "filters: 64", offset=9)))
    assert again.contents.value == layer.contents.value


@in_session
async def test_shapes_follow_their_lines_while_the_file_is_broken(client):
    """Lines typed above the layers (here, invalid YAML) shift them: their inlay hints and
    hovers, from the last version that compiled, move with them; a changed line has none."""
    def hints_of(found):
        return [(h.position.line, h.label) for h in found]

    async def hints():
        return hints_of(await client.text_document_inlay_hint_async(lsp.InlayHintParams(
            doc("shift.yaml"), lsp.Range(lsp.Position(0, 0), lsp.Position(100, 0)))))

    async def outline():
        found = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc("shift.yaml")))
        return [(s.name, s.range.start.line, s.range.end.line, s.selection_range.start.line) for s in found]

    await edit(client, "shift.yaml", MNIST)
    before, listed = await hints(), await outline()
    broken = MNIST.replace("layers:\n", "layers:\n  - {type: Conv2D, filters: [\n  # a comment\n", 1)
    assert await edit(client, "shift.yaml", broken)  # invalid YAML: an error
    after = await hints()
    assert after == [(line + 2, label) for line, label in before]
    assert await outline() == [(name, start + 2, end + 2, selected + 2) for name, start, end, selected in listed]
    broken = broken.replace("{type: MaxPooling2D, pool_size: [2, 2]}", "{type: MaxPooling2D, pool_size: [2, 2]", 1)
    await edit(client, "shift.yaml", broken)
    changed = at(broken, "{type: MaxPooling2D, pool_size: [2, 2]\n").line
    assert await hints() == [hint for hint in after if hint[0] != changed]
    layer = await client.text_document_hover_async(lsp.HoverParams(doc("shift.yaml"), at(broken, "filters: 64", offset=9)))
    assert "`(None, 11, 11, 64)`" in layer.contents.value


@in_session
async def test_hover_on_a_block_use_lists_its_layers(client):
    await edit(client, "blocks.yaml", BOTTLENECK)
    use = await client.text_document_hover_async(lsp.HoverParams(doc("blocks.yaml"), at(BOTTLENECK, "{block: stage", offset=10)))
    assert "**block `stage`** as `conv2`" in use.contents.value
    assert "| conv2_block1_1_conv | Conv2D | `(None, 8, 8, 4)` |" in use.contents.value


@in_session
async def test_completion_offers_what_fits_each_position(client):
    text = BOTTLENECK.replace("  - {type: Dense, units: 10}", "  - {type: Conv2D, padding: , inputs: [], use_bias: \n  - {block: , \n  - {block: stage, repeat: 2, \n  - {type: ")
    await edit(client, "complete.yaml", BOTTLENECK)  # typed into a valid file: the scopes come from it
    await edit(client, "complete.yaml", text)

    async def complete(position):
        return labels(await client.text_document_completion_async(lsp.CompletionParams(doc("complete.yaml"), position)))

    assert {"Conv2D", "MaxPooling2D", "Add"} <= set(await complete(at(text, "{type: ", -1, offset=7)))
    assert await complete(at(text, "padding: ,", offset=9)) == ["valid", "same"]
    assert await complete(at(text, "padding: same}", offset=9)) == ["valid", "same"]  # at a written value too
    assert await complete(at(text, "use_bias: ", offset=10)) == ["true", "false"]
    keys = await complete(at(text, "padding: , ", offset=11))
    assert {"filters", "kernel_size", "strides", "name"} <= set(keys) and not {"type", "padding"} & set(keys)
    names = await complete(at(text, "inputs: [], ", offset=9))
    assert {"input", "stem", "conv2", "conv2_block2_out", "global_average_pooling2d"} <= set(names)
    assert await complete(at(text, "{block: , ", offset=8)) == ["bottleneck", "stage"]
    # Inside a block: its input and the layers before, not those after.
    inside = await complete(at(text, "inputs: [0_bn", offset=9))
    assert set(inside) == {"input", "0_conv", "0_bn", "1_conv", "2_conv"}
    use_keys = await complete(at(text, "repeat: 2, ", offset=11))
    assert {"filters", "count", "name", "inputs"} <= set(use_keys) and not {"block", "repeat"} & set(use_keys)


@in_session
async def test_definition_jumps_to_the_layer_or_block(client):
    await edit(client, "definition.yaml", BOTTLENECK)

    async def target(position):
        location = await client.text_document_definition_async(lsp.DefinitionParams(doc("definition.yaml"), position))
        return location.range.start if location else None

    assert await target(at(BOTTLENECK, "[0_bn", offset=2)) == at(BOTTLENECK, "{type: BatchNormalization, name: 0_bn")
    assert await target(at(BOTTLENECK, "{block: bottleneck", offset=10)) == at(BOTTLENECK, "bottleneck:")
    assert await target(at(BOTTLENECK, "[conv2_block2_out]", offset=3)) == at(BOTTLENECK, "{block: stage")


@in_session
async def test_inlay_hints_are_check_json_shapes_and_the_outline_lists_layers(client, tmp_path):
    await edit(client, "inlay.yaml", MNIST)
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(
        doc("inlay.yaml"), lsp.Range(lsp.Position(0, 0), lsp.Position(100, 0))))
    summary = json.loads("\n".join(check_lines(tmp_path, MNIST, "--json")))
    expected = [(layer["line"] - 1, "(" + ", ".join(str(d) for d in layer["output_shape"]) + ")")
                for layer in summary["layers"]]
    assert [(h.position.line, h.label) for h in hints] == expected
    assert all(h.position.character == len(MNIST.split("\n")[h.position.line].rstrip()) for h in hints)
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc("inlay.yaml")))
    assert [s.name for s in symbols] == [layer["name"] for layer in summary["layers"]]
    assert symbols[0].detail == "Conv2D → (None, 26, 26, 32)"


@in_session
async def test_hostile_documents_as_edits_never_crash_the_server(client):
    """Every broken or hostile spec the suite already has, and a zoo file cut mid-token, sent as
    edits of one document; the server answers every request after each one."""
    from tests import test_blocks, test_graph, test_spec_errors

    texts = [row[0] for row in _parametrized(test_spec_errors.test_loader_errors)]
    texts += [value for module in (test_spec_errors, test_blocks, test_graph) for fn in vars(module).values()
              for row in _parametrized(fn) for value in row if isinstance(value, str) and "\n" in value]
    texts += [NASNET[:cut] for cut in range(97, len(NASNET), 1531)]
    assert len(texts) > 30
    await edit(client, "hostile.yaml", NASNET)
    for text in texts:
        found = await edit(client, "hostile.yaml", text)
        assert all(d.range.start.line >= 0 for d in found)
        middle = lsp.Position(text.count("\n") // 2, 3)
        await client.text_document_hover_async(lsp.HoverParams(doc("hostile.yaml"), middle))
        await client.text_document_completion_async(lsp.CompletionParams(doc("hostile.yaml"), middle))
        await client.text_document_definition_async(lsp.DefinitionParams(doc("hostile.yaml"), middle))
        await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc("hostile.yaml")))
        await client.text_document_inlay_hint_async(lsp.InlayHintParams(
            doc("hostile.yaml"), lsp.Range(lsp.Position(0, 0), lsp.Position(200, 0))))
    failures = [m.message for m in client.log_messages if m.type == lsp.MessageType.Error]
    assert failures == []
    assert await edit(client, "hostile.yaml", MNIST) == []


def _parametrized(fn) -> list[tuple]:
    rows = []
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            rows += [tuple(getattr(row, "values", row if isinstance(row, tuple) else (row,))) for row in mark.args[1]]
    return rows


def test_the_server_starts_without_the_language_or_any_framework():
    """Start-up imports pygls and the CLI only; pydantic and the layer classes load with the
    first document, and no framework ever (the import contract proves the static side)."""
    code = ("import sys; import cnncompile.cli, cnncompile.editor.server; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in {'pydantic', 'yaml', 'numpy', "
            "'tensorflow', 'keras', 'onnx', 'onnxruntime', 'optuna', 'torch'} or m == 'cnncompile.language.layers'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == []

