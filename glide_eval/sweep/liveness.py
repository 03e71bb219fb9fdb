"""Which ranks of a torchrun sweep are still there: a lost rank stops every other one, named.

A rank of a multi-node sweep can vanish at any moment: its node loses power or network, its
launcher is killed, the OOM killer takes it. Its peers would otherwise sample on and then
wait at the next collective -- forever, where no socket tells them (a hung node, a cut cable).
Here every pair of ranks keeps one TCP connection (the lower rank dials the higher one, on
the address that routes to MASTER_ADDR) and a thread per rank watches them:

- a peer whose process ends closes the connection (its kernel does, however it died): lost
  at once;
- a peer that answers no ping for `lost_after` seconds (GLIDE_EVAL_LOST_AFTER_S, default 60)
  is lost too: a frozen process or an unreachable node;
- a peer that stops on an error says so first ("b" + the error), and one that finishes says
  "done" and is no longer watched.

A second after the first lost (or failed) peer the rank prints one line for each peer lost
so far, naming it -- rank, node, local rank, host, pid -- and ends with exit status 1
(`os._exit`: its main thread may be blocked in a collective); when its own main thread ends
within that second (it may be failing on its own), the main thread's error is the message.
SIGTERM (torchrun stopping the workers of a node when one failed, or the launcher's own
death) goes through the same second, so a rank stopped that way still names the lost ones.
Finished shards are on disk, so rerunning the sweep resumes with none lost; under torchrun
with `--max-restarts` the launchers restart the ranks themselves.

Wire format, both directions of a connection alike: "h<rank>\\n" once from the dialling side,
then "p" (ping), "o" (pong), "b<reason>\\n" (bye).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from glide_eval.sweep.errors import SweepError

LOST_AFTER_ENV = "GLIDE_EVAL_LOST_AFTER_S"
DEFAULT_LOST_AFTER_S = 60.0
DONE = "done"
GRACE_S = 1.0
EXIT_LOST = 1


def lost_after_s(environ=os.environ) -> float:
    """GLIDE_EVAL_LOST_AFTER_S (seconds, > 0), else the default."""
    text = environ.get(LOST_AFTER_ENV, "")
    if not text:
        return DEFAULT_LOST_AFTER_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SweepError(f"{LOST_AFTER_ENV}={text!r}: expected a number of seconds > 0")
    return value


def routed_address(master: str) -> str:
    """This machine's address on the route to `master` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((master, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1" if master in ("localhost", "127.0.0.1") else socket.gethostbyname(socket.gethostname())


@dataclass(frozen=True)
class Peer:
    """One rank of the sweep and where its watcher listens."""

    rank: int
    address: str
    port: int
    host: str
    pid: int
    node: int
    local_rank: int

    def describe(self) -> str:
        return f"rank {self.rank} (node {self.node}, local rank {self.local_rank}, host {self.host}, pid {self.pid})"


class _Link:
    """One connection to a peer: what has been read, when it last answered."""

    def __init__(self, sock: socket.socket, rank: int | None):
        self.sock, self.rank = sock, rank
        self.buffer = b""
        self.seen = time.monotonic()


class Liveness:
    """The watcher of one rank; `start` it with every rank's `Peer`, `close` it on the way out."""

    def __init__(
        self,
        rank: int,
        world: int,
        master: str,
        lost_after: float | None = None,
        log: Callable[[str], None] | None = None,
        environ=os.environ,
    ):
        self.rank, self.world = rank, world
        self.lost_after = lost_after_s(environ) if lost_after is None else lost_after
        self.interval = min(5.0, self.lost_after / 4)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((routed_address(master), 0))
        self.listener.listen(max(world, 16))
        address, port = self.listener.getsockname()
        self.me = Peer(
            rank,
            address,
            port,
            socket.gethostname(),
            os.getpid(),
            int(environ.get("GROUP_RANK", 0)),
            int(environ.get("LOCAL_RANK", 0)),
        )
        self.peers: dict[int, Peer] = {}
        self.heard: set[int] = set()
        self.started = time.monotonic()
        self.links: list[_Link] = []
        self.selector = selectors.DefaultSelector()
        self.closing = threading.Event()
        self.lost: dict[int, str] = {}
        self.decided = threading.Event()
        self.event_at: float | None = None  # when the first peer was lost or SIGTERM came
        self.terminated = False
        self.wake: tuple[socket.socket, socket.socket] | None = None
        self.restore: tuple | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------ life cycle

    def start(self, peers: list[Peer]) -> None:
        """Dial every higher rank, then watch every link in a daemon thread."""
        self.peers = {p.rank: p for p in peers}
        self.started = time.monotonic()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        for peer in peers:
            if peer.rank <= self.rank:
                continue
            try:
                sock = socket.create_connection((peer.address, peer.port), timeout=self.lost_after)
                sock.sendall(f"h{self.rank}\n".encode())
            except OSError as e:
                self._decide(peer.rank, f"{peer.describe()} cannot be reached ({e})")
                continue
            self._add(sock, peer.rank)
        self._catch_sigterm()
        self.thread = threading.Thread(target=self._watch, name="glide-eval-liveness", daemon=True)
        self.thread.start()

    def _catch_sigterm(self) -> None:
        """SIGTERM (torchrun stopping its workers, or the launcher's death: `launcher`) wakes the
        watching thread at once, whatever the main thread is blocked in, so a rank stopped
        because a peer was lost still names it. Call from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        read, write = socket.socketpair()
        read.setblocking(False)
        write.setblocking(False)
        self.wake = (read, write)
        wakeup = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        handler = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        self.restore = (wakeup, handler)
        self.selector.register(read, selectors.EVENT_READ, "signal")

    def close(self, reason: str = DONE) -> None:
        """Stop watching; tell every peer `reason` ("done", or why this rank stops)."""
        self.closing.set()
        if self.thread is not None:
            self.thread.join(timeout=2 * self.interval + 1)
        if self.restore is not None:
            signal.set_wakeup_fd(self.restore[0])
            signal.signal(signal.SIGTERM, self.restore[1])
            self.restore = None
        with self.lock:
            self._accept_pending()
            bye = b"b" + reason.replace("\n", " ").encode(errors="replace") + b"\n"
            for link in self.links:
                try:
                    link.sock.settimeout(1.0)
                    link.sock.sendall(bye)
                except OSError:
                    pass
                link.sock.close()
            self.links = []
            self.listener.close()
            self.selector.close()
            for sock in self.wake or ():
                sock.close()

    def wait_for_verdict(self, timeout: float) -> str | None:
        """Block until a peer has been found lost and the watching thread has ended this process
        with its message; the verdict if it has not after all, None when `timeout` passes first."""
        if self.decided.wait(timeout) and self.thread is not None:
            self.thread.join(GRACE_S + 5)
        return self.verdict

    # ------------------------------------------------------------ the watching thread

    def _add(self, sock: socket.socket, rank: int | None) -> None:
        sock.setblocking(False)
        link = _Link(sock, rank)
        self.links.append(link)
        self.selector.register(sock, selectors.EVENT_READ, link)

    def _accept_pending(self) -> None:
        self.listener.setblocking(False)
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._add(sock, None)

    def _watch(self) -> None:
        last_ping = 0.0
        while not self.closing.is_set():
            if self.event_at is not None and time.monotonic() - self.event_at > GRACE_S:
                break  # the other ranks lost with the first one have been heard of meanwhile
            with self.lock:
                for key, _ in self.selector.select(timeout=min(0.2, self.interval)):
                    if key.data is None:
                        self._accept_pending()
                    elif key.data == "signal":
                        self._signalled(key.fileobj)
                    else:
                        self._read(key.data)
                now = time.monotonic()
                if now - last_ping >= self.interval:
                    last_ping = now
                    for link in list(self.links):
                        self._send(link, b"p")
                for link in self.links:
                    if link.rank is not None and now - link.seen > self.lost_after:
                        self._decide(link.rank, f"{self._name(link)} is lost: no answer for {self.lost_after:g} s")
                if now - self.started > self.lost_after:
                    for rank in sorted(self._never_dialled()):
                        self._decide(rank, f"{self.peers[rank].describe()} is lost: it never connected")
        if self.event_at is not None and not self.closing.is_set():
            self._stop_this_rank()

    def _signalled(self, wake: socket.socket) -> None:
        try:
            signals = wake.recv(64)
        except OSError:
            return
        if signal.SIGTERM in signals and not self.terminated:
            self.terminated = True
            if self.event_at is None:
                self.event_at = time.monotonic()

    def _read(self, link: _Link) -> None:
        try:
            data = link.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            data, error = b"", e
        else:
            error = None
        if not data:
            self._drop(link)
            if link.rank is not None:
                how = f" ({error})" if error else ""
                self._decide(link.rank, f"{self._name(link)} is lost: its process ended without finishing{how}")
            return
        link.buffer += data
        link.seen = time.monotonic()
        while link.buffer:
            head = link.buffer[:1]
            if head == b"p":
                self._send(link, b"o")
                link.buffer = link.buffer[1:]
            elif head == b"o":
                link.buffer = link.buffer[1:]
            elif head in (b"h", b"b") and b"\n" in link.buffer:
                line, link.buffer = link.buffer.split(b"\n", 1)
                text = line[1:].decode(errors="replace")
                if head == b"h":
                    link.rank = int(text)
                    self.heard.add(link.rank)
                else:
                    self._drop(link)
                    if text != DONE:
                        self._decide(link.rank, f"{self._name(link)} stopped: {text}")
                    return
            elif head in (b"h", b"b"):
                return  # the rest of the line is still on its way
            else:
                link.buffer = link.buffer[1:]

    def _never_dialled(self) -> set[int]:
        """Lower ranks (they dial this one) that have not said hello; those that left are gone
        from `links` but were heard, so they are in `heard`."""
        return {r for r in self.peers if r < self.rank} - self.heard

    def _send(self, link: _Link, data: bytes) -> None:
        try:
            link.sock.send(data)
        except BlockingIOError:
            pass
        except OSError:
            pass  # a closed peer shows as end of file on the next read

    def _drop(self, link: _Link) -> None:
        self.selector.unregister(link.sock)
        link.sock.close()
        self.links.remove(link)

    def _name(self, link: _Link) -> str:
        peer = self.peers.get(link.rank)
        return peer.describe() if peer is not None else f"rank {link.rank}"

    def _decide(self, rank: int, verdict: str) -> None:
        if rank in self.lost:
            return
        self.lost[rank] = verdict
        if self.event_at is None:
            self.event_at = time.monotonic()
        self.decided.set()

    @property
    def verdict(self) -> str | None:
        """Every lost rank, one per line; None while all are there."""
        return "\n".join(self.lost[r] for r in sorted(self.lost)) if self.lost else None

    def _stop_this_rank(self) -> None:
        """Unless this rank's main thread ends first (it may be failing on its own), say which
        ranks were lost and end the process."""
        prefix = f"[rank {self.rank}/{self.world}] " if self.world > 1 else ""
        for rank in sorted(self.lost):
            self.log(f"{prefix}{self.lost[rank]}")
        how = "stopping"
        if self.terminated:
            how = "stopped by SIGTERM (from its torchrun launcher, or the launcher ended)"
        self.log(
            f"{prefix}{how}. Finished shards are kept: rerun the sweep to resume "
            "(torchrun --max-restarts restarts it by itself)"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_LOST if self.lost else 128 + signal.SIGTERM)
