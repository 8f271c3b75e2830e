"""A Docker engine of the test run's own: `dockerd` started and stopped by the tests (own data and
exec roots, no iptables, no bridge: containers use the host's network and leave its firewall
alone), a Debian bookworm base image made with debootstrap (no registry is reachable), and the
project's image built on it with the classic builder.

Cached between runs on one machine, under ~/.cache/mlsd-lab (MLSD_CACHE_DIR overrides): the
debootstrap tarball, and the engine's data root, whose layer cache rebuilds only what changed
(the dependencies' layer only when pyproject.toml or uv.lock change). A second run that finds the
cache locked by another run uses a fresh data root of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_IMAGE = "mlsd-lab:ci"
# What the base needs beyond minbase: Python 3.11 (Debian 12's), venv for the build stage's uv,
# and CA certificates for the build's HTTPS to PyPI.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_MIRROR = os.environ.get("MLSD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The machine's CA bundle goes into the base: where PyPI is reached through a TLS-inspecting
# proxy, the build trusts what the machine trusts (Debian's bundle plus the proxy's CA).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "mlsd-lab"
    return Path(os.environ.get("MLSD_CACHE_DIR", default))


def unavailable_reason() -> str | None:
    """Why this machine cannot run the engine (None: it can)."""
    if os.geteuid() != 0:
        return "dockerd and debootstrap need root here (the project sets up no rootless Docker)"
    for tool, package in (
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("debootstrap", "debootstrap"),
    ):
        if shutil.which(tool) is None:
            return (
                f"{tool} is not installed (scripts/system-packages.sh installs Debian's {package} "
                "with apt when run as root)"
            )
    return None


@dataclass
class Engine:
    """A running dockerd and how to call it."""

    socket: Path
    log: Path

    def docker(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [shutil.which("docker") or "docker", "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0


@contextlib.contextmanager
def _data_root() -> Iterator[Path]:
    """The cached data root, held for this run; a fresh temporary one if another run holds it."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / "docker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        tmp = Path(tempfile.mkdtemp(prefix="mlsd-docker-root-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        yield cache / "docker"
    finally:
        lock.close()


@contextlib.contextmanager
def running_engine(start_timeout: float = 90) -> Iterator[Engine]:
    """Start dockerd for the duration of the block, then stop it (SIGTERM, then SIGKILL)."""
    # A short exec root: containerd's sockets live there, and a unix socket path is short.
    exec_root = Path(tempfile.mkdtemp(prefix="mlsd-dx-", dir="/tmp"))
    with _data_root() as data_root:
        data_root.mkdir(parents=True, exist_ok=True)
        socket = exec_root / "docker.sock"
        log = exec_root / "dockerd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    shutil.which("dockerd") or "dockerd",
                    "--data-root",
                    str(data_root),
                    "--exec-root",
                    str(exec_root / "exec"),
                    "--pidfile",
                    str(exec_root / "dockerd.pid"),
                    "-H",
                    f"unix://{socket}",
                    "--iptables=false",
                    "--bridge=none",
                    "--log-level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine = Engine(socket, log)
        try:
            deadline = time.monotonic() + start_timeout
            while engine.docker("info", check=False, timeout=30).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dockerd did not start:\n{log.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.5)
            yield engine
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            _unmount_under(exec_root)
            shutil.rmtree(exec_root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """dockerd leaves its network namespace's bind mount (exec/netns/default) behind."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    for point in sorted((m.split()[1] for m in mounts), reverse=True):
        if point.startswith(f"{root}/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _host_ca() -> bytes:
    return HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""


def base_key() -> str:
    """What the base is made of: package list, mirror and CA bundle (names its tarball and tag)."""
    recipe = f"bookworm {' '.join(BASE_PACKAGES)} {DEBIAN_MIRROR}".encode() + _host_ca()
    return f"bookworm-{hashlib.sha256(recipe).hexdigest()[:12]}"


def base_image() -> str:
    return f"mlsd-base:{base_key()}"


def base_tarball() -> Path:
    """Debian bookworm (minbase plus BASE_PACKAGES, the machine's CA bundle) as a tar of its
    root, made once per base_key."""
    ca = _host_ca()
    tarball = cache_dir() / "base" / f"{base_key()}.tar"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="mlsd-rootfs-", dir=tarball.parent))
    try:
        subprocess.run(
            [
                shutil.which("debootstrap") or "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        if ca:
            (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
        partial = tarball.with_suffix(f".{os.getpid()}.partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=600
        )
        os.replace(partial, tarball)  # whole or absent, for a concurrent run
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def ensure_base_image(engine: Engine) -> None:
    if not engine.has_image(base_image()):
        engine.docker("import", str(base_tarball()), base_image(), timeout=600)


def build_project_image(engine: Engine, log: Path) -> None:
    """`docker build` of the project's Dockerfile on the debootstrapped base, with the classic
    builder (no buildx here) and the host's network (the build installs from PyPI)."""
    result = engine.docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base_image()}",
        "-t",
        PROJECT_IMAGE,
        str(ROOT),
        # A first build on a busy 2-core machine took 35 min (a 3 GB environment, copied twice
        # into layers); later builds reuse the cached layers.
        timeout=3600,
        check=False,
        env={"DOCKER_BUILDKIT": "0"},
    )
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{(result.stdout + result.stderr)[-5000:]}")
    # Earlier builds' images, now untagged, would pile up in the cached data root.
    engine.docker("image", "prune", "--force", check=False)


def run_detached(engine: Engine, name: str, options: Sequence[str], command: Sequence[str]) -> str:
    engine.docker("rm", "--force", name, check=False)
    return engine.docker(
        "run", "--detach", "--name", name, *options, PROJECT_IMAGE, *command
    ).stdout.strip()
