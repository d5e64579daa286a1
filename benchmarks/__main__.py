"""Run every benchmark: `python -m benchmarks [--latency-ms 1000] [--traces 1200]`."""
from benchmarks.fleet_throughput import main

if __name__ == "__main__":
    main()
