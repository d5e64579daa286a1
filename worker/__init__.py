"""tracejudge worker: broker and actors, judge clients, rubric engine, score write-back, CLI."""
