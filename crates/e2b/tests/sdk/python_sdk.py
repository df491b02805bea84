"""Drives a Mayfly E2B door with the official E2B Python SDK (no pytest).

Environment: E2B_URL (the door), E2B_KEY (a Mayfly API token), E2B_OTHER_KEY (another user's
token, optional). Each check asserts real outputs; the first failure exits non-zero.
"""
import os
import sys
import time
import urllib.error
import urllib.request

from e2b import Sandbox, CommandExitException, SandboxQuery
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException

URL = os.environ["E2B_URL"]
KEY = os.environ["E2B_KEY"]
OTHER = os.environ.get("E2B_OTHER_KEY")


def make_other_key(main_url, admin_token):
    """A member user on the main API and an API token of theirs (password sign-in, as a browser)."""
    import http.cookiejar
    import json

    email, password = "e2b-other@example.test", "other-password-0123456789"
    req = urllib.request.Request(
        f"{main_url}/api/v1/users",
        data=json.dumps({"email": email, "role": "member", "password": password}).encode(),
        headers={"authorization": f"Bearer {admin_token}", "content-type": "application/json"},
    )
    urllib.request.urlopen(req).read()
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    jar.open(urllib.request.Request(
        f"{main_url}/api/v1/auth/password",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"content-type": "application/json"},
    )).read()
    made = jar.open(urllib.request.Request(
        f"{main_url}/api/v1/tokens",
        data=json.dumps({"name": "e2b-other", "expires_in_days": 1}).encode(),
        headers={"content-type": "application/json", "origin": main_url},
    )).read()
    return json.loads(made)["token"]


if not OTHER and os.environ.get("MAYFLY_URL"):
    OTHER = make_other_key(os.environ["MAYFLY_URL"], KEY)
OPTS = dict(api_url=URL, sandbox_url=URL, api_key=KEY)
ONLY = set(filter(None, os.environ.get("E2B_CHECKS", "").split(",")))


def step(name):
    print(f"== {name}", flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def check_wrong_key():
    step("wrong key refused")
    try:
        Sandbox.create(api_url=URL, sandbox_url=URL, api_key="mfy_not_a_real_token_000000000000")
    except AuthenticationException:
        return
    except SandboxException as e:
        expect("401" in str(e) or "API key" in str(e), f"wrong key: unexpected error {e!r}")
        return
    raise AssertionError("a wrong key created a sandbox")


def check_commands(sbx):
    step("commands.run foreground")
    r = sbx.commands.run("echo out; echo err >&2; echo $GREETING; pwd", envs={"GREETING": "hello-env"}, cwd="/tmp")
    expect(r.exit_code == 0, f"exit {r.exit_code}")
    expect(r.stdout.splitlines() == ["out", "hello-env", "/tmp"], f"stdout {r.stdout!r}")
    expect(r.stderr.strip() == "err", f"stderr {r.stderr!r}")

    step("sandbox envs reach commands")
    r = sbx.commands.run("echo $SBX_VAR")
    expect(r.stdout.strip() == "from-create", f"sandbox env {r.stdout!r}")

    step("on_stdout callbacks")
    seen = []
    sbx.commands.run("for i in 1 2 3; do echo line$i; done", on_stdout=lambda s: seen.append(s))
    expect("".join(seen).split() == ["line1", "line2", "line3"], f"callbacks {seen!r}")

    step("non-zero exit raises CommandExitException")
    try:
        sbx.commands.run("echo bad >&2; exit 3")
        raise AssertionError("no exception for exit 3")
    except CommandExitException as e:
        expect(e.exit_code == 3, f"exit code {e.exit_code}")
        expect("bad" in e.stderr, f"stderr {e.stderr!r}")

    step("background + send_stdin + list + kill")
    h = sbx.commands.run("read line; echo got:$line; sleep 600", background=True, stdin=True)
    pids = [p.pid for p in sbx.commands.list()]
    expect(h.pid in pids, f"pid {h.pid} not in {pids}")
    sbx.commands.send_stdin(h.pid, "ping\n")
    got = ""
    for out, _, _ in h:
        got += out or ""
        if "got:ping" in got:
            break
    expect("got:ping" in got, f"background stdout {got!r}")
    expect(sbx.commands.kill(h.pid), "kill returned False")
    deadline = time.time() + 60
    while h.pid in [p.pid for p in sbx.commands.list()] and time.time() < deadline:
        time.sleep(0.2)
    expect(h.pid not in [p.pid for p in sbx.commands.list()], "killed process still listed")
    expect(not sbx.commands.kill(h.pid), "killing a gone pid returned True")


def check_pty(sbx):
    step("pty create / input / resize")
    from e2b import PtySize
    t = sbx.pty.create(size=PtySize(rows=24, cols=80))
    sbx.pty.resize(t.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(t.pid, b"stty size; echo pty-$((6*7)); exit\n")
    out = []
    try:
        t.wait(on_pty=lambda d: out.append(bytes(d)))
    except CommandExitException:
        pass
    text = b"".join(out).decode(errors="replace")
    expect("pty-42" in text, f"pty output {text!r}")
    expect("30 100" in text, f"pty size {text!r}")


def check_files(sbx):
    step("files write/read text")
    sbx.files.write("/root/e2b/hello.txt", "hello files")
    expect(sbx.files.read("/root/e2b/hello.txt") == "hello files", "text round trip")

    step("files binary (3 MiB)")
    blob = os.urandom(3 * 1024 * 1024 + 17)
    sbx.files.write("/root/e2b/blob.bin", blob)
    back = sbx.files.read("/root/e2b/blob.bin", format="bytes")
    expect(bytes(back) == blob, f"binary round trip ({len(back)} bytes)")
    r = sbx.commands.run("stat -c %s /root/e2b/blob.bin")
    expect(int(r.stdout) == len(blob), f"size in sandbox {r.stdout!r}")

    step("list / exists / get_info")
    names = sorted(e.name for e in sbx.files.list("/root/e2b"))
    expect(names == ["blob.bin", "hello.txt"], f"list {names}")
    expect(sbx.files.exists("/root/e2b/hello.txt"), "exists")
    expect(not sbx.files.exists("/root/e2b/nope"), "not exists")
    info = sbx.files.get_info("/root/e2b/blob.bin")
    expect(info.size == len(blob) and info.type.value == "file", f"info {info}")

    step("make_dir / rename / remove / list depth")
    expect(sbx.files.make_dir("/root/e2b/sub/deeper"), "make_dir")
    expect(not sbx.files.make_dir("/root/e2b/sub/deeper"), "make_dir twice")
    sbx.files.rename("/root/e2b/hello.txt", "/root/e2b/sub/moved.txt")
    expect(sbx.files.read("/root/e2b/sub/moved.txt") == "hello files", "renamed content")
    deep = sorted(e.path for e in sbx.files.list("/root/e2b", depth=3))
    expect("/root/e2b/sub/deeper" in deep and "/root/e2b/sub/moved.txt" in deep, f"depth list {deep}")
    sbx.files.remove("/root/e2b/sub")
    expect(not sbx.files.exists("/root/e2b/sub/moved.txt"), "removed")
    try:
        sbx.files.read("/root/e2b/missing.txt")
        raise AssertionError("reading a missing file succeeded")
    except NotFoundException:
        pass

    step("watch_dir")
    sbx.files.make_dir("/root/watched")
    w = sbx.files.watch_dir("/root/watched")
    sbx.files.write("/root/watched/new.txt", "x")
    names = set()
    deadline = time.time() + 60
    while "new.txt" not in names and time.time() < deadline:
        names |= {e.name for e in w.get_new_events()}
        time.sleep(0.5)
    w.stop()
    expect("new.txt" in names, f"watch events {names}")


def check_ports(sbx):
    step("get_host + HTTP into the sandbox")
    sbx.files.write("/root/site/index.html", "served-from-sandbox")
    sbx.commands.run("cd /root/site && python3 -m http.server 8123", background=True)
    host = sbx.get_host(8123)
    expect(host.startswith(f"8123-{sbx.sandbox_id}."), f"host {host}")
    door = URL.split("//", 1)[1]
    body = None
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"{URL}/index.html", headers={"Host": host, "X-API-KEY": KEY})
            body = urllib.request.urlopen(req, timeout=10).read().decode()
            break
        except Exception:
            time.sleep(1)
    expect(body == "served-from-sandbox", f"port body {body!r} via {door}")
    step("port traffic without a key is refused")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{URL}/index.html", headers={"Host": host}), timeout=10)
        raise AssertionError("a private port answered without a key")
    except urllib.error.HTTPError as e:
        expect(e.code == 404, f"keyless port traffic: {e.code}")


def check_lifecycle(sbx):
    step("get_info / list / connect")
    info = sbx.get_info()
    expect(info.sandbox_id == sbx.sandbox_id, "info id")
    expect(info.metadata.get("suite") == "sdk", f"metadata {info.metadata}")
    listed = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(metadata={"suite": "sdk"}), **OPTS).next_items()]
    expect(sbx.sandbox_id in listed, f"list {listed}")
    again = Sandbox.connect(sbx.sandbox_id, **OPTS)
    expect(again.commands.run("echo again").stdout.strip() == "again", "connect + run")
    if OTHER:
        step("someone else's sandbox is not found")
        try:
            Sandbox.connect(sbx.sandbox_id, api_url=URL, sandbox_url=URL, api_key=OTHER)
            raise AssertionError("another user connected")
        except (NotFoundException, SandboxException) as e:
            expect("not found" in str(e).lower() or "404" in str(e), f"other user: {e!r}")


def check_timeout_and_kill(sbx):
    step("set_timeout expiry")
    sbx.set_timeout(5)
    deadline = time.time() + 120
    while sbx.is_running() and time.time() < deadline:
        time.sleep(1)
    expect(not sbx.is_running(), "sandbox still running after its timeout")


def main():
    check_wrong_key()
    step("create with metadata and envs")
    t0 = time.time()
    sbx = Sandbox.create(metadata={"suite": "sdk"}, envs={"SBX_VAR": "from-create"}, timeout=600, **OPTS)
    first = sbx.commands.run("echo first").stdout.strip()
    print(f"create->first run: {time.time() - t0:.2f}s", flush=True)
    expect(first == "first", f"first run {first!r}")
    expect(sbx.is_running(), "is_running")
    failures = []
    for name, check in [("commands", check_commands), ("files", check_files), ("pty", check_pty),
                        ("lifecycle", check_lifecycle), ("ports", check_ports)]:
        if ONLY and name not in ONLY:
            continue
        try:
            check(sbx)
        except Exception as e:  # report all checks, fail at the end
            import traceback
            traceback.print_exc()
            failures.append(f"{name}: {e!r}")
    step("kill (a running command's stream ends)")
    import threading
    h = sbx.commands.run("sleep 600", background=True)
    ended = []
    def wait():
        try:
            h.wait()
        except Exception as e:
            ended.append(repr(e))
        else:
            ended.append("ok")
    t = threading.Thread(target=wait, daemon=True)
    t.start()
    sbx.kill()
    t.join(90)
    if not ended:
        failures.append("a command's stream outlived its killed sandbox")
    expect(not sbx.is_running(), "killed sandbox still running")
    try:
        Sandbox.connect(sbx.sandbox_id, **OPTS)
        failures.append("connect to a killed sandbox succeeded")
    except Exception:
        pass
    if not ONLY or "timeout" in ONLY:
        short = Sandbox.create(timeout=600, **OPTS)
        try:
            check_timeout_and_kill(short)
        except Exception as e:
            failures.append(f"timeout: {e!r}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), flush=True)
        sys.exit(1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
