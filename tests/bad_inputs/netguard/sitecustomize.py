"""A network guard for the worker process in tests: nothing but 127.0.0.1 is ever reached.

Put this folder on ``PYTHONPATH`` and set ``WAN22_NETGUARD`` to a JSON object; Python then imports
this file at start-up (``site`` imports ``sitecustomize``) in the worker and in its ComfyUI double.
Without ``WAN22_NETGUARD`` it does nothing.

``WAN22_NETGUARD`` = ``{"log": "<file>", "hosts": {"<name>": ["<ip>", ...]}, "routes": {"<ip>:<port>": <local port>}}``

- every ``connect`` is appended to ``log`` as a JSON line ``{"pid", "event": "connect", "host",
  "port", "action"}``; ``action`` is ``"local"`` (127.0.0.1, allowed), ``"routed"`` (a made-up
  public address sent to a server on 127.0.0.1) or ``"blocked"`` (anything else: the connect
  fails with ENETUNREACH, so no packet leaves the machine even if the worker had a bug);
- ``socket.getaddrinfo`` (and ``gethostbyname``) answers the names in ``hosts`` from the table,
  passes IP literals and ``localhost`` through, and fails for every other name: no DNS query is
  ever sent;
- at start-up the guard writes ``{"pid", "event": "loaded", "argv", "ppid"}``, so a test can check it is active
  before sending anything that would otherwise need DNS.

This is how the bad-input corpus reaches a redirecting server through a worker running with the
default ``ALLOW_PRIVATE_IMAGE_URLS=false``: a made-up public host resolves to a public address,
passes the worker's address check, and the guard routes the connection to the local server.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys


def _install(config: dict) -> None:
    log_path = config["log"]
    hosts = {name: list(addresses) for name, addresses in config.get("hosts", {}).items()}
    routes = {key: int(port) for key, port in config.get("routes", {}).items()}
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def record(**fields: object) -> None:
        line = json.dumps({"pid": os.getpid(), **fields}) + "\n"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def destination(sock: socket.socket, address: object) -> tuple[str, object]:
        """What to connect to instead of ``address``, and the action taken."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return "local", address  # Unix sockets, socketpairs
        host, port = str(address[0]), address[1]
        routed = routes.get(f"{host}:{port}")
        if routed is not None:
            return "routed", ("127.0.0.1", routed) if sock.family == socket.AF_INET else ("::ffff:127.0.0.1", routed, 0, 0)
        if host in ("127.0.0.1", "::ffff:127.0.0.1"):
            return "local", address
        return "blocked", address

    def checked(sock: socket.socket, address: object) -> object:
        action, target = destination(sock, address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            record(event="connect", host=str(address[0]), port=address[1], action=action)
        if action == "blocked":
            raise OSError(errno.ENETUNREACH, f"netguard: connection to {address[0]} blocked")  # type: ignore[index]
        return target

    def connect(sock: socket.socket, address: object) -> None:
        return real_connect(sock, checked(sock, address))

    def connect_ex(sock: socket.socket, address: object) -> int:
        try:
            target = checked(sock, address)
        except OSError as exc:
            return exc.errno or errno.ENETUNREACH
        return real_connect_ex(sock, target)

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name in hosts:
            infos = []
            for address in hosts[name]:
                infos += real_getaddrinfo(address, port, *args, **kwargs)
            return infos
        if name is None or name == "localhost" or _is_ip_literal(name):
            return real_getaddrinfo(host, port, *args, **kwargs)
        record(event="dns", host=str(name), action="blocked")
        raise socket.gaierror(socket.EAI_NONAME, f"netguard: no DNS for {name}")

    def by_name(real: object) -> object:
        def lookup(name: str) -> object:
            if name in hosts or name == "localhost" or _is_ip_literal(name):
                return real(hosts[name][0] if name in hosts else name)  # type: ignore[operator]
            record(event="dns", host=str(name), action="blocked")
            raise socket.gaierror(socket.EAI_NONAME, f"netguard: no DNS for {name}")

        return lookup

    socket.gethostbyname = by_name(socket.gethostbyname)
    socket.gethostbyname_ex = by_name(socket.gethostbyname_ex)
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    record(event="loaded", argv=sys.argv[:3], ppid=os.getppid())


def _is_ip_literal(name: object) -> bool:
    """An address the C resolver parses without any query: IPv6, dotted IPv4 and the legacy
    IPv4 forms ``inet_aton`` reads (``2130706433``, ``0177.0.0.1``, ``127.1``)."""
    if not isinstance(name, str):
        return False
    try:
        socket.inet_aton(name)
        return True
    except OSError:
        pass
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name.split("%", 1)[0])
            return True
        except OSError:
            continue
    return False


_CONFIG = os.environ.get("WAN22_NETGUARD")
if _CONFIG:
    _install(json.loads(_CONFIG))
