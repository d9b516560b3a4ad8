"""The prepayment loop's client of the head-end's control API (headend.control): trip and reconnect.

``sender(url, token)`` returns the ``send(spec) -> answer`` callable :func:`billing_core.jobs.prepay.dispatch`
takes.  ``spec``: ``{command_id, action ("disconnect" | "reconnect"), target (meter id), reason}``; the
command id is passed as the API's ``client_id``, so a command re-sent after a crash is answered with its
first outcome and never acts twice.  A meter offline is queued by the head-end (``offline: "queue"``,
one day), so the trip or reconnect runs when its concentrator logs in.  The answer is the API's JSON
(``outcome`` ok / refused / failed / queued / expired, ``readback``); an HTTP error with a JSON body is an
answer too (409 refused by 保电, 504 no answer); a failure to reach the head-end raises (see NOT_THERE).
"""

from __future__ import annotations

from gridhead.protocols.errors import TransportError

from .control import Client, ClientError

QUEUE_S = 24 * 3600
# answers that mean the command did not get to a meter and may get there later: the head-end is down
# (status 0), the token is not (yet) accepted, the rate limit outlasted the client's patience, or the
# API itself failed.  They raise, so billing_core.jobs.prepay.dispatch keeps the command pending and retries it.
NOT_THERE = {0, 401, 403, 429, 500, 502, 503}


def sender(url: str, token: str | None, timeout_s: float = 30.0, max_wait_s: float = 60.0):
    """``send(spec) -> answer`` through :class:`headend.control.Client` (the operators' client: 429 is
    waited out per its Retry-After, up to ``max_wait_s``)."""
    client = Client(url, token, timeout_s=timeout_s, max_wait_s=max_wait_s)

    def send(spec: dict) -> dict:
        body = {"target": spec["target"], "client_id": spec["command_id"], "offline": "queue", "expires_s": QUEUE_S}
        if spec["action"] == "disconnect":
            body["reason"] = spec["reason"]
        else:
            body["mode"] = "direct"
        try:
            status, ans = client.call("POST", f"/v1/{spec['action']}", body)
        except ClientError as exc:
            if exc.status in NOT_THERE:
                raise TransportError(str(exc)) from None
            ans = {**exc.body, "outcome": "failed", "error": str(exc)}   # 400/404: the command itself is wrong
            status = exc.status
        ans = dict(ans)
        ans.setdefault("outcome", "failed")
        ans.setdefault("http_status", status)
        return ans

    return send
