"""Run the app under uvicorn: one process, one event loop, a graceful drain on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops listening, closes idle connections, and waits up to
``limits.drain_seconds`` for the requests in flight (running, queued or streaming) to finish;
then the app's shutdown stops the model worker and :func:`serve` returns 143 (SIGTERM) or 130
(SIGINT), the codes ``sosm train`` uses after its own clean stop (uvicorn would re-raise the
signal instead; the exit code says the same without killing the process mid-``finally``). The line
``sosm serve: listening on http://HOST:PORT`` is printed (and flushed) once the socket is bound,
so a caller that passed ``port=0`` learns the port.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

from .app import create_app
from .limits import ServeLimits


def serve(trained, *, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits = ServeLimits(),
          load_seconds: float = 0.0, graph_fn=None, inspect_fn=None, log_level: str = "warning") -> int:
    """Serve ``trained`` until SIGTERM / SIGINT; returns the exit code (143 / 130 after a clean drain)."""
    import uvicorn

    app = create_app(trained, limits=limits, graph_fn=graph_fn, inspect_fn=inspect_fn, load_seconds=load_seconds)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            for server in self.servers:
                for sock in server.sockets:
                    bound_host, bound_port = sock.getsockname()[:2]
                    print(f"sosm serve: listening on http://{bound_host}:{bound_port} ({trained.label}, "
                          f"queue_size={limits.queue_size}, load {load_seconds:.2f} s)", flush=True)

        @contextlib.contextmanager
        def capture_signals(self):  # uvicorn's, without re-raising the signal after the drain
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            received.append(sig)
            if not self.should_exit:
                queue = app.state.queue
                print(f"sosm serve: signal {sig}: draining {queue.running} running and {queue.waiting} waiting "
                      f"requests (up to {limits.drain_seconds:g} s)", file=sys.stderr, flush=True)
            super().handle_exit(sig, frame)

    received: list = []
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=limits.drain_seconds)
    server = Server(config)
    server.run()
    print("sosm serve: stopped", file=sys.stderr, flush=True)
    if not server.started:
        return 1
    return {signal.SIGTERM: 143, signal.SIGINT: 130}.get(received[0], 0) if received else 0
