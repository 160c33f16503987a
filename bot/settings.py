"""The one settings object, read once from the environment and `.env`."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .core.cluster import Shards

PACKAGE_ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS_DIR = PACKAGE_ROOT.parent / "corpus"


def default_db_path() -> Path:
    return Path(user_data_dir("quotebot", appauthor=False)) / "library.sqlite3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUOTEBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # The token is the one setting without the prefix: it is what every discord.py guide calls it.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    db_path: Path = Field(default_factory=default_db_path)
    # postgresql://user:password@host:port/dbname selects PostgreSQL instead of the SQLite file
    # at db_path. A SecretStr: the URL may carry a password.
    database_url: SecretStr | None = None
    # Connections each process may open to PostgreSQL (reads run side by side, writes one at a time).
    database_pool_size: int = Field(default=4, ge=1, le=100)
    corpus_dir: Path = DEFAULT_CORPUS_DIR
    command_prefix: str = "!"

    top_k: int = Field(default=3, ge=1, le=10)
    max_question_chars: int = Field(default=500, ge=10)
    max_article_bytes: int = Field(default=2_000_000, ge=1_000)
    max_articles_per_server: int = Field(default=5_000, ge=1)
    imports_per_admin_per_hour: int = Field(default=30, ge=1)
    ask_cooldown_seconds: float = Field(default=5.0, ge=0)
    ask_cooldown_rate: int = Field(default=3, ge=1)

    # Comma-separated in the environment ("123,456"), hence NoDecode instead of JSON.
    manager_role_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    answer_channel_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # The question log behind `/article gaps` and `/stats` (question text, when, answered or not;
    # only in the server where it was asked). False: nothing is stored.
    store_questions: bool = True

    fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    fetch_max_bytes: int = Field(default=2_000_000, ge=1_000)
    fetch_max_redirects: int = Field(default=3, ge=0)
    allow_private_urls: bool = False

    # Many processes (docs/deploy.md): this process runs these Discord shards out of
    # shard_count and holds only their servers' articles. Unset: one process, every server.
    shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    shard_count: int | None = Field(default=None, ge=1)

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def store_target(self) -> Path | str:
        """What the store opens: the PostgreSQL URL when one is set, else the SQLite file."""
        if self.database_url is not None:
            return self.database_url.get_secret_value().strip()
        return self.db_path

    @field_validator("manager_role_ids", "answer_channel_ids", "shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value

    @model_validator(mode="after")
    def _check_shards(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("QUOTEBOT_SHARD_IDS needs QUOTEBOT_SHARD_COUNT (the bot's total number of shards)")
        self.shards  # noqa: B018 -- raises on ids out of range
        return self

    @property
    def shards(self) -> Shards | None:
        """The shards this process runs; every shard when only the count is set."""
        if self.shard_count is None:
            return None
        return Shards.of(self.shard_ids or range(self.shard_count), self.shard_count)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
