"""Rate-limit stores: ``redis`` shares limits across every thread, process and host."""
