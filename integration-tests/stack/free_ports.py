"""N distinct free loopback TCP ports, printed on one line, none of the ports given after N.

Usage: free_ports.py RECORD N [AVOID...]. Ports handed out in the last two minutes (listed in
RECORD, a small file shared under a lock by every caller on this machine: the stack scripts and
the Rust tests) are not handed out again: the kernel may give a port just picked and released
to the next caller, and tests start servers side by side. A port is free when asked; it can
still be taken before its server binds it, which the start-up checks then report.
"""
import fcntl
import socket
import sys
import time

record, n, avoid = sys.argv[1], int(sys.argv[2]), {int(p) for p in sys.argv[3:]}
with open(record, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    now, recent = time.time(), {}
    for line in f:
        fields = line.split()
        try:
            if len(fields) == 2 and now - float(fields[1]) < 120:
                recent[int(fields[0])] = float(fields[1])
        except ValueError:
            pass
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)  # held bound until all are picked, so none is handed out twice
        port = s.getsockname()[1]
        if port not in avoid and port not in recent:
            ports.append(port)
    recent.update((p, now) for p in ports)
    f.seek(0)
    f.truncate()
    f.writelines(f"{p} {t}\n" for p, t in recent.items())
print(*ports)
