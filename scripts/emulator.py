"""Starts the local EC2 emulator (moto server) for the demo and the benchmarks."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(moto_server: str, seed_path: str):
    """Starts moto on a free loopback port with the seed file of images; returns the
    process and its endpoint once it answers. The caller stops it (terminate, wait)."""
    port = free_port()
    env = dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false", MOTO_AMIS_PATH=seed_path)
    proc = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(proc, endpoint)
    return proc, endpoint


def wait_for(proc, endpoint: str) -> None:
    """Waits until the emulator at `endpoint` answers (stops it and raises if it never does)."""
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"the emulator did not start on {endpoint}")


def start_proxy(upstream: str, scale: float, latency_ms: float = 0.0, throttle: bool = True,
                extra: list = ()):
    """Starts the throttling proxy (scripts/throttle_proxy.py) in front of `upstream` with
    refill rates times `scale` and `latency_ms` per EC2 call (or, with `throttle` false, as
    the emulator's unthrottled front door, answering what moto lacks), with `extra`
    arguments; returns the process and its endpoint."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throttle_proxy.py")
    extra = list(extra) + ([] if throttle else ["--no-throttle"])
    proc = subprocess.Popen([sys.executable, script, upstream, "--scale", str(scale),
                             "--latency", str(latency_ms)] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.terminate()
        raise RuntimeError("the throttling proxy did not start")
    return proc, line.split()[-1]


def proxy_stats(endpoint: str, reset: bool = False) -> dict:
    """The proxy's per-action counts (and clears them when `reset`)."""
    req = urllib.request.Request(f"{endpoint}/__throttle__" + ("/reset" if reset else ""),
                                 method="POST" if reset else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def client_env(endpoint: str) -> dict:
    """Environment that points ami-sweeper (or any AWS SDK) at the emulator."""
    return dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_EC2_METADATA_DISABLED="true")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
