"""Runner calls are retried only when they provably never reached the runner."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from runners.client import call_runner

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _done(_: web.Request) -> web.Response:
    return web.Response(text="done")


async def _post(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.post(url, data=b"work") as response:
        return await response.text()


async def test_a_request_the_runner_dropped_mid_way_is_not_sent_again() -> None:
    """A runner that reads the request and dies (closes the socket) sees it exactly once."""
    received = 0

    async def crash(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        received += 1
        writer.transport.abort()

    server = await asyncio.start_server(crash, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call_runner(_post, f"http://127.0.0.1:{port}/")
    assert received == 1


async def test_a_refused_connection_is_retried_until_the_runner_is_back() -> None:
    """Connection refused: nothing was sent, so trying again is safe."""
    port = _free_port()
    attempts = 0

    async def attempt(url: str) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 2:  # the runner comes back between the first and second attempt
            app = web.Application()
            app.router.add_post("/", _done)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            cleanup.append(runner)
        return await _post(url)

    cleanup: list[web.AppRunner] = []
    try:
        assert await call_runner(attempt, f"http://127.0.0.1:{port}/") == "done"
    finally:
        for runner in cleanup:
            await runner.cleanup()
    assert attempts == 2


async def test_retries_stop_after_three_attempts() -> None:
    attempts = 0

    async def attempt(url: str) -> str:
        nonlocal attempts
        attempts += 1
        return await _post(url)

    with pytest.raises(aiohttp.ClientConnectorError):
        await call_runner(attempt, f"http://127.0.0.1:{_free_port()}/")
    assert attempts == 3


async def test_other_errors_are_not_retried() -> None:
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await call_runner(attempt)
    assert attempts == 1
