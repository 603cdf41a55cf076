"""Render a ModelInfo like Keras's model.summary(): a table, then the totals."""

from __future__ import annotations

from cnncompile.analysis.inference import ModelInfo
from cnncompile.language.shapes import fmt

HEADERS = ("Layer (type)", "Output Shape", "Param #", "MACs")
CONNECTED = "Connected to"
DEAD = " [dead]"  # its output never reaches the model's: Keras leaves it out, and the totals do


def _connections(model: ModelInfo) -> list[str] | None:
    """Per layer, the inputs it reads when they are not simply the layer before it (as in
    Keras's functional summary); None for a plain chain, whose table stays as it was."""
    previous = ["input", *(layer.name for layer in model.layers)]
    cells = ["" if list(layer.inputs) == [previous[i]] else ", ".join(layer.inputs)
             for i, layer in enumerate(model.layers)]
    return cells if any(cells) else None


def headers(model: ModelInfo) -> tuple[str, ...]:
    return HEADERS + ((CONNECTED,) if _connections(model) else ())


def rows(model: ModelInfo) -> list[tuple[str, ...]]:
    table = [(f"{layer.name} ({layer.type}){DEAD if layer.dead else ''}", fmt(layer.output_shape),
              f"{layer.params:,}", f"{layer.macs:,}")
             for layer in model.layers]
    connections = _connections(model)
    return [(*row, cell) for row, cell in zip(table, connections)] if connections else table


def totals(model: ModelInfo) -> list[str]:
    dead = sum(layer.dead for layer in model.layers)
    return [
        f"Total params: {model.total_params:,}",
        f"Trainable params: {model.trainable_params:,}",
        f"Non-trainable params: {model.non_trainable_params:,}",
        f"Total MACs: {model.total_macs:,} per image",
        *([f"Dead layers ({dead}, marked{DEAD}) are not in the model or these totals"] if dead else []),
    ]


def plain(model: ModelInfo) -> str:
    """A fixed-width table for pipes, logs and NO_COLOR terminals."""
    head = headers(model)
    table = [head, *rows(model)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:
        left = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        right = [row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        return "  ".join(left + right + [cell.ljust(widths[4]) for cell in row[4:]]).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    body = [f'Model: "{model.name}"', rule, line(head), rule, *map(line, table[1:]), rule]
    return "\n".join(body + totals(model))


def rich_table(model: ModelInfo):  # -> rich renderables; rich is imported only for terminals
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f'Model: "{model.name}"', title_justify="left")
    for i, header in enumerate(headers(model)):
        table.add_column(header, justify="right" if i in (2, 3) else "left")
    for row in rows(model):
        table.add_row(*row)
    return table, Text("\n".join(totals(model)))
