"""Settings come from the environment and `.env`, with the work order's defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _no_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(Settings.model_config, "env_file", None)


def test_defaults_follow_the_work_order() -> None:
    settings = Settings()
    assert settings.max_image_size == 2048
    assert settings.max_file_size == 10_485_760
    assert settings.api_port == 8000
    assert settings.allowed_origins == ["*"]
    assert settings.max_prompt_length == 1000
    assert (settings.remove_dilate_kernel_size, settings.fill_dilate_kernel_size) == (15, 50)
    assert settings.replace_dilate_kernel_size == 0


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_FILE_SIZE", "2048")
    monkeypatch.setenv("SAM_MODEL", "sam-vit_b:latest")
    monkeypatch.setenv("ENVIRONMENT", "production")
    settings = Settings()
    assert settings.max_file_size == 2048
    assert settings.sam_model == "sam-vit_b:latest"
    assert settings.is_production


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["*"]', ["*"]),
        ('["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
    ],
)
def test_allowed_origins_accepts_json_or_csv(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", raw)
    assert Settings().allowed_origins == expected


def test_dotenv_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_PORT=9123\nREDIS_URL=redis://127.0.0.1:6379/3\n")
    monkeypatch.setitem(Settings.model_config, "env_file", env_file)
    settings = Settings()
    assert settings.api_port == 9123
    assert settings.redis_url == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize(("name", "value"), [("API_PORT", "0"), ("ENVIRONMENT", "staging")])
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_env_example_documents_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = REPO_ROOT / ".env.example"
    keys = {
        line.split("=", 1)[0].strip()
        for line in example.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert keys == {name.upper() for name in Settings.model_fields}
    monkeypatch.setitem(Settings.model_config, "env_file", example)
    from_example = Settings().model_dump()
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    defaults = Settings().model_dump()
    # MODELS_DIR is written relative in the example; everything else equals the default.
    assert from_example.pop("models_dir").name == defaults.pop("models_dir").name
    assert from_example == defaults


def test_reported_version_is_the_project_version() -> None:
    import tomllib

    from api.app import VERSION

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert VERSION == pyproject["project"]["version"]
