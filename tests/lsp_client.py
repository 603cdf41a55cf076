"""pytest-lsp's client, keeping every publishDiagnostics it receives, for tests/test_editor.py and
bench/lsp_latency.py.

`wait_for_notification` holds one future per method: two notifications read in one chunk
resolve it once and the second is lost, so a test waiting for a version could wait forever.
Recording every notification as it is handled loses none.
"""

from __future__ import annotations

import asyncio

from lsprotocol import types as lsp
from pygls.protocol import default_converter
from pytest_lsp.client import (
    DEFAULT_CLIENT_FEATURES,
    LanguageClient,
    register_lsp_features,
)

PUBLISH = lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS


class RecordingClient(LanguageClient):
    def __init__(self) -> None:
        super().__init__(converter_factory=default_converter)
        self.published: list[lsp.PublishDiagnosticsParams] = []
        self.arrived = asyncio.Event()


def _record(client: RecordingClient, params: lsp.PublishDiagnosticsParams) -> None:
    client.published.append(params)
    client.arrived.set()
    DEFAULT_CLIENT_FEATURES[PUBLISH](client, params)


def recording_client() -> RecordingClient:
    client = RecordingClient()
    register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, PUBLISH: _record})
    return client


async def diagnostics_of(client: RecordingClient, uri: str, version: int,
                         timeout: float = 60) -> list[lsp.Diagnostic]:
    """The diagnostics published for `version` of `uri`, once they arrive (a server that never
    sends them fails the caller after `timeout` seconds instead of hanging it)."""
    while True:
        for params in client.published:
            if params.uri == uri and params.version == version:
                return list(params.diagnostics)
        client.arrived.clear()
        await asyncio.wait_for(client.arrived.wait(), timeout)


def versions_published(client: RecordingClient, uri: str) -> list[int]:
    return [params.version for params in client.published if params.uri == uri]
