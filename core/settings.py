"""All configuration, from the environment (prefix FOODLAB_), in one place."""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# What a worker may be told to train on (workers/device.py gives it meaning).
WORKER_DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]{1,3}")


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... ({len(text) - limit + 40} more characters)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOODLAB_", extra="ignore")

    home: Path = Field(Path("var"), description="embedded database, broker, datasets, checkpoints")
    database_url: str | None = Field(None, description="default: SQLite in FOODLAB_HOME")
    broker_url: str | None = Field(None, description="default: Celery filesystem transport")
    api_tokens: str = Field("", description="comma-separated bearer tokens; empty: no auth")
    allow_insecure: bool = Field(False, description="serve a non-loopback address with no tokens")
    datasets_root: Path | None = Field(
        None, description="server-side folders under this root may be registered as datasets"
    )
    weights_root: Path | None = Field(
        None, description="pretrained weights a job may name (by file name) live here"
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    max_unpacked_bytes: int = Field(4 * 1024 * 1024 * 1024, ge=1)
    max_archive_files: int = Field(200_000, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images are refused")
    max_image_side: int = Field(12_000, ge=1, description="wider or taller images are refused")
    max_aspect_ratio: float = Field(
        20.0, ge=1, description="longer side over shorter side; flatter images are refused"
    )
    max_request_pixels: int = Field(
        100_000_000, ge=1, description="decoded pixels per predict request, all images together"
    )
    max_concurrent_decodes: int = Field(2, ge=1, description="requests decoding images at once")
    max_predict_files: int = Field(32, ge=1)
    max_predict_bytes: int = Field(20 * 1024 * 1024, ge=1, description="per predict request")
    heartbeat_seconds: float = Field(5.0, gt=0)
    stale_after_seconds: float = Field(60.0, gt=0, description="heartbeat age that means dead")
    max_attempts: int = Field(3, ge=1, description="workers that may die on a job before it fails")
    resend_after_seconds: float = Field(
        120.0, gt=0, description="a queued job no worker took is sent to the broker again"
    )
    database_wait_seconds: float = Field(
        300.0, ge=0, description="how long a worker waits out a database outage mid-job"
    )
    checkpoint_seconds: float | None = Field(
        None,
        ge=0,
        description="least time between full resumable checkpoints (the best and the last "
        "epoch are always written); default: 30 on a GPU, 0 (every epoch) on the CPU",
    )
    worker_device: str = Field(
        "auto",
        description="auto, cpu, cuda or cuda:N (GPU N only: one GPU per worker)",
    )
    worker_queue: str | None = Field(None, description="default: gpu when CUDA is present")
    model_cache_size: int = Field(4, ge=1, description="inference bundles kept in memory")
    predict_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the CPU has native bf16 instructions"
    )
    predict_runners: int = Field(2, ge=1, description="forward passes that may run at once")

    @field_validator("home", "datasets_root", "weights_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("worker_device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not WORKER_DEVICE.fullmatch(value):
            raise ValueError("must be auto, cpu, cuda or cuda:N (N: the index of one GPU)")
        return value

    def public_text(self, text: str, limit: int = 500) -> str:
        """`text` fit for a client: the server's folders named by their setting instead of
        their absolute paths, and at most `limit` characters (a huge value is not echoed)."""
        folders = {
            str(self.home): "$FOODLAB_HOME",
            str(self.datasets_root): "$FOODLAB_DATASETS_ROOT",
            str(self.weights_root): "$FOODLAB_WEIGHTS_ROOT",
            str(SOURCE_ROOT): "<foodlab>",
            sys.prefix: "<python>",
            sys.base_prefix: "<python>",
        }
        for folder in sorted(folders, key=len, reverse=True):  # innermost first
            if folder != "None" and len(folder) > 1:
                text = text.replace(folder, folders[folder])
        return shorten(text, limit)

    @property
    def tokens(self) -> set[str]:
        return {token.strip() for token in self.api_tokens.split(",") if token.strip()}

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'foodlab.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


class SettingsError(ValueError):
    """A FOODLAB_ environment variable holds a value its setting cannot take."""


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_invalid_environment(exc)) from None


def describe_invalid_environment(exc: ValidationError) -> str:
    """One line per bad variable: its name, what is wrong, and the value it holds."""
    prefix = Settings.model_config.get("env_prefix", "")
    return "; ".join(
        f"{prefix}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']} "
        f"(got {error['input']!r})"
        for error in exc.errors()
    )
