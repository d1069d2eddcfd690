"""Local stand-ins for ActiveCampaign and KlCode: for `tagsync run`, the demo and the tests.

Not on the production import path: nothing in webhooks/, workers/ or mapping_store/ imports it
(the CLI loads it only when no AC or KlCode URL is configured).
"""

from __future__ import annotations

from .ac import ACState, create_ac_app
from .common import Outbox, ServerThread
from .klcode import KlCodeState, create_klcode_app
from .seed import SEED_TAGS, seed

__all__ = ["SEED_TAGS", "ACState", "KlCodeState", "Sandbox", "seed"]


class Sandbox:
    """Both stand-ins, serving real HTTP on loopback from background threads."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ac_port: int = 0,
        klcode_port: int = 0,
        ac_rate_limit: float | None = 5,
        klcode_secret: str = "sandbox-klcode-secret",
        with_seed: bool = True,
    ) -> None:
        self.ac = ACState(rate_limit=ac_rate_limit)
        self.ac.outbox = Outbox(self.ac.stats, retries=0)  # AC never retries a webhook
        self.klcode = KlCodeState(webhook_secret=klcode_secret)
        self.klcode.outbox = Outbox(self.klcode.stats, retries=3, backoff=1.0)
        if with_seed:
            seed(self.ac, self.klcode)
        self._ac_server = ServerThread(create_ac_app(self.ac), host, ac_port)
        self._kl_server = ServerThread(create_klcode_app(self.klcode), host, klcode_port)

    @property
    def ac_url(self) -> str:
        return self._ac_server.url

    @property
    def klcode_url(self) -> str:
        return self._kl_server.url

    def start(self) -> Sandbox:
        self._ac_server.start()
        self._kl_server.start()
        return self

    def stop(self) -> None:
        for server in (self._ac_server, self._kl_server):
            server.stop()
        for outbox in (self.ac.outbox, self.klcode.outbox):
            if outbox is not None:
                outbox.close()

    def point_klcode_webhooks(self, url: str) -> None:
        self.klcode.webhook_url = url

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until both stand-ins have delivered every webhook they queued."""
        return all(o.idle(timeout) for o in (self.ac.outbox, self.klcode.outbox) if o is not None)
