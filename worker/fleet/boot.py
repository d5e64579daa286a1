"""The module the dramatiq CLI loads in every worker process: broker, actors, runtime.

Settings and rubrics are checked here, at start-up, so a bad configuration stops the fleet
before it takes a job.
"""
import dramatiq

from worker.fleet.broker import build_broker
from worker.fleet.metrics import FleetPrometheus
from worker.judging.runtime import Runtime, set_runtime
from worker.logs import configure_logging, register_settings_secrets
from worker.settings import Settings

configure_logging()
settings = Settings.from_env()
register_settings_secrets(settings)
broker = build_broker(settings)
if settings.metrics_port:
    broker.add_middleware(FleetPrometheus())
dramatiq.set_broker(broker)
set_runtime(Runtime(settings))
