"""Run the benchmarks: `python -m benchmarks [--latency-ms 1000] [--traces 1200]` is the fleet
throughput benchmark (benchmarks/fleet_throughput.py); `python -m benchmarks continuous [--quick]`
is issue 12's continuous-mode benchmark (benchmarks/continuous.py: listings and Langfuse
requests per trace for today's schedule and the new one, CPU per judged trace at 64 and 256 in
flight with a py-spy profile, and pacing under a provider limit and the chaos plan);
`python -m benchmarks detection [--quick]` is issue 25's detection benchmark
(benchmarks/detection.py, the same as `python -m benchmarks.detection`)."""
import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["continuous"]:
        from benchmarks.continuous import main as continuous

        continuous(sys.argv[2:])
    elif sys.argv[1:2] == ["detection"]:
        from benchmarks.detection import main as detection

        detection(sys.argv[2:])
    else:
        from benchmarks.fleet_throughput import main

        main()
