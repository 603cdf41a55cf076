"""`cnncompile lsp`: the features wired to pygls, over stdin/stdout.

Every change is analysed once the messages already received are handled, so a burst of
keystrokes costs one analysis, of the newest text. A handler that fails logs the traceback
to the editor (window/logMessage) and answers nothing: a bug, or a file no one foresaw,
must not take the server down while someone types.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from cnncompile.editor import features
from cnncompile.editor.document import Document


class SpecServer(LanguageServer):
    def __init__(self) -> None:
        try:
            release = version("cnncompile")
        except PackageNotFoundError:  # run from a source tree
            release = "0"
        super().__init__("cnncompile", release)
        self.documents: dict[str, Document] = {}
        self.pending: set[str] = set()

    def document(self, uri: str) -> Document:
        if uri not in self.documents:
            self.documents[uri] = Document(Path(to_fs_path(uri) or "spec.yaml"),
                                           self.workspace.position_codec.client_num_units)
        return self.documents[uri]

    def refresh(self, uri: str) -> Document:
        """Analyse the document's current text (if it changed) and return it."""
        document = self.document(uri)
        document.update(self.workspace.get_text_document(uri).source)
        return document

    def schedule(self, uri: str) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.publish)
        self.pending.add(uri)

    def publish(self) -> None:
        uris, self.pending = self.pending, set()
        for uri in uris:
            if uri in self.documents:
                self.publish_one(uri)

    def publish_one(self, uri: str) -> None:
        try:
            snapshot = self.refresh(uri).latest
            found = features.diagnostics(snapshot, uri, self.document(uri).units)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self.log_failure("diagnostics")
            # Say so where the user looks, rather than leave the last version's diagnostics up.
            found = [lsp.Diagnostic(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), severity=lsp.DiagnosticSeverity.Error,
                                    source=features.SOURCE, message=f"cnncompile lsp failed on this file ({type(exc).__name__}: "
                                    f"{exc}); the traceback is in the editor's LSP log. Please report it.")]
        version_ = self.workspace.get_text_document(uri).version
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, found, version_))

    def log_failure(self, what: str) -> None:
        self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error,
                                                     f"cnncompile lsp: {what} failed\n{traceback.format_exc()}"))


server = SpecServer()


def _guarded(handler):
    """Answer None (and log why) instead of failing the request."""
    @functools.wraps(handler)
    def run(ls: SpecServer, params):
        try:
            return handler(ls, params)
        except Exception:  # noqa: BLE001 - see the module docstring
            ls.log_failure(handler.__name__)
            return None
    return run


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: SpecServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.document(params.text_document.uri)
    ls.schedule(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: SpecServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: SpecServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.pop(uri, None)
    ls.pending.discard(uri)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
@_guarded
def hover(ls: SpecServer, params: lsp.HoverParams) -> lsp.Hover | None:
    document = ls.refresh(params.text_document.uri)
    return features.hover(document, params.position.line, params.position.character)


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[":", " ", "[", ",", "{"]))
@_guarded
def completion(ls: SpecServer, params: lsp.CompletionParams) -> lsp.CompletionList | None:
    document = ls.refresh(params.text_document.uri)
    items = features.completion(document, params.position.line, params.position.character)
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
@_guarded
def definition(ls: SpecServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    uri = params.text_document.uri
    return features.definition(ls.refresh(uri), uri, params.position.line, params.position.character)


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_guarded
def document_symbol(ls: SpecServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol] | None:
    return features.symbols(ls.refresh(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
@_guarded
def inlay_hint(ls: SpecServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint] | None:
    document = ls.refresh(params.text_document.uri)
    return features.inlay_hints(document, params.range.start.line, params.range.end.line)


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
@_guarded
def code_action(ls: SpecServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction] | None:
    uri = params.text_document.uri
    return features.code_actions(ls.refresh(uri), uri, list(params.context.diagnostics))


def serve() -> None:
    """Speak LSP on stdin/stdout until the editor says exit."""
    server.start_io()
