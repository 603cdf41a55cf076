"""Latency of `cnncompile lsp` as an editor sees it: a warm server in a subprocess, over stdio.

  python bench/lsp_latency.py [--rounds 15]

For the seed model (examples/mnist_cnn.yaml) and the biggest zoo file
(examples/zoo/nasnet_mobile.yaml, 770 expanded layers): the time from sending a one-character
edit (didChange, incremental) to receiving its diagnostics (publishDiagnostics of that
version); the same from the last of 10 keys typed 10 ms apart (with how many of the 10
versions were analysed); and the round trip of a hover on a layer and on a block use. Every edit keeps the
spec valid, so each one is a full `check` (parse, validate, expand, infer). Medians and the
slowest round; the CPU and the load average are printed, since the machine may be shared.
Needs the test extra (pytest-lsp's client): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lsprotocol import types as lsp

from cnncompile.deploy.int8 import int8_capability
from tests.lsp_client import diagnostics_of, recording_client, versions_published

# file, the text an edit toggles (to the second and back: the spec stays valid), what hovers point at
CASES = {
    "mnist_cnn": (ROOT / "examples" / "mnist_cnn.yaml", ("units: 64", "units: 65"),
                  {"layer": "{type: Conv2D, filters: 64"}),
    "nasnet_mobile": (ROOT / "examples" / "zoo" / "nasnet_mobile.yaml", ("momentum: 0.9997", "momentum: 0.9996"),
                      {"layer": "{type: Dense", "block use": "{block: normal_cell, name: normal_12"}),
}


def position(text: str, needle: str, offset: int = 3) -> lsp.Position:
    index = text.index(needle) + offset
    return lsp.Position(text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1))


async def measure(client, name: str, path: Path, toggle: tuple[str, str], hovers: dict, rounds: int) -> dict:
    text = path.read_text()
    uri = path.as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "yaml", 1, text)))
    await diagnostics_of(client, uri, 1)
    at = position(text, toggle[0], 0)
    end = lsp.Position(at.line, at.character + len(toggle[0]))
    edits = []
    for version in range(2, 2 * rounds + 2):
        new = toggle[version % 2]  # version 2 -> the second text, 3 -> back to the first, ...
        started = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version, uri), [lsp.TextDocumentContentChangePartial(
                lsp.Range(at, end), new)]))
        diagnostics = await diagnostics_of(client, uri, version)
        edits.append(time.perf_counter() - started)
        assert diagnostics == [], diagnostics  # the edit kept the spec valid: a full check ran
    result = {"diagnostics after an edit": edits}
    # Typing: 10 keys 10 ms apart; from the last key to its diagnostics, and how many versions were analysed.
    bursts, analysed = [], []
    version = 2 * rounds + 1
    for _ in range(rounds):
        before = len(versions_published(client, uri))
        for _ in range(10):
            version += 1
            client.text_document_did_change(lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(version, uri), [lsp.TextDocumentContentChangePartial(
                    lsp.Range(at, end), toggle[version % 2])]))
            started = time.perf_counter()
            await asyncio.sleep(0.01)
        await diagnostics_of(client, uri, version)
        bursts.append(time.perf_counter() - started)
        analysed.append(len(versions_published(client, uri)) - before)
    result["diagnostics after typing 10 keys at 100/s (from the last key)"] = bursts
    print(f"({name}: typing 10 keys at 100/s, {statistics.median(analysed):.0f} versions analysed, median)")
    for what, needle in hovers.items():
        times = []
        for _ in range(2 * rounds):
            started = time.perf_counter()
            hover = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri),
                                                                           position(text, needle, 10)))
            times.append(time.perf_counter() - started)
            assert hover is not None and "→" in hover.contents.value
        result[f"hover on a {what}"] = times
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="edits (and twice as many hovers) per file")
    args = parser.parse_args()
    print(f"CPU: {int8_capability().describe()}; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f} (the machine may be shared)", flush=True)
    client = recording_client()
    started = time.perf_counter()
    await client.start_io(sys.executable, "-m", "cnncompile", "lsp")
    await client.initialize_session(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    print(f"server start to initialized: {(time.perf_counter() - started) * 1000:.0f} ms")
    print("| file | what | median | slowest |\n| --- | --- | --- | --- |")
    for name, (path, toggle, hovers) in CASES.items():
        for what, times in (await measure(client, name, path, toggle, hovers, args.rounds)).items():
            print(f"| {name} | {what} | {statistics.median(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms |",
                  flush=True)
    await client.shutdown_session()
    await client.stop()


if __name__ == "__main__":
    asyncio.run(main())
