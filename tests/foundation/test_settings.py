"""Settings: environment names are fixed, production refuses unsafe values."""
from pathlib import Path

import pytest

from settings import MIN_SECRET_LENGTH, Settings, SettingsError, settings_table


def test_fixed_names_are_read_from_the_environment(tmp_path):
    s = Settings.from_env(
        {
            "HOST": "0.0.0.0", "PORT": "9001", "DATA_DIR": str(tmp_path), "DATABASE_URL": "sqlite+aiosqlite:///x.db",
            "BROADCAST_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": "k" * 40, "PARLEY_ENV": "development",
            "PUBLIC_URL": "https://chat.example", "CORS_ORIGINS": "https://a.example, https://b.example",
            "RATE_LIMIT_ENABLED": "false",
        },
        dotenv=None,
    )
    assert (s.host, s.port, s.data_dir) == ("0.0.0.0", 9001, tmp_path)
    assert s.broadcast_url == "redis://127.0.0.1:6379/0"
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.rate_limit_enabled is False
    assert s.public_url == "https://chat.example"


def test_defaults():
    s = Settings.from_env({}, dotenv=None)
    assert s.port == 8000 and s.host == "127.0.0.1" and s.data_dir == Path("./data")
    assert s.broadcast_url == "memory://" and s.rate_limit_enabled is True
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9100\nPUBLIC_URL='https://x.example'\n# comment\n")
    s = Settings.from_env({"PORT": "9200"}, dotenv=env_file)
    assert s.port == 9200 and s.public_url == "https://x.example"


def test_production_refuses_missing_or_short_secret():
    with pytest.raises(SettingsError):
        Settings.from_env({"PARLEY_ENV": "production"}, dotenv=None)
    with pytest.raises(SettingsError):
        Settings.from_env({"PARLEY_ENV": "production", "SECRET_KEY": "k" * (MIN_SECRET_LENGTH - 1)}, dotenv=None)
    s = Settings.from_env({"PARLEY_ENV": "production", "SECRET_KEY": "k" * MIN_SECRET_LENGTH}, dotenv=None)
    assert not s.flag("introspection_enabled") and not s.flag("graphiql_enabled")
    assert not s.flag("field_suggestions_enabled")


def test_production_toggles_can_be_turned_back_on():
    s = Settings.from_env(
        {"PARLEY_ENV": "production", "SECRET_KEY": "k" * 40, "INTROSPECTION_ENABLED": "true"}, dotenv=None
    )
    assert s.flag("introspection_enabled") and not s.flag("graphiql_enabled")


def test_bad_values_are_refused():
    with pytest.raises(SettingsError):
        Settings.from_env({"PORT": "eighty"}, dotenv=None)
    with pytest.raises(SettingsError):
        Settings.from_env({"BROADCAST_URL": "kafka://x"}, dotenv=None)
    with pytest.raises(SettingsError):
        Settings.from_env({"RATE_LIMIT_ENABLED": "maybe"}, dotenv=None)


def test_development_secret_is_generated_once_and_kept(tmp_path):
    first = Settings(data_dir=tmp_path).with_secret()
    second = Settings(data_dir=tmp_path).with_secret()
    assert len(first.secret_key) >= MIN_SECRET_LENGTH and first.secret_key == second.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name, _ in settings_table() if f"`{name}`" not in readme]
    assert not missing, f"README.md settings table lacks: {missing}"
