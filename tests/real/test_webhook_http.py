"""real.webhooks on 127.0.0.1 alone: HttpPoster against the Receiver, a redirect that is
not followed, no answer, and the manage command's refusal of a bad URL."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from common import webhooks
from common.effects import HttpPost
from common.errors import DeliveryFailed
from real.slapd import free_port
from real.webhooks import HttpPoster, Receiver

BODY = webhooks.event_body("ev-1", "instance.running", "demo", 1.0, {"instance_id": "i-1"}).encode()


def post(url, secret="s", timeout=5.0):
    headers = ((webhooks.SIGNATURE_HEADER, webhooks.sign(secret, BODY)), (webhooks.EVENT_ID_HEADER, "ev-1"))
    return HttpPoster().post(None, HttpPost(url, BODY, headers, timeout))


@pytest.fixture
def receiver():
    got = Receiver({"demo": "s"}).start()
    yield got
    got.stop()


def test_a_signed_post_is_taken_once_and_a_forged_one_refused(receiver):
    """The receiver answers 200 to the right signature (noting the event) and 401 to a wrong one."""
    assert post(receiver.url) == 200 and receiver.event_ids() == ["ev-1"]
    assert post(receiver.url, secret="wrong") == 401 and receiver.bad_signatures == 1


def test_a_receiver_that_is_down_answers_503(receiver):
    """While ``down`` is set every POST is refused with 503 and nothing is noted."""
    receiver.down.set()
    assert post(receiver.url) == 503 and receiver.event_ids() == []


def test_a_redirect_is_an_answer_not_followed():
    """A 302 comes back as the status; the Location is never fetched."""
    fetched = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            fetched.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        assert post(f"http://127.0.0.1:{server.server_address[1]}/hook") == 302 and fetched == ["/hook"]
    finally:
        server.server_close()


def test_no_listener_is_a_failed_delivery():
    """A refused connection raises DeliveryFailed naming the URL."""
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeliveryFailed, match=r"127\.0\.0\.1"):
        post(url, timeout=2.0)


def test_manage_refuses_a_url_that_is_not_http_with_exit_2(tmp_path):
    """``webhook add`` with an ftp URL says why and exits 2 before reaching any service."""
    done = subprocess.run([sys.executable, "-m", "real.cli", "manage", "--config", str(tmp_path / "none.yaml"),
                           "webhook", "add", "demo", "ftp://example.com/"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "must be http or https" in done.stderr
