"""The boot-flow layer: scenarios, checks, power-cut sweep, narrative, reports."""
