"""The Celery application: broker configuration and how the API sends work by task name.

The API process never imports training code: it sends `TRAIN_TASK` by name and the worker
(`workers.tasks`, listed in `include`) registers the implementation.
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

TRAIN_TASK = "foodlab.train"
QUEUES = ("gpu", "cpu")


def queue_for_device(device: str, default_queue: str = "cpu") -> str:
    """Jobs that need CUDA wait for a GPU worker; CPU jobs can run anywhere."""
    return {"cuda": "gpu", "cpu": "cpu"}.get(device, default_queue)


def celery_config(settings: Settings) -> dict[str, object]:
    config: dict[str, object] = {
        "broker_url": settings.broker,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # A training job is long: take one at a time and acknowledge only when it is done, so a
        # message whose worker died is redelivered rather than lost (see README, "Recovery").
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "task_default_queue": "cpu",
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Otherwise kombu keeps its exchange bindings in ./control of whatever cwd.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif settings.broker.startswith(("redis://", "rediss://")):
        # Unacked messages come back after this long; a job still running elsewhere is then
        # recognised by its fresh heartbeat and ignored.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


_apps: dict[tuple[str, str], Celery] = {}


def get_celery(settings: Settings) -> Celery:
    """One Celery app per broker (tests run the embedded and the Redis broker side by side)."""
    key = (settings.broker, str(settings.broker_folder))
    if key not in _apps:
        app = Celery("foodlab", include=["workers.tasks"], set_as_current=False)
        app.conf.update(celery_config(settings))
        _apps[key] = app
    return _apps[key]


def send_training(settings: Settings, job_id: int, queue: str) -> None:
    """Enqueue a job that is already committed to the database."""
    get_celery(settings).send_task(TRAIN_TASK, args=[job_id], queue=queue)
