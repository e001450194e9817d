"""polyroute.providers.catalog: the provider matrix read from the code, and docs that cannot drift."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from polyroute.config.build import KINDS
from polyroute.providers.base import Capabilities
from polyroute.providers.catalog import CatalogEntry, entries, entry, render_markdown
from polyroute.providers.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_provider_docs.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_provider_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_kind_and_preset_is_listed_once() -> None:
    names = [row.name for row in entries()]
    assert len(names) == len(set(names))
    assert set(names) == set(KINDS) | set(PRESETS)
    assert {"azure", "vertex", "bedrock", "openai", "gemini", "anthropic", "cohere"} <= set(names)


def test_capabilities_are_the_classes_declared_ones() -> None:
    from polyroute.providers.bedrock import BEDROCK_CAPABILITIES
    from polyroute.providers.gemini import GeminiProvider

    assert entry("bedrock") is not None and entry("bedrock").capabilities == BEDROCK_CAPABILITIES  # type: ignore[union-attr]
    assert entry("gemini").capabilities == GeminiProvider.capabilities  # type: ignore[union-attr]
    groq = entry("groq")
    assert groq is not None and groq.preset and groq.kind == "openai"
    assert groq.capabilities == PRESETS["groq"].capabilities
    assert entry("no-such-provider") is None


def test_env_vars_are_what_each_provider_reads() -> None:
    azure = entry("azure")
    assert azure is not None
    assert {"AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION"} <= set(azure.env_vars)
    vertex = entry("vertex")
    assert vertex is not None and vertex.env_vars[:2] == ("VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT")
    assert "GEMINI_API_KEY" not in vertex.env_vars
    bedrock = entry("bedrock")
    assert bedrock is not None and {"AWS_REGION", "AWS_ACCESS_KEY_ID", "BEDROCK_BASE_URL"} <= set(bedrock.env_vars)
    openrouter = entry("openrouter")
    assert openrouter is not None and "OPENROUTER_SITE_URL" in openrouter.env_vars
    assert entry("anthropic").env_vars == ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")  # type: ignore[union-attr]
    local = entry("local")
    assert local is not None and local.env_vars == () and local.default_endpoint is None


def test_default_endpoints_and_credentials() -> None:
    rows = {row.name: row for row in entries()}
    assert rows["openai"].default_endpoint == "https://api.openai.com/v1"
    assert rows["vertex"].default_endpoint == "https://us-central1-aiplatform.googleapis.com/v1"
    assert rows["bedrock"].default_endpoint == "https://bedrock-runtime.<region>.amazonaws.com"
    assert rows["groq"].needs_credentials and not rows["vllm"].needs_credentials
    assert rows["anthropic"].needs_credentials and not rows["ollama"].needs_credentials


def test_catalog_ignores_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = render_markdown()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://mine.openai.azure.com")
    assert render_markdown() == before


def test_markdown_rows_follow_the_entries() -> None:
    row = CatalogEntry(
        "demo", "openai", "x.Y", Capabilities(embeddings=False, tools=True), ("DEMO_KEY",), "https://demo", preset=True
    )
    text = render_markdown([row])
    assert "| `demo` | openai (preset) | yes | yes | no | yes | no | no |" in text
    assert "| `demo` | `DEMO_KEY` | `https://demo` | required |" in text


def test_docs_providers_md_is_up_to_date() -> None:
    """Fails when a provider changed and ``python scripts/gen_provider_docs.py`` was not rerun."""
    assert (ROOT / "docs" / "providers.md").read_text(encoding="utf-8") == render_markdown()
    assert generator().main(["--check"]) == 0


def test_generator_check_fails_on_drift_and_writes_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "providers.md"
    gen = generator()
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert gen.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_markdown()
    out.write_text(out.read_text(encoding="utf-8").replace("| `bedrock` |", "| `bedrock2` |"), encoding="utf-8")
    assert gen.main(["--check", "--output", str(out)]) == 1


def test_generator_runs_as_a_script(tmp_path: Path) -> None:
    out = tmp_path / "p.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(out)], capture_output=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == render_markdown()
