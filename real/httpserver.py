"""cheroot, answering its own refusals in the application's error format.

cheroot refuses some requests before any application sees them: a request line or
header block over ``max_request_header_size`` (414, 413), a malformed request line,
header or ``Content-Length`` (400), a body over ``max_request_body_size`` (413), an
HTTP version it does not speak (505), a method it does not know (501), and a full
queue (503). It answers those in plain text (``HTTPRequest.simple_response``).
``xml_error_server`` returns a cheroot WSGI server whose requests answer them with
the document ``error_document(status, message)`` makes instead, so a client that
parses S3 or EC2 errors reads these too, and closes the connection (the rest of the
request was never read).

*Features*: every error ``simple_response`` writes, with cheroot's status and our body.

*Not supported*: errors before a request object exists (a TLS handshake failure).

*Connection string*: none; ``xml_error_server(bind_addr, app, error_document, ...)``
takes cheroot's ``wsgi.Server`` keywords.
"""

from __future__ import annotations

from collections.abc import Callable

from cheroot import errors, server, wsgi

#: ``(status code, cheroot's message) -> (status code, content type, body)``.
ErrorDocument = Callable[[int, str], tuple[int, str, bytes]]

#: Largest request line plus headers: S3 allows 8 KiB of headers, EC2 about as much;
#: 64 KiB leaves room for long signed query strings and still bounds each connection.
MAX_HEADER_BYTES = 64 * 1024


def xml_error_server(bind_addr, app, error_document: ErrorDocument, **options) -> wsgi.Server:
    """A cheroot WSGI server whose own refusals are ``error_document``'s."""

    class Request(server.HTTPRequest):
        def simple_response(self, status, msg=""):
            code = int(str(status)[:3])
            if code < 400:
                return super().simple_response(status, msg)
            text = msg.decode("latin-1") if isinstance(msg, bytes) else str(msg)
            code, content_type, body = error_document(code, text or str(status)[4:])
            self.close_connection = True
            head = (f"{self.server.protocol} {code} {_phrase(code)}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            try:
                self.conn.wfile.write(head.encode("latin-1") + body)
            except OSError as ex:
                if ex.args[0] not in errors.socket_errors_to_ignore:
                    raise

    class Connection(server.HTTPConnection):
        RequestHandlerClass = Request

    options.setdefault("server_name", "novalab")
    http = wsgi.Server(bind_addr, app, **options)
    http.ConnectionClass = Connection
    http.max_request_header_size = MAX_HEADER_BYTES
    return http


def _phrase(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"
