"""Process-wide settings, read from ``FLEET_*`` environment variables (or passed explicitly)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet_ray.names import DEFAULT_CHROMIUM

DEFAULT_HOME = Path.home() / ".fleet-ray"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    namespace: str = Field("fleet", description="Ray namespace of the fleet's named actors.")
    store_url: str = Field(
        default_factory=lambda: f"sqlite://{DEFAULT_HOME / 'store.db'}",
        description="Durable store: sqlite:///abs/path (embedded default) or redis://host:port/db.",
    )
    ray_address: str | None = Field(None, description="Ray cluster to attach to (default: auto).")
    tick_s: float = Field(0.1, gt=0, description="Supervisor reconcile period.")
    chromium_path: str = Field(DEFAULT_CHROMIUM, description="Chromium executable for browser slots.")
    api_host: str = "127.0.0.1"
    api_port: int = 8470
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    api_url: str | None = Field(
        None, description="Base URL of a running control-plane API; the CLI talks to it (FLEET_API_URL)."
    )
    api_read_auth: bool = Field(False, description="Read endpoints of the API need the token too.")
    api_status_ttl_s: float = Field(0.5, ge=0, description="The API caches fleet status this long.")
    api_allowed_hosts: str = Field(
        "", description="More Host header values the API answers for, comma-separated ('name' or 'name:port'; "
        "'*' turns the check off), beyond loopback and the bound address (FLEET_API_ALLOWED_HOSTS).")

    def token(self) -> str | None:
        """The API token: FLEET_API_TOKEN, else the first line of FLEET_API_TOKEN_FILE read now (never
        cached, so a rotated or deleted file counts at once); None when neither holds one."""
        if self.api_token is not None:
            return self.api_token.get_secret_value().strip() or None
        if self.api_token_file is not None:
            try:
                lines = self.api_token_file.read_text().strip().splitlines()
            except (OSError, UnicodeDecodeError):
                return None
            return lines[0].strip() or None if lines else None
        return None
