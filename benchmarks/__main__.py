"""Run the benchmarks: `python -m benchmarks [--latency-ms 1000] [--traces 1200]` is the fleet
throughput benchmark (benchmarks/fleet_throughput.py); `python -m benchmarks <name> [args]` runs
`benchmarks/<name>.py` (the same as `python -m benchmarks.<name>`):

- `continuous [--quick]`: issue 12's continuous-mode benchmark (listings and Langfuse requests
  per trace, CPU per judged trace at 64 and 256 in flight, pacing under a provider limit);
- `detection [--quick]`: issue 25's sequential detector beside the weekly rule and a
  Langfuse-style threshold;
- `sampling_power [--quick]`: issue 27's power-aware sampling and weighted means;
- `attribution [--quick]`: issue 27's slice and change-event attribution;
- `slice_cost [--scores N]`: what attribution's slice log costs in Redis per judged trace.
"""
import importlib
import sys

NAMED = ("continuous", "detection", "sampling_power", "attribution", "slice_cost")

if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in NAMED:
        importlib.import_module(f"benchmarks.{sys.argv[1]}").main(sys.argv[2:])
    else:
        from benchmarks.fleet_throughput import main

        main()
