"""`streamemo dash --web`: the same dashboard, served to browsers by textual-serve.

textual-serve starts one `streamemo dash` process per browser tab (Textual's web driver
in place of a terminal) and relays its screen over a websocket, so each tab is the
terminal dashboard itself: the same panels, endpoints and keys. A daemon asked for with
--start-daemon is started once, by this serving process, and every tab connects to it:
a microphone cannot be opened again for each tab, every viewer should see the same
numbers, and closing one tab must not stop what the others watch. If that daemon stops,
so does the server, with the daemon's reason, as the terminal dashboard reports it.

textual-serve has no login: whoever reaches the port sees the dashboard and can press its
keys. So it listens on loopback unless --host says otherwise (then with a warning), and
a page from another site cannot drive it through the visitor's browser: the websocket
wants its Origin to be this server, and on loopback the Host must name loopback too
(a site that points its own name at 127.0.0.1 is not let in).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import shlex
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from streamemo import StreamemoError
from streamemo.security import is_loopback_host


def session_command(args: argparse.Namespace, endpoints: list[str]) -> str:
    """The command each browser tab runs: this dashboard, without --web or the daemon
    (which this process owns), through a shell (textual-serve's way of starting it)."""
    command = [sys.executable, "-m", "streamemo", "dash"]
    for endpoint in endpoints:
        command += ["--connect", endpoint]
    if args.curve_server or args.curve_secret:  # absolute: a tab's process need not share our folder
        command += ["--curve-server", str(Path(args.curve_server).resolve()),
                    "--curve-secret", str(Path(args.curve_secret).resolve())]
    if args.light:
        command.append("--light")
    return shlex.join(command)


def check_port(host: str, port: int) -> None:
    """One line and a non-zero exit now, before a daemon is started for nothing, when
    the address cannot be served on (bound here with the reuse flag aiohttp sets)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StreamemoError(f"--host {host}: {error.strerror}; give an address of this machine "
                             "such as 127.0.0.1 (this machine only) or 0.0.0.0 (every network)", 2) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise bind_error(host, port, error) from None


def bind_error(host: str, port: int, error: OSError) -> StreamemoError:
    if error.errno == errno.EADDRINUSE:
        return StreamemoError(f"port {port} on {host} is in use; choose another with --port N", 1)
    return StreamemoError(f"cannot serve on {host}:{port}: {error.strerror}; choose another --port or --host", 1)


class DashServer(Server):
    """textual-serve's server, with our start-up lines, the checks above, and the daemon
    we started watched."""

    def __init__(self, command: str, host: str, port: int, child=None):
        super().__init__(command, host=host, port=port, title="streamemo")
        self.child = child
        self.daemon_problem: str | None = None
        self._watcher: asyncio.Task | None = None  # held: the loop keeps only a weak reference
        self.tabs: set[asyncio.Task] = set()  # each open tab's handle_websocket

    def initialize_logging(self) -> None:
        # textual-serve's own errors (a tab's app that would not start) as plain lines; a
        # line per tab opened or closed (handle_websocket), not one per request.
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    def serve(self, debug: bool = False) -> None:
        """textual-serve's, but with SIGHUP (a closed terminal) stopping it as Ctrl+C does,
        and our line said once the port is bound (aiohttp's `print`), not before."""
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.request_exit)
        web.run_app(self._make_app(), host=self.host, port=self.port, loop=loop, handle_signals=False,
                    print=lambda _: self.say_where())

    def say_where(self) -> None:
        where = "this machine only" if is_loopback_host(self.host) else "every address this machine has on that network"
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address in a URL
        print(f"streamemo dash --web: serving on http://{host}:{self.port} ({where}); Ctrl+C stops", flush=True)
        if self.child is not None:
            print(f"the daemon: {self.child.title}\nits log: {self.child.log_path}", flush=True)

    async def on_startup(self, app: web.Application) -> None:
        if self.child is not None:
            self._watcher = asyncio.create_task(self.watch_daemon())

    async def watch_daemon(self) -> None:
        while (problem := self.child.problem()) is None:
            await asyncio.sleep(0.5)
        self.daemon_problem = problem
        # As a signal does it: raised from a loop callback, it ends aiohttp's run_app,
        # which closes the tabs and returns.
        asyncio.get_running_loop().call_soon(self.request_exit)

    def refusal(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return f"a page from {origin} may not drive this dashboard"
        if is_loopback_host(self.host) and not is_loopback_host(urlsplit(f"//{request.host}").hostname):
            return f"this dashboard is served on loopback, not as {request.host}"
        return None

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        if reason := self.refusal(request):
            raise web.HTTPForbidden(text=reason)
        # The page tells the browser where the websocket is: at the address the browser
        # used (through `ssh -L`, a phone on the network), not the one we bound, such as
        # 0.0.0.0. Set and read with no await between: no other request sees it.
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        """textual-serve's, but each tab's dashboard is waited for until its process has
        ended, and tracked so that stopping the server ends them all first (textual-serve
        leaves them to aiohttp's shutdown timeout, and to exit after the loop has closed)."""
        if reason := self.refusal(request):
            raise web.HTTPForbidden(text=reason)
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        tab = AppService(self.command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                         close=websocket.close, download_manager=self.download_manager)
        self.tabs.add(asyncio.current_task())
        print(f"a browser at {request.remote} opened the dashboard", flush=True)
        try:
            await tab.start(to_int(request.query.get("width", "80"), 80), to_int(request.query.get("height", "24"), 24))
            await self._process_messages(websocket, tab)
        except asyncio.CancelledError:
            pass  # the server is stopping (on_shutdown)
        finally:
            await tab.stop()  # asks the app to quit, and reads its screen to the end
            if tab._process is not None:
                await tab._process.wait()
            await websocket.close()
            self.tabs.discard(asyncio.current_task())
            print(f"a browser at {request.remote} closed the dashboard", flush=True)
        return websocket

    async def on_shutdown(self, app: web.Application) -> None:
        for task in self.tabs:
            task.cancel()
        await asyncio.gather(*self.tabs, return_exceptions=True)


def serve(command: str, host: str, port: int, child) -> int:
    """Serve `command` (session_command's) to each tab until Ctrl+C, SIGTERM, SIGHUP or
    the daemon started (`child`, a DaemonChild or None) stopping; 1 for the last."""
    check_port(host, port)
    if not is_loopback_host(host):
        print(f"streamemo dash: warning: anyone who can reach port {port} on this machine sees the dashboard "
              "and can press its keys (there is no login); prefer the default and `ssh -L` from elsewhere",
              file=sys.stderr, flush=True)
    server = DashServer(command, host, port, child)
    if child is not None:
        child.start()
    try:
        server.serve()
    except OSError as error:  # the port taken between check_port and here
        raise bind_error(host, port, error) from None
    finally:
        if child is not None:
            child.stop()
    if server.daemon_problem:
        print(f"streamemo dash: {server.daemon_problem}".replace("\n", "; "), file=sys.stderr)
        return 1
    return 0
