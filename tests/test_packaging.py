"""The SDK installs without the server: `pip install tidings` is the client alone, the
server is `tidings[server]` (PostgreSQL and OpenAI are extras of their own)."""

from __future__ import annotations

import os
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_ONLY = ("fastapi", "uvicorn", "starlette", "asyncpg", "openai", "prometheus", "redis")


def project() -> dict[str, object]:
    with open(REPO / "pyproject.toml", "rb") as f:
        table: dict[str, object] = tomllib.load(f)["project"]
    return table


def test_the_base_install_declares_no_server_dependency() -> None:
    base = [str(dep).lower() for dep in project()["dependencies"]]  # type: ignore[attr-defined]
    assert base, "the client needs its own dependencies"
    assert not [dep for dep in base if dep.startswith(SERVER_ONLY)], base


def test_the_server_postgres_and_openai_are_extras() -> None:
    extras: dict[str, list[str]] = project()["optional-dependencies"]  # type: ignore[assignment]
    assert any(dep.startswith("uvicorn") for dep in extras["server"])
    assert any(dep.startswith("asyncpg") for dep in extras["postgres"])
    assert any(dep.startswith("openai") for dep in extras["openai"])


@pytest.mark.slow
def test_a_client_only_install_imports_the_sdk_without_the_server(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if installed.returncode != 0 and "Could not find a version" in installed.stderr:
        pytest.skip(f"no package index reachable: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = (
        "import importlib.util, sys, tidings.client\n"
        f"missing = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is None]\n"
        f"assert missing == list({SERVER_ONLY!r}), missing\n"
        "from tidings.client import connect\n"
        "print('ok')\n"
    )
    ran = subprocess.run(
        [str(python), "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ok"
    serve = subprocess.run(
        [str(env_dir / "bin" / "tidings"), "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 2
    assert "pip install 'tidings[server]'" in serve.stderr
    assert "Traceback" not in serve.stderr
