"""Render a ModelInfo like Keras's model.summary(): a table, then the totals."""

from __future__ import annotations

from cnncompile.inference import ModelInfo
from cnncompile.shapes import fmt

HEADERS = ("Layer (type)", "Output Shape", "Param #", "MACs")


def rows(model: ModelInfo) -> list[tuple[str, str, str, str]]:
    return [(f"{layer.name} ({layer.type})", fmt(layer.output_shape), f"{layer.params:,}", f"{layer.macs:,}")
            for layer in model.layers]


def totals(model: ModelInfo) -> list[str]:
    return [
        f"Total params: {model.total_params:,}",
        f"Trainable params: {model.trainable_params:,}",
        f"Non-trainable params: {model.non_trainable_params:,}",
        f"Total MACs: {model.total_macs:,} per image",
    ]


def plain(model: ModelInfo) -> str:
    """A fixed-width table for pipes, logs and NO_COLOR terminals."""
    table = [HEADERS, *rows(model)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        left = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        right = [row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(HEADERS))
    body = [f'Model: "{model.name}"', rule, line(HEADERS), rule, *map(line, table[1:]), rule]
    return "\n".join(body + totals(model))


def rich_table(model: ModelInfo):  # -> rich renderables; rich is imported only for terminals
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f'Model: "{model.name}"', title_justify="left")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if i >= 2 else "left")
    for row in rows(model):
        table.add_row(*row)
    return table, Text("\n".join(totals(model)))
