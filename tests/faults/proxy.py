"""A TCP proxy in front of a real server that a test can cut: while it is down, every open
connection is closed and new ones are closed at once, as when a database host goes away.

The machine's PostgreSQL is shared with other work, so an outage is made here, not by
stopping the server. Runs in a thread of its own, so it serves in-process apps and services
started as subprocesses alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sqlalchemy.engine import make_url

from opspor_shared.devstack.net import free_port


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._up = True
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._started.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def start(self) -> CuttableProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def down(self) -> None:
        def cut() -> None:
            self._up = False
            for w in list(self._writers):
                w.close()
            self._writers.clear()

        self._loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        def restore() -> None:
            self._up = True

        self._loop.call_soon_threadsafe(restore)

    def stop(self) -> None:
        async def close() -> None:
            self.down_now()
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def down_now(self) -> None:
        self._up = False
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    @classmethod
    def for_database(cls, database_url: str) -> tuple[CuttableProxy, str]:
        """A started proxy in front of the database, and the URL that goes through it."""
        url = make_url(database_url)
        proxy = cls(url.host or "127.0.0.1", url.port or 5432).start()
        via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        return proxy, via
