"""Local emulators of the Langfuse and judge APIs, and the trace seed generator."""
