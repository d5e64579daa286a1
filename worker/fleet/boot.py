"""The module the dramatiq CLI loads in every worker process: broker, actors, runtime.

Settings and rubrics are checked here, at start-up, so a bad configuration stops the fleet
before it takes a job. The process's Runtime (worker/runtime.py) is built here and installed
for the dramatiq actors and the read-back thread, the two that cannot be handed it: dramatiq
calls them. It gets the broker's occupancy signal, so score batches linger less in a backlog.
"""
import signal
import threading
import time
from types import FrameType

import dramatiq

from worker.fleet.broker import build_broker
from worker.fleet.confirmer import FleetConfirmer
from worker.fleet.metrics import FleetPrometheus
from worker.fleet.occupancy import occupancy_of
from worker.logs import configure_logging, register_settings_secrets
from worker.runtime import Runtime, get_runtime, set_runtime
from worker.settings import Settings

# A second SIGTERM this soon after the first is the same stop delivered twice, not "kill now".
REPEATED_SIGTERM_SECONDS = 2.0


def one_stop_per_sigterm_burst() -> bool:
    """Make a dramatiq worker process take a SIGTERM repeated within REPEATED_SIGTERM_SECONDS
    as the one stop it is, so it finishes its jobs in flight.

    honcho (and any supervisor that signals a process group: systemd's default KillMode,
    ``docker stop`` of a shell-wrapped command) sends SIGTERM to every process of the worker's
    group, and dramatiq's main process forwards it to its workers too: each worker process
    gets it twice, milliseconds apart, and dramatiq takes a second SIGTERM as "kill now". The
    in-flight jobs were then dropped at every deploy, and re-run (the judge paid again) a
    heartbeat timeout later. A SIGTERM sent later still kills at once. Returns whether the
    handler was installed (only in a dramatiq worker process's main thread)."""
    handler = signal.getsignal(signal.SIGTERM)
    if (threading.current_thread() is not threading.main_thread() or not callable(handler)
            or getattr(handler, "__module__", "") != "dramatiq.cli"):
        return False
    first: list[float] = []

    def once(signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if first and now - first[0] < REPEATED_SIGTERM_SECONDS:
            return  # the same stop, delivered again
        first[:] = [now]
        handler(signum, frame)

    signal.signal(signal.SIGTERM, once)
    return True


configure_logging()
settings = Settings.from_env()
register_settings_secrets(settings)
broker = build_broker(settings)
if settings.metrics_port:
    broker.add_middleware(FleetPrometheus())
broker.add_middleware(FleetConfirmer(get_runtime))  # the fleet reads back its own writes: no scheduler needed
dramatiq.set_broker(broker)
set_runtime(Runtime(settings, saturated=occupancy_of(broker).saturated))
one_stop_per_sigterm_burst()
