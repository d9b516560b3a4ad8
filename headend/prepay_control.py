"""The prepayment loop's client of the head-end's control API (headend.control): trip and reconnect.

``sender(url, token)`` returns the ``send(spec) -> answer`` callable :func:`storage.prepay.dispatch`
takes.  ``spec``: ``{command_id, action ("disconnect" | "reconnect"), target (meter id), reason}``; the
command id is passed as the API's ``client_id``, so a command re-sent after a crash is answered with its
first outcome and never acts twice.  A meter offline is queued by the head-end (``offline: "queue"``,
one day), so the trip or reconnect runs when its concentrator logs in.  The answer is the API's JSON
(``outcome`` ok / refused / failed / queued / expired, ``readback``); an HTTP error with a JSON body is an
answer too (409 refused by 保电, 504 no answer); only a transport failure raises.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from protocols.errors import TransportError

QUEUE_S = 24 * 3600


def sender(url: str, token: str | None, timeout_s: float = 30.0):
    base = url.rstrip("/")

    def send(spec: dict) -> dict:
        body = {"target": spec["target"], "client_id": spec["command_id"], "offline": "queue", "expires_s": QUEUE_S}
        if spec["action"] == "disconnect":
            body["reason"] = spec["reason"]
        else:
            body["mode"] = "direct"
        req = urllib.request.Request(f"{base}/v1/{spec['action']}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                ans = json.loads(exc.read() or b"{}")
            except ValueError:
                ans = {}
            ans.setdefault("outcome", "refused" if exc.code in (401, 403, 409) else "failed")
            ans.setdefault("http_status", exc.code)
            return ans
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"control API {base}: {getattr(exc, 'reason', exc)}") from None

    return send
