"""Loading config/default.yaml + .env: interpolation, precedence and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyroute.config import load_environment, load_settings
from polyroute.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "polyroute.yaml"
    path.write_text(text)
    return path


def test_shipped_default_config_is_valid() -> None:
    settings = load_settings(environ={})
    assert "default" in settings.models and settings.models["default"][-1] == "local:smollm2"
    assert settings.providers["openai"].api_key == ""
    assert settings.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert settings.runtime.router.first_token_timeout == 30


def test_variables_expand_with_defaults_and_nesting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n"
        "  gemini:\n"
        "    apiKey: ${GEMINI_API_KEY:-${GOOGLE_API_KEY}}\n"
        "    endpoint: ${GEMINI_BASE_URL:-https://example.invalid}\n"
        "  openai:\n"
        "    apiKey: ${OPENAI_API_KEY}\n",
    )
    settings = load_settings(path, environ={"GOOGLE_API_KEY": "g-key"})
    assert settings.providers["gemini"].api_key == "g-key"
    assert settings.providers["gemini"].endpoint == "https://example.invalid"
    assert settings.providers["openai"].api_key == ""
    assert settings.providers["openai"].api_key_env == "OPENAI_API_KEY"


def test_expansion_cannot_inject_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  openai:\n    apiKey: ${EVIL}\n")
    settings = load_settings(path, environ={"EVIL": "x\nproviders: {}"})
    assert settings.providers["openai"].api_key == "x\nproviders: {}"


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=from-dotenv\nGROQ_API_KEY=groq-dotenv\n")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    env = load_environment(env_file)
    assert env["OPENAI_API_KEY"] == "from-env" and env["GROQ_API_KEY"] == "groq-dotenv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("providers:\n  openai:\n    timeout: -1\n", "providers.openai.timeout"),
        ("providers:\n  openai:\n    tmeout: 3\n", "providers.openai.tmeout"),
        ("runtime:\n  router:\n    maxConcurrency: zero\n", "runtime.router.maxConcurrency"),
        ("models:\n  'a:b': [x:y]\n", "models"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("providers: [\n", "not valid YAML"),
    ],
)
def test_validation_errors_name_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_alias_accepts_single_value_and_object_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n  one: openai:gpt-4o-mini\n  obj:\n    - {provider: gemini, modelId: gemini-2.0-flash, maxTokens: 64}\n",
    )
    settings = load_settings(path, environ={})
    assert settings.models["one"] == ["openai:gpt-4o-mini"]
    ref = settings.models["obj"][0]
    assert not isinstance(ref, str) and ref.max_tokens == 64
