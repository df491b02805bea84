# Network probes run inside a session's VM by tests/egress: each probe tries one way out and
# reports what happened, as JSON on stdout. Probes never raise; failures are results.
import json
import os
import socket
import sys
import urllib.error
import urllib.request

PROXY = ("127.0.0.1", 3128)
# Host addresses in the probes must go through the proxy, even loopback ones (which normally
# mean the VM itself and bypass it).
os.environ.pop("no_proxy", None)
os.environ.pop("NO_PROXY", None)


def recv_all(s, limit=65536):
    data = b""
    while len(data) < limit:
        try:
            chunk = s.recv(4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return {"connected": True}
    except OSError as e:
        return {"connected": False, "error": str(e)}


def connect(host, port, talk):
    s = socket.create_connection(PROXY, timeout=30)
    target = ("[%s]" % host if ":" in host else host) + ":%d" % port
    s.sendall(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + target.encode() + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    out = {"status": status}
    if status == 200 and talk:
        s.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
        out["reply"] = (rest + recv_all(s)).decode(errors="replace")
    elif status != 200:
        out["body"] = (rest + recv_all(s)).decode(errors="replace")
    s.close()
    return out


def get(url):
    try:
        r = urllib.request.urlopen(url, timeout=30)
        return {"status": r.status, "body": r.read().decode(errors="replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode(errors="replace")}
    except Exception as e:
        return {"status": 0, "error": repr(e)}


results = []
for p in json.loads(sys.argv[1]):
    try:
        if p["kind"] == "direct":
            r = direct(p["host"], p["port"])
        elif p["kind"] == "connect":
            r = connect(p["host"], p["port"], p.get("talk", True))
        else:
            r = get(p["url"])
    except Exception as e:
        r = {"status": 0, "error": repr(e)}
    results.append(r)
print(json.dumps(results))
