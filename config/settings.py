"""Every knob of the server, read from the environment and `.env` (pydantic-settings).

Names follow the work order (SAM_MODEL_TYPE, MAX_IMAGE_SIZE, ...); the store tags that the
runners load are SAM_MODEL, LAMA_MODEL and SD_MODEL. `get_settings()` is the one way to read
them; tests that change the environment call `get_settings.cache_clear()`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

SamModelType = Literal["vit_h", "vit_l", "vit_b"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=REPO_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `SAM_CHECKPOINT_PATH=` in .env means "unset", not Path("")
    )

    # --- environment --------------------------------------------------------------------
    # production: /ready stays 503 while any runner serves a tiny demo model.
    environment: Literal["development", "production"] = "development"
    debug: bool = False  # 500 responses carry the exception text (never in production)
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- models in the BentoML store (tags the runners load) -----------------------------
    # Empty means "the best entry the store holds" (see models.store.resolve_tags): real
    # weights first, the tiny demo models last.
    sam_model: str = ""
    lama_model: str = ""
    sd_model: str = ""
    sam3_model: str = ""  # SAM 3: selection by words (`text`)
    # Selection by words is optional: a missing or demo SAM 3 is reported in /ready's `notices`
    # (and `text` requests get 503) without making the server unready, since facebook/sam3 is
    # gated on the Hub. True: SAM 3 counts like the other models.
    sam3_required: bool = False

    # --- files the download/import commands use (work-order names) ----------------------
    # Downloads land in MODELS_DIR; the *_PATH settings override where an import reads from
    # (unset: where scripts/download_models.sh put the files).
    models_dir: Path = REPO_ROOT / "pretrained_models"
    sam_model_type: SamModelType = "vit_h"
    sam_checkpoint_path: Path | None = None
    lama_checkpoint_path: Path | None = None  # the big-lama folder (models/best.ckpt inside)
    lama_config_path: Path | None = None  # unset: the folder's own config.yaml
    # Still published on the Hub (runwayml's original was withdrawn in 2024).
    sd_model_id: str = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    sd_model_path: Path | None = None
    sd_variant: Literal["fp16", "full"] = "fp16"  # which weight files to download
    sam3_model_id: str = "facebook/sam3"  # gated on the Hub: accept its licence, set HF_TOKEN

    # --- compute ------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Threads each runner process gives torch/OpenVINO on the CPU; 0 = every usable core (a
    # lone request uses the whole machine; COMPUTE_LOCK keeps concurrent ones from
    # oversubscribing it).
    torch_threads: int = Field(default=0, ge=0)
    # GPUs BentoML assigns to each runner. 0 keeps every runner on the GPU(s) the server
    # sees (cuda:0 on a one-GPU host, BentoML issue 5443); 1 gives each its own GPU.
    runner_gpus: int = Field(default=0, ge=0)
    sd_fp16_on_cuda: bool = True

    # --- speed: CPU backends and the host-wide compute lock (docs/benchmarks.md) ----------
    # auto = the fastest path the host supports (OpenVINO; bf16 where the CPU has bf16
    # hardware); eager = PyTorch fp32, the reference. Ignored on CUDA (torch there).
    sam_backend: Literal["auto", "eager", "openvino"] = "auto"
    sam_precision: Literal["auto", "fp32", "bf16"] = "auto"
    lama_backend: Literal["auto", "eager", "openvino"] = "auto"
    lama_precision: Literal["auto", "fp32", "bf16"] = "auto"
    sd_backend: Literal["auto", "eager", "openvino"] = "auto"  # the SD UNet's denoising steps
    sd_precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Where converted models are cached (unset: <BENTOML_HOME>/compiled).
    compiled_models_dir: Path | None = None
    # One heavy forward at a time on this host, across the runner processes: each uses every
    # core, so running two at once only makes both slower.
    compute_lock: bool = True
    # The CPU priority (nice, 0-19) of a thread running a heavy forward (SAM's encoder, LaMa,
    # SD, SAM 3): it gives way to clicks, whose mask decoding and replies stay at the
    # default priority. 0 keeps every thread at the default.
    heavy_work_nice: int = Field(default=19, ge=0, le=19)
    # Run one dummy forward per runner at start, before it reports ready.
    warm_up: bool = True

    # --- request limits (enforced before any model runs) ----------------------------------
    max_file_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_size: int = Field(default=2048, ge=64)
    max_image_pixels: int = Field(default=40_000_000, ge=4096)
    # Decoded uploads kept by the hash of their bytes (MB of pixels), so that a click on the
    # photo sent with the previous click skips decoding it again; 0 keeps none.
    decoded_uploads_mb: int = Field(default=64, ge=0)
    max_prompt_length: int = Field(default=1000, ge=1)
    max_points: int = Field(default=32, ge=1)
    max_inference_steps: int = Field(default=100, ge=1)
    max_dilate_kernel_size: int = Field(default=200, ge=0)
    processing_timeout_s: float = Field(default=600.0, gt=0)

    # --- flow defaults (Inpaint-Anything's) -------------------------------------------------
    remove_dilate_kernel_size: int = 15
    fill_dilate_kernel_size: int = 50
    replace_dilate_kernel_size: int = 0
    default_inference_steps: int = 50
    default_guidance_scale: float = 7.5
    # LaMa on big images: margin (px) kept around the mask when inpainting a crop.
    lama_crop_margin: int = Field(default=128, ge=0)

    # --- batching ------------------------------------------------------------------------
    # 0 = auto: 4 on a GPU host, 1 (batching off) on a CPU host, where bench.py measured
    # batching to cost throughput (the cores are busy either way; batch-mates wait).
    sam_max_batch_size: int = Field(default=0, ge=0)
    lama_max_batch_size: int = Field(default=0, ge=0)
    sd_max_batch_size: int = Field(default=0, ge=0)
    sam3_max_batch_size: int = Field(default=0, ge=0)
    # BentoML refuses (503) a request whose predicted wait + run time exceeds this; batches
    # form from the observed load, not from this bound. Keep it near the processing timeout,
    # or concurrent requests on a slow model (SAM on a CPU) are shed instead of queued.
    batch_max_latency_ms: int = Field(default=600_000, ge=1)

    # --- SAM embedding cache ------------------------------------------------------------------
    embedding_cache_size: int = Field(default=32, ge=0)
    # The newest embeddings the SAM runner keeps beside its model (4 MB each), so a click on a
    # photo it has seen sends the key, not the embedding.
    runner_embeddings_kept: int = Field(default=16, ge=0)
    # SAM 3's image features kept by photo key in its runner, so a new `text` on a photo it
    # has seen runs only the text and detection heads (tens of MB each at full size).
    sam3_features_kept: int = Field(default=4, ge=0)
    # `text` selections: the longest prompt and the most instances one selection returns.
    max_text_length: int = Field(default=200, ge=1)
    max_text_instances: int = Field(default=50, ge=1)
    redis_url: str = ""
    redis_cache_ttl_s: int = Field(default=3600, ge=1)

    # --- jobs: fill, replace and remove with progress (jobs/) -------------------------------
    job_max_count: int = Field(default=64, ge=1)  # jobs kept, finished ones included
    job_ttl_s: int = Field(default=3600, ge=1)  # a finished job is forgotten after this
    job_max_running: int = Field(default=1, ge=1)  # per replica; the others wait, `queued`
    # --- jobs across replicas (jobs/, docs/jobs.md) --------------------------------------
    # Outstanding (queued or running) jobs per key, or per client address without keys;
    # over it: 429 too_many_jobs with Retry-After: RETRY_AFTER_S.
    job_max_per_key: int = Field(default=8, ge=1)
    # Encoded upload bytes held by queued and running jobs, all replicas together.
    job_max_queued_mb: int = Field(default=1024, ge=1)
    # With REDIS_URL: a job whose replica died is run again by another within 2x this many
    # seconds (streaq's idle timeout), at most JOB_MAX_TRIES times in all.
    job_reclaim_s: float = Field(default=30.0, ge=1.0)
    job_max_tries: int = Field(default=3, ge=1)
    # Signed (Standard Webhooks) calls of a job's `webhook` URL when it finishes.
    webhook_secret: str = ""  # whsec_<base64>; empty: a request naming a webhook gets 422
    webhook_allow_private: bool = False  # allow loopback and private targets (tests, LANs)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1)
    # A slow or frozen Redis costs a request at most REDIS_BUDGET_MS per call; after
    # REDIS_BREAKER_FAILURES failures in a row the breaker skips Redis for REDIS_BREAKER_OPEN_S.
    redis_budget_ms: int = Field(default=200, ge=1)
    redis_breaker_failures: int = Field(default=3, ge=1)
    redis_breaker_open_s: float = Field(default=5.0, gt=0)
    # --- bounded work ----------------------------------------------------------------------
    # Strips thinner than 1:MAX_ASPECT_RATIO are refused (SAM needs <= 2048: long side 1024,
    # short side >= 0.5 px); fill's upscaled canvas may hold at most MAX_CANVAS_PIXELS.
    max_aspect_ratio: float = Field(default=100.0, ge=1.0, le=2048.0)
    max_canvas_pixels: int = Field(default=40_000_000, ge=4096)
    # Requests holding a decoded image in the entry at once; the rest wait for a slot at most
    # ADMISSION_WAIT_S (and never past their deadline), else 503 `overloaded` with
    # Retry-After: RETRY_AFTER_S. The wait has its own bound because waiting until the deadline
    # is never refused: the slot comes from an earlier request, whose deadline is earlier, so
    # a full server would admit every waiter with no time left and answer 504 after work done
    # for nobody.
    max_concurrent_requests: int = Field(default=4, ge=1)
    admission_wait_s: float = Field(default=30.0, gt=0)
    # An upload must arrive within UPLOAD_READ_TIMEOUT_S (else 408 upload_timeout), and the
    # bodies being received at once may hold UPLOAD_RECEIVING_MB (each counts for its declared
    # Content-Length; beyond, 503 overloaded): slow senders cannot hold memory without limit.
    upload_read_timeout_s: float = Field(default=60.0, gt=0)
    upload_receiving_mb: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=5, ge=1)

    # --- HTTP -----------------------------------------------------------------------------
    # Unset: every origin in development, none in production (a browser on another site
    # cannot call the API with the user's cookies or keys until the operator names it).
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda data: [] if data.get("environment") == "production" else ["*"]
    )

    # --- production: API keys, rate limits, logs (api/auth.py, api/rate_limit.py) ----------
    # Empty: the API is open. Otherwise every /api/v1 route but health and ready needs one of
    # these keys in X-API-Key or `Authorization: Bearer`.
    api_keys: Annotated[list[str], NoDecode] = []
    # ENVIRONMENT=production without API_KEYS refuses to start (api.production) unless this
    # says the open API is on purpose (e.g. behind an authenticating proxy).
    allow_anonymous: bool = False
    metrics_require_key: bool = False  # /metrics needs a key too
    docs_require_key: bool = False  # /docs, /redoc and /openapi.json need a key too
    # Token bucket per key (per client address without keys), over Redis when REDIS_URL is
    # set. 0 = no limit. A POST to /api/v1/<route> takes RATE_LIMIT_COSTS[route] tokens (1
    # when not listed); the bucket holds CAPACITY tokens and regains REFILL_PER_S a second.
    rate_limit_capacity: int = Field(default=0, ge=0)
    rate_limit_refill_per_s: float = Field(default=1.0, gt=0)
    rate_limit_costs: dict[str, Annotated[int, Field(ge=0)]] = {"fill": 5, "replace": 5, "jobs": 5}
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line

    @model_validator(mode="after")
    def _costs_fit_the_bucket(self) -> Settings:
        too_big = {r: c for r, c in self.rate_limit_costs.items() if c > self.rate_limit_capacity}
        if self.rate_limit_capacity and too_big:
            raise ValueError(
                f"RATE_LIMIT_COSTS {too_big} exceed RATE_LIMIT_CAPACITY="
                f"{self.rate_limit_capacity}: those routes could never be called"
            )
        return self

    @field_validator("allowed_origins", "api_keys", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a JSON list (the work order's `["*"]`) or a comma-separated string."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def slot_wait_s(self) -> float:
        """How long a request waits for an admission slot: never past its deadline."""
        return min(self.admission_wait_s, self.processing_timeout_s)


@lru_cache
def get_settings() -> Settings:
    return Settings()


class ClientSettings(BaseSettings):
    """What a client of a running server reads (scripts/batch.py): INPAINT_URL and
    INPAINT_API_KEY, from the environment only (the server's .env is not the client's)."""

    model_config = SettingsConfigDict(env_prefix="INPAINT_", extra="ignore", env_ignore_empty=True)

    url: str = "http://localhost:8000"
    api_key: SecretStr | None = None
