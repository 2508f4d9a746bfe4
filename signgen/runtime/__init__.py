"""Run-time settings that change how fast a model runs, never what it computes."""
