"""`cnncompile lsp`: the features wired to pygls, over stdin/stdout.

Analyses run one at a time in a worker thread, so the server keeps reading while one runs
(300 ms on the biggest zoo file): keystrokes that arrive meanwhile only update the text, and
the next analysis takes the newest one. A burst of typing costs one analysis per analysis
time, not one per key. Requests answer from the analyses made so far, at once.

A handler that fails logs the traceback to the editor (window/logMessage) and answers
nothing: a bug, or a file no one foresaw, must not take the server down while someone types.
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
        self.pending: dict[str, None] = {}  # documents whose text changed since their last analysis, in order
        self.worker: asyncio.Task | None = None

    def opened(self, uri: str) -> Document:
        """The document, its text brought up to the editor's; analysed soon."""
        if uri not in self.documents:
            self.documents[uri] = Document(Path(to_fs_path(uri) or "spec.yaml"),
                                           self.workspace.position_codec.client_num_units)
        document = self.documents[uri]
        document.text = self.workspace.get_text_document(uri).source
        self.pending[uri] = None
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self.analyse_pending())
        return document

    def document(self, uri: str) -> Document:
        return self.documents.get(uri) or Document(Path("spec.yaml"))  # never opened: nothing known

    async def analyse_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            uri = next(iter(self.pending))
            del self.pending[uri]
            document = self.documents.get(uri)
            if document is None:  # closed meanwhile
                continue
            text, version_ = document.text, self.workspace.get_text_document(uri).version
            try:
                snapshot = await loop.run_in_executor(None, document.update, text)
                found = features.diagnostics(snapshot, uri, document.units)
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                self.log_failure("diagnostics")
                # Say so where the user looks, rather than leave the last version's diagnostics up.
                found = [lsp.Diagnostic(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)),
                                        severity=lsp.DiagnosticSeverity.Error, source=features.SOURCE,
                                        message=f"cnncompile lsp failed on this file ({type(exc).__name__}: {exc}); "
                                        "the traceback is in the editor's LSP log. Please report it.")]
            if uri in self.documents:
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
    ls.opened(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: SpecServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.opened(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: SpecServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.pop(uri, None)
    ls.pending.pop(uri, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
@_guarded
def hover(ls: SpecServer, params: lsp.HoverParams) -> lsp.Hover | None:
    document = ls.document(params.text_document.uri)
    return features.hover(document, params.position.line, params.position.character)


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[":", " ", "[", ",", "{"]))
@_guarded
def completion(ls: SpecServer, params: lsp.CompletionParams) -> lsp.CompletionList | None:
    document = ls.document(params.text_document.uri)
    items = features.completion(document, params.position.line, params.position.character)
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
@_guarded
def definition(ls: SpecServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    uri = params.text_document.uri
    return features.definition(ls.document(uri), uri, params.position.line, params.position.character)


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_guarded
def document_symbol(ls: SpecServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol] | None:
    return features.symbols(ls.document(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
@_guarded
def inlay_hint(ls: SpecServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint] | None:
    document = ls.document(params.text_document.uri)
    return features.inlay_hints(document, params.range.start.line, params.range.end.line)


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
@_guarded
def code_action(ls: SpecServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction] | None:
    uri = params.text_document.uri
    return features.code_actions(ls.document(uri), uri, list(params.context.diagnostics))


def serve() -> None:
    """Speak LSP on stdin/stdout until the editor says exit."""
    server.start_io()
