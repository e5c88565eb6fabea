"""The CLI prompts for an unseal key on the terminal without echoing it.

Runs `arcanum operator unseal` on a real pseudo-terminal, waits for the prompt, types the
key, and checks that the key never appears in what the terminal showed.
"""

import json
import os
import pty
import select
import termios
import time
import urllib.request



def _read_until(fd, needle, deadline):
    seen = b""
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {needle!r}; terminal showed {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _read_all(fd, deadline):
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_unseal_prompt_does_not_echo_the_key(server):
    body = json.dumps({"secret_shares": 3, "secret_threshold": 2}).encode()
    request = urllib.request.Request(f"{server}/v1/sys/init", data=body, method="PUT")
    keys = json.load(urllib.request.urlopen(request))["keys"]

    env = dict(os.environ, ARCANUM_ADDR=server)
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(os.environ["ARCANUM_BIN"], ["arcanum", "operator", "unseal"], env)
    deadline = time.monotonic() + 30
    shown = _read_until(fd, b"Unseal Key", deadline)
    # The prompt is printed just before echo is switched off; type only once the terminal
    # says echo is off (the pty master reports the slave's settings), as a person would.
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        assert time.monotonic() < deadline, "the prompt never turned terminal echo off"
        time.sleep(0.005)
    os.write(fd, keys[0].encode() + b"\n")
    shown += _read_all(fd, deadline)
    _, status = os.waitpid(pid, 0)
    text = shown.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert keys[0] not in text, "the key was echoed to the terminal"
    assert "1/2" in text, text
