"""The whole system on one machine: PostgreSQL, a Kafka-protocol broker, a TLS-only mailbox,
migrations, and the three services as separate processes.

Used by `make run`, the end-to-end tests and `make bench`. Real servers given through
DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS or SMTP_HOST/SMTP_PORT/SMTP_FROM replace the embedded ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from opspor_shared.auth import Role
from opspor_shared.devstack.certs import ensure_certs
from opspor_shared.devstack.issuer import LocalIssuer
from opspor_shared.devstack.kafka import EmbeddedBroker
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.devstack.net import free_port
from opspor_shared.devstack.oidc import LocalOidcProvider
from opspor_shared.devstack.postgres import ensure_database
from opspor_shared.migrate import upgrade

SERVICES = {"api": "opspor_api", "threshold-worker": "opspor_worker", "alerter": "opspor_alerter"}


@dataclass
class Service:
    name: str
    module: str
    port: int
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_file}"
                )
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s ({last}); see {self.log_file}")


@dataclass
class Stack:
    var_dir: Path
    database_name: str = "opspor"
    recreate_database: bool = False
    api_port: int = 0
    mailbox_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    database_url: str = ""
    bootstrap_servers: str = ""
    mailbox: Mailbox | None = None
    broker: EmbeddedBroker | None = None
    issuer: LocalIssuer | None = None
    oidc: LocalOidcProvider | None = None

    def start(self) -> Stack:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        logs = self.var_dir / "logs"
        logs.mkdir(exist_ok=True)
        try:
            self._start_dependencies()
            env = self._service_env()
            for name, module in SERVICES.items():
                port = (self.api_port or free_port()) if name == "api" else free_port()
                service_env = env | (
                    {"PORT": str(port)} if name == "api" else {"OPS_PORT": str(port)}
                )
                if name == "api" and self.oidc is not None and "OIDC_ISSUER" not in env:
                    service_env |= self.oidc.env(f"http://127.0.0.1:{port}")
                self.services[name] = Service(name, module, port, service_env, logs / f"{name}.log")
            for service in self.services.values():
                service.start()
            for service in self.services.values():
                service.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_dependencies(self) -> None:
        url = os.environ.get("DATABASE_URL") or ensure_database(
            self.var_dir, self.database_name, recreate=self.recreate_database
        )
        self.database_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        upgrade(self.database_url)
        if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.bootstrap_servers = servers
        else:
            self.broker = EmbeddedBroker(log_file=self.var_dir / "logs" / "tansu.log").start()
            self.bootstrap_servers = self.broker.bootstrap_servers
        # The local issuer is trusted next to any issuers given in AUTH_ISSUERS, so make run,
        # the end-to-end tests and the benchmark can mint tokens.
        self.issuer = LocalIssuer(self.var_dir / "auth")
        # The web page's sign-in; a real provider given through OIDC_ISSUER replaces it.
        if not os.environ.get("OIDC_ISSUER"):
            self.oidc = LocalOidcProvider().start()
        if not os.environ.get("SMTP_HOST"):
            certs = ensure_certs(self.var_dir / "certs")
            self.mailbox = Mailbox(self.var_dir / "mailbox", certs, port=self.mailbox_port).start()

    def _service_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPOR_TEST")}
        env |= {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "OPS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        if self.issuer is not None:
            issuers = json.loads(os.environ.get("AUTH_ISSUERS") or "[]")
            issuers += json.loads(self.issuer.issuers_json())
            env["AUTH_ISSUERS"] = json.dumps(issuers)
        if self.broker is not None:
            # Tansu: no idempotent producer; answers group joins after half the session timeout.
            env |= {"KAFKA_ENABLE_IDEMPOTENCE": "false", "KAFKA_SESSION_TIMEOUT_MS": "2000"}
        if self.mailbox is not None:
            env |= {
                "SMTP_HOST": "localhost",
                "SMTP_PORT": str(self.mailbox.port),
                "SMTP_FROM": "opspor@localhost.localdomain",
                "SMTP_CA_FILE": str(self.mailbox.ca_file),
                "MESSAGE_ID_DOMAIN": "opspor.localhost.localdomain",
            }
        if not env.get("WEBHOOK_SECRET_KEYS"):
            # Sealed as in a deployment; the key is kept with the stack's database, so the
            # secrets stored by an earlier run stay readable.
            env["WEBHOOK_SECRET_KEYS"] = webhook_secret_key(self.var_dir / "webhook-secret.key")
        if "NOTICE_LINK_BASE" not in env and self.api_port:
            env["NOTICE_LINK_BASE"] = f"http://127.0.0.1:{self.api_port}"
        return env | self.extra_env

    def token(
        self,
        role: Role,
        municipality: str | None = None,
        schools: tuple[str, ...] = (),
        ttl_seconds: int = 3600,
    ) -> str:
        """A bare token from the stack's local issuer (what the docs page's Authorize takes)."""
        assert self.issuer is not None, "start the stack first"
        return self.issuer.mint(
            role, municipality=municipality, schools=schools, ttl_seconds=ttl_seconds
        )

    def headers(
        self,
        role: Role,
        municipality: str | None = None,
        schools: tuple[str, ...] = (),
        ttl_seconds: int = 3600,
    ) -> dict[str, str]:
        """An Authorization header with a token from the stack's local issuer."""
        return {"Authorization": f"Bearer {self.token(role, municipality, schools, ttl_seconds)}"}

    @property
    def api_url(self) -> str:
        return self.services["api"].url

    def restart(self, name: str, *, kill: bool = False) -> None:
        service = self.services[name]
        service.stop(kill=kill)
        service.start()
        service.wait_ready()

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        if self.mailbox is not None:
            self.mailbox.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.oidc is not None:
            self.oidc.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def webhook_secret_key(path: Path) -> str:
    """The development stack's key for WEBHOOK_SECRET_KEYS, made once (readable by its owner
    only) and reused."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and linked into place: two stacks starting at once agree on one key.
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(Fernet.generate_key().decode())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip()
